"""Measure the simulator with a real ib_insync client.

    python -m sim.bench [--ticks-seconds 20] [--orders 200]

Runs ``python -m sim`` in a child process (so server and client do not share
one interpreter) and reports:

* sustained ticks/s to one ib_insync client: every instrument subscribed,
  the manual clock advanced in chunks with a 1 ms tick interval; each chunk
  must be fully received and decoded by the client before the next, so the
  figure is end-to-end (generate, encode, send, receive, decode);
* placeOrder -> Submitted round trip through the simulator (realtime clock),
  measured from ``placeOrder`` to ib_insync's status event.
"""

from __future__ import annotations

import argparse
import statistics
import time

#: Sim seconds per advance chunk in the tick benchmark.
CHUNK_SECONDS = 0.5
#: Tick interval for the tick benchmark (sim seconds).
BENCH_TICK_INTERVAL = 0.001
CLIENT_TIMEOUT = 30.0


def _wait(ib, predicate, timeout: float = CLIENT_TIMEOUT) -> None:
    import asyncio

    from ib_insync import util
    loop = util.getLoop()
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("benchmark client timed out")
        fut = loop.create_future()

        def wake(*_a, fut=fut):
            if not fut.done():
                fut.set_result(None)
        ib.updateEvent += wake
        try:
            loop.run_until_complete(asyncio.wait_for(fut, remaining))
        except asyncio.TimeoutError:
            pass
        finally:
            ib.updateEvent -= wake


def bench_ticks(seconds: float) -> dict:
    from ib_insync import IB, Contract

    from .testing import running_sim_process
    with running_sim_process(tick_interval=BENCH_TICK_INTERVAL, pacing_limit=0,
                             log_level="WARNING") as proc:
        ib = IB()
        ib.connect("127.0.0.1", proc.port, clientId=1, timeout=10)
        specs = [dict(symbol=s, secType="STK", exchange="SMART", currency="USD")
                 for s in ("AAPL", "MSFT", "SPY", "NVDA")]
        specs += [dict(symbol="NESN", secType="STK", exchange="SMART", currency="CHF"),
                  dict(symbol="ES", secType="FUT", exchange="CME", lastTradeDateOrContractMonth="202712"),
                  dict(symbol="EUR", secType="CASH", exchange="IDEALPRO", currency="USD"),
                  dict(symbol="USD", secType="CASH", exchange="IDEALPRO", currency="CHF")]
        contracts = [Contract(**s) for s in specs]
        ib.qualifyContracts(*contracts)
        ticks = [0]

        def on_pending(tickers):
            ticks[0] += sum(len(t.ticks) for t in tickers)
        ib.pendingTickersEvent += on_pending
        for c in contracts:
            ib.reqMktData(c)

        def server_sent() -> int:
            return proc.state()["clients"][0]["counters"]["messages_out"]

        _wait(ib, lambda: ib.client._numMsgRecv >= server_sent())
        start_msgs, start_ticks = ib.client._numMsgRecv, ticks[0]
        started = time.perf_counter()
        sim_time = 0.0
        while time.perf_counter() - started < seconds:
            proc.call("advance", seconds=CHUNK_SECONDS)
            sim_time += CHUNK_SECONDS
            target = server_sent()
            _wait(ib, lambda: ib.client._numMsgRecv >= target)
        elapsed = time.perf_counter() - started
        msgs = ib.client._numMsgRecv - start_msgs
        tick_events = ticks[0] - start_ticks
        ib.disconnect()
    return {"messages": msgs, "ticks": tick_events, "seconds": elapsed,
            "messages_per_s": msgs / elapsed, "ticks_per_s": tick_events / elapsed,
            "sim_seconds": sim_time}


def bench_orders(n: int) -> dict:
    from ib_insync import IB, LimitOrder, Stock

    from .testing import running_sim_process
    with running_sim_process(clock="realtime", pacing_limit=0, log_level="WARNING") as proc:
        ib = IB()
        # ib_insync throttles itself to 45 requests/s; that is client-side
        # queueing, not simulator latency, so switch it off for this measure
        ib.client.MaxRequests = 0
        ib.connect("127.0.0.1", proc.port, clientId=1, timeout=10)
        contract = Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(contract)
        rtts = []
        for i in range(n):
            submitted = {}
            order = LimitOrder("BUY", 1, 100.0, orderRef=f"bench-{i}")
            t0 = time.perf_counter()
            trade = ib.placeOrder(contract, order)

            def on_status(tr, t0=t0, submitted=submitted):
                if tr.orderStatus.status == "Submitted" and "t" not in submitted:
                    submitted["t"] = time.perf_counter() - t0
            trade.statusEvent += on_status
            _wait(ib, lambda: "t" in submitted)
            rtts.append(submitted["t"] * 1000)
        ib.reqGlobalCancel()
        ib.disconnect()
    rtts.sort()
    return {"orders": n, "median_ms": statistics.median(rtts),
            "p99_ms": rtts[max(0, int(len(rtts) * 0.99) - 1)], "max_ms": rtts[-1]}


#: placeOrder fields after hidden (v176, no combo legs), as ib_insync sends them
#: for a plain order: sharesAllocation .. usePriceMgmtAlgo plus the v158+ tail.
_PLACE_ORDER_TAIL = ("|0||-1|0|||0|||0|0||0||||||0|||||0|||||||||||0|||0|0|||0||0|0|0|0"
                     "|||||||0|||||||||0|0|0|0|||0").split("|")


def raw_place_order(order_id: int, con_id: int, symbol: str, action: str, quantity: float,
                    order_type: str = "LMT", lmt_price: float | None = None,
                    order_ref: str = "", sec_type: str = "STK", currency: str = "USD") -> list:
    """Fields of a minimal placeOrder at server version 176 (for raw clients)."""
    contract = [con_id, symbol, sec_type, "", 0.0, "", "", "SMART", "", currency, "", ""]
    return [3, order_id, *contract, "", "", action, quantity, order_type,
            "" if lmt_price is None else lmt_price, "", "DAY", "", "", "O", 0, order_ref, 1, 0,
            0, 0, 0, 0, 0, 0, "", 0.0, "", "", "", "", "", "", *_PLACE_ORDER_TAIL]


def bench_raw_orders(n: int) -> dict:
    """placeOrder -> Submitted with a bare socket client: the simulator's own share."""
    import socket

    from .protocol import (FrameDecoder, build_client_handshake, build_start_api, encode_frame,
                           parse_server_handshake, split_fields)
    from .testing import running_sim_process
    with running_sim_process(clock="realtime", pacing_limit=0, log_level="WARNING") as proc:
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=CLIENT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        dec = FrameDecoder(expect_prefix=False)
        pending: list[list[str]] = []

        def read() -> list[bytes]:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("simulator closed the connection")
            return dec.feed(data)

        def until(pred) -> None:
            while True:
                while pending:
                    if pred(pending.pop(0)):
                        return
                pending.extend(split_fields(p) for p in read())

        sock.sendall(build_client_handshake(157, 176))
        frames: list[bytes] = []
        while not frames:
            frames = read()
        parse_server_handshake(frames[0])
        sock.sendall(build_start_api(1))
        until(lambda m: m[0] == "9")
        rtts = []
        for i in range(1, n + 1):
            fields = raw_place_order(i, 265598, "AAPL", "BUY", 1, "LMT", 100.0, f"raw-{i}")
            t0 = time.perf_counter()
            sock.sendall(encode_frame(fields))
            until(lambda m, i=i: m[0] == "3" and m[1] == str(i) and m[2] == "Submitted")
            rtts.append((time.perf_counter() - t0) * 1000)
        sock.close()
    rtts.sort()
    return {"orders": n, "median_ms": statistics.median(rtts),
            "p99_ms": rtts[max(0, int(len(rtts) * 0.99) - 1)], "max_ms": rtts[-1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.bench")
    p.add_argument("--ticks-seconds", type=float, default=10.0)
    p.add_argument("--orders", type=int, default=200)
    args = p.parse_args(argv)
    t = bench_ticks(args.ticks_seconds)
    print(f"ticks: {t['ticks']} tick updates ({t['messages']} messages) in {t['seconds']:.1f}s "
          f"-> {t['ticks_per_s']:.0f} ticks/s, {t['messages_per_s']:.0f} messages/s "
          f"sustained to one ib_insync client")
    o = bench_orders(args.orders)
    print(f"orders (ib_insync): placeOrder -> Submitted over {o['orders']} orders: median "
          f"{o['median_ms']:.2f} ms, p99 {o['p99_ms']:.2f} ms, max {o['max_ms']:.2f} ms")
    r = bench_raw_orders(args.orders)
    print(f"orders (raw socket): placeOrder -> Submitted over {r['orders']} orders: median "
          f"{r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
