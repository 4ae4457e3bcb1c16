"""Scripted load for the chaos suite: one strategy process trading through the SDK while ticks flow.

    python -m tests.chaos.load --config khazad.toml --strategy chaos_a --symbols AAPL,MSFT --out a.jsonl --seed 1

A few concurrent workers place limit orders near the market (passive ones that rest, marketable ones that fill),
market orders now and then, modify resting orders (price and quantity) and cancel them, with a fresh
``client_order_id`` for every order. A place that gets no answer is resent with the *same* client_order_id (the
documented idempotent retry), so a crash of the order manager mid-placement resumes the order instead of
doubling it.

Every request and its outcome is one JSON line in ``--out`` (flushed at once), which the chaos tests read back:

* ``{"op": "place", "ref", "coid", "attempt", "symbol", "side", "qty", "type", "limit", "result", ...}`` where
  ``result`` is ``ack`` (the order manager answered with the order; ``status``, ``reason``, ``perm_id``),
  ``rejected`` (``code``, ``reason``; ``status`` when the order was journalled), ``timeout`` or ``error``;
* ``{"op": "modify", "ref", "qty", "limit", "result", ...}`` and ``{"op": "cancel", "ref", "result", ...}``;
* ``{"op": "ready"}`` once market data flows, ``{"op": "stopped", ...}`` at the end.

SIGTERM/SIGINT: the workers finish the request in hand, every working order of the strategy is cancelled
(bounded), the client is closed and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from bus.messages import OrderUpdate, OrderView, TickEvent
from sdk import AsyncKhazadClient, OrderRejected, RequestTimeout, new_client_order_id

#: Concurrent workers per process (each has at most one request in flight).
WORKERS = 2
#: Pause between a worker's actions: a pacing timer (about 2 x 6 actions/s per process), not synchronisation.
ACTION_INTERVAL_S = 0.15
#: Resting orders kept per process at most; above it the workers cancel.
MAX_RESTING = 8
#: Attempts of one placement (same client_order_id) when the order manager does not answer.
PLACE_ATTEMPTS = 3
#: Passive orders rest this far from the touch (fraction of the price): inside the risk governor's 5 % collar.
PASSIVE_OFFSET = (0.0005, 0.004)
#: Marketable limits cross the spread by this much.
CROSS_BY = 0.02
#: Bound for cancelling every working order on stop, and for the first tick of each symbol.
STOP_CANCEL_TIMEOUT_S = 8.0
FIRST_TICK_TIMEOUT_S = 30.0
#: Request timeout per attempt for this client (the SDK retries twice with the same request id).
REQUEST_TIMEOUT_S = 2.0
PRICE_TICK = 0.01
#: Action weights: what a worker does next.
ACTIONS = (("passive", 35), ("marketable", 20), ("market", 8), ("modify", 22), ("cancel", 15))
#: Statuses the order manager answers for an order that was refused before reaching IB.
REFUSED = frozenset({"RiskRejected", "GatewayRejected"})


def round_price(price: float) -> float:
    return round(round(price / PRICE_TICK) * PRICE_TICK, 2)


def view_fields(view: OrderView | None) -> dict[str, Any]:
    if view is None:
        return {}
    return {"status": view.status, "reason": view.reason, "perm_id": view.perm_id, "ib_order_id": view.ib_order_id,
            "filled": view.filled, "is_done": view.is_done}


class Recorder:
    """One JSON line per request outcome, flushed immediately (the tests read the file while we run)."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def write(self, op: str, **fields: Any) -> None:
        self.fh.write(json.dumps({"t": time.time(), "op": op, **fields}) + "\n")
        self.fh.flush()


@dataclass
class LoadState:
    """What the workers share: resting orders (ref -> spec terms) and counters."""

    resting: dict[str, dict[str, Any]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


class ChaosLoad:
    """The load of one strategy: ``WORKERS`` concurrent workers over one SDK client."""

    def __init__(self, client: AsyncKhazadClient, symbols: list[str], rec: Recorder, rng: random.Random) -> None:
        self.client = client
        self.symbols = symbols
        self.rec = rec
        self.rng = rng
        self.state = LoadState()
        self.stop_event = asyncio.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def _on_update(self, update: OrderUpdate) -> None:
        view = update.order
        if view.is_done:
            self.state.resting.pop(view.spec.order_ref, None)

    async def run(self) -> int:
        c = self.client
        c.on_order_update(self._on_update)
        for symbol in self.symbols:
            await self._subscribe(symbol)
        if self.stop_event.is_set():
            return await self._finish()
        self.rec.write("ready", symbols=self.symbols)
        await asyncio.gather(*(self._worker(i) for i in range(WORKERS)))
        return await self._finish()

    async def _subscribe(self, symbol: str) -> None:
        ticks = self.client.ticks(symbol)
        deadline = time.monotonic() + FIRST_TICK_TIMEOUT_S
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                try:
                    await self.client.subscribe_market_data(symbol)
                except (OrderRejected, RequestTimeout) as exc:
                    logger.warning("load: subscribe {} failed: {}", symbol, exc)
                    await self._pause(0.5)  # bounded retry timer while the gateway comes up
                    continue
                if await ticks.get(FIRST_TICK_TIMEOUT_S) is not None:
                    return
        finally:
            ticks.close()

    async def _pause(self, seconds: float) -> None:
        """The workers' pacing timer; returns early when the load is stopped."""
        try:
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _worker(self, index: int) -> None:
        weights = [w for _, w in ACTIONS]
        names = [n for n, _ in ACTIONS]
        while not self.stop_event.is_set():
            action = self.rng.choices(names, weights)[0]
            free = [r for r in self.state.resting if r not in self.state.busy]
            if len(self.state.resting) >= MAX_RESTING and free:
                action = "cancel"
            elif action in ("modify", "cancel") and not free:
                action = "passive"
            try:
                if action in ("passive", "marketable", "market"):
                    await self._place(action)
                elif action == "modify":
                    await self._modify(self.rng.choice(free))
                else:
                    await self._cancel(self.rng.choice(free))
            except Exception as exc:  # the load must keep going whatever one request does; recorded for the test
                logger.opt(exception=exc).error("load: worker {} {} failed: {}", index, action, exc)
                self.rec.write("error", action=action, error=f"{type(exc).__name__}: {exc}")
            await self._pause(ACTION_INTERVAL_S)

    def _quote(self, symbol: str) -> TickEvent | None:
        tick = self.client.last_ticks.get(symbol)
        if tick is None or not tick.bid or not tick.ask or tick.bid <= 0 or tick.ask <= 0:
            return None
        return tick

    def _terms(self, kind: str, symbol: str, side: str, tick: TickEvent) -> float | None:
        if kind == "market":
            return None
        if kind == "marketable":
            return round_price(tick.ask + CROSS_BY if side == "BUY" else tick.bid - CROSS_BY)
        offset = self.rng.uniform(*PASSIVE_OFFSET)
        assert tick.bid is not None and tick.ask is not None
        return round_price(tick.bid * (1 - offset) if side == "BUY" else tick.ask * (1 + offset))

    async def _place(self, kind: str) -> None:
        symbol = self.rng.choice(self.symbols)
        tick = self._quote(symbol)
        if tick is None:
            self.state.count("no_quote")
            return
        side = self.rng.choice(("BUY", "SELL"))
        qty = float(self.rng.randint(1, 40))
        limit = self._terms(kind, symbol, side, tick)
        coid = new_client_order_id(self.client.strategy_id)
        ref = f"{self.client.strategy_id}/{coid}"
        base = {"ref": ref, "coid": coid, "symbol": symbol, "side": side, "qty": qty,
                "type": "MKT" if limit is None else "LMT", "limit": limit, "kind": kind}
        self.state.busy.add(ref)
        try:
            for attempt in range(1, PLACE_ATTEMPTS + 1):
                if attempt > 1 and self.stop_event.is_set():
                    return
                try:
                    if limit is None:
                        view = await self.client.place_market_order(symbol, side, qty, client_order_id=coid)
                    else:
                        view = await self.client.place_limit_order(symbol, side, qty, limit, client_order_id=coid)
                except OrderRejected as exc:
                    self.state.count(f"rejected:{exc.code}")
                    self.rec.write("place", **{**base, **view_fields(exc.order), "attempt": attempt,
                                               "result": "rejected", "code": exc.code, "reason": exc.reason})
                    return
                except RequestTimeout as exc:
                    self.state.count("place_timeout")
                    self.rec.write("place", attempt=attempt, result="timeout", reason=str(exc), **base)
                    continue  # the same client_order_id again: the order manager runs it at most once
                self.state.count("acked")
                self.rec.write("place", attempt=attempt, result="ack", **base, **view_fields(view))
                if kind == "passive" and not view.is_done:
                    self.state.resting[ref] = {"coid": coid, "symbol": symbol, "side": side, "qty": qty,
                                               "limit": limit}
                return
        finally:
            self.state.busy.discard(ref)

    async def _modify(self, ref: str) -> None:
        order = self.state.resting.get(ref)
        if order is None:
            return
        tick = self._quote(order["symbol"])
        if tick is None:
            return
        limit = self._terms("passive", order["symbol"], order["side"], tick)
        qty = order["qty"] + float(self.rng.randint(-order["qty"] // 2 if order["qty"] > 1 else 0, 10))
        qty = max(1.0, qty)
        base = {"ref": ref, "coid": order["coid"], "qty": qty, "limit": limit}
        self.state.busy.add(ref)
        try:
            view = await self.client.modify_order(order["coid"], quantity=qty, limit_price=limit)
        except OrderRejected as exc:
            self.state.count(f"modify_rejected:{exc.code}")
            self.rec.write("modify", result="rejected", code=exc.code, reason=exc.reason, **base)
            return
        except RequestTimeout as exc:
            self.state.count("modify_timeout")
            self.rec.write("modify", result="timeout", reason=str(exc), **base)
            return
        finally:
            self.state.busy.discard(ref)
        self.state.count("modified")
        self.rec.write("modify", result="ack", **base, **view_fields(view))
        if ref in self.state.resting:
            self.state.resting[ref].update(qty=qty, limit=limit)

    async def _cancel(self, ref: str) -> None:
        order = self.state.resting.pop(ref, None)
        if order is None:
            return
        self.state.busy.add(ref)
        try:
            view = await self.client.cancel_order(order["coid"], reason="chaos load")
        except OrderRejected as exc:
            self.state.count(f"cancel_rejected:{exc.code}")
            self.rec.write("cancel", ref=ref, result="rejected", code=exc.code, reason=exc.reason)
            return
        except RequestTimeout as exc:
            self.state.count("cancel_timeout")
            self.rec.write("cancel", ref=ref, result="timeout", reason=str(exc))
            return
        finally:
            self.state.busy.discard(ref)
        self.state.count("cancelled")
        self.rec.write("cancel", ref=ref, result="ack", **view_fields(view))

    async def _finish(self) -> int:
        try:
            cancelled = await asyncio.wait_for(self.client.cancel_all_orders(reason="chaos load stopping"),
                                               STOP_CANCEL_TIMEOUT_S)
            self.rec.write("cancel_all", result="ack", refs=[v.spec.order_ref for v in cancelled])
        except (asyncio.TimeoutError, OrderRejected, RequestTimeout) as exc:
            self.rec.write("cancel_all", result="failed", reason=f"{type(exc).__name__}: {exc}")
        self.rec.write("stopped", counts=self.state.counts)
        logger.info("load {}: stopped: {}", self.client.strategy_id, self.state.counts)
        return 0


async def run_load(args: argparse.Namespace) -> int:
    from bus.config import load_config

    cfg = load_config(args.config)
    loop = asyncio.get_running_loop()
    with open(args.out, "a") as fh:
        rec = Recorder(fh)
        client = AsyncKhazadClient(args.strategy, config=cfg, timeout_s=REQUEST_TIMEOUT_S)
        await client.start()
        try:
            load = ChaosLoad(client, args.symbols.split(","), rec, random.Random(args.seed))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, load.stop)
            return await load.run()
        finally:
            await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.load", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--strategy", required=True)
    p.add_argument("--symbols", default="AAPL,MSFT")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    return asyncio.run(run_load(args))


if __name__ == "__main__":
    sys.exit(main())
