"""Control API: drive the simulator from tests, scripts and the CLI.

The same commands are available three ways:

* in-process: ``await ControlAPI(server).call("advance", seconds=1)``;
* thread-safe from tests: ``sim.testing.SimHandle`` (``sim.advance(1)``);
* over HTTP/1.1 JSON on ``control_port`` (127.0.0.1 by default):
  ``POST /v1/<command>`` with a JSON object body, ``GET /v1/state``; the
  reply is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``.
  ``python -m sim ctl --control-port N <command> key=value ...`` wraps it.
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
from dataclasses import replace
from typing import Any, Awaitable, Callable

from loguru import logger

from .broker import MARKET_HOURS_MODES
from .notices import notice_text
from .validation import TIFS

#: Largest control request body accepted.
MAX_BODY = 1 << 20
#: Seconds a control HTTP client may take to send its request.
REQUEST_READ_TIMEOUT = 10.0
DEFAULT_CLIENT_TIMEOUT = 10.0


class ControlError(Exception):
    """A control command failed (bad arguments, unknown command, ...)."""


class ControlAPI:
    """The control commands, bound to one running ``SimServer``."""

    def __init__(self, server) -> None:
        self.server = server
        self.commands: dict[str, Callable[..., Awaitable[Any]]] = {
            name[len("cmd_"):]: getattr(self, name)
            for name in dir(self) if name.startswith("cmd_")}

    def describe(self) -> dict[str, str]:
        return {name: str(inspect.signature(fn)) for name, fn in sorted(self.commands.items())}

    async def call(self, command: str, **args: Any) -> Any:
        fn = self.commands.get(command)
        if fn is None:
            raise ControlError(f"unknown command {command!r}; known: {', '.join(sorted(self.commands))}")
        try:
            inspect.signature(fn).bind(**args)
        except TypeError as exc:
            raise ControlError(f"{command}: {exc}") from None
        try:
            result = await fn(**args)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ControlError(f"{command}: {exc}") from None
        if command != "state":
            logger.info("sim control {} {}", command, args)
        self.server.notify()
        return result

    # -- commands (cmd_<name>) ---------------------------------------------------

    async def cmd_state(self, log_since: int = 0) -> dict:
        """Ground truth: orders, executions, positions, account, clients, request log.

        ``log_since``: only request-log entries with a larger ``seq``.
        """
        return self.server.snapshot(log_since=int(log_since))

    async def cmd_commands(self) -> dict:
        """The available commands and their arguments."""
        return self.describe()

    async def cmd_drop_connections(self, reason: str = "daily restart") -> dict:
        """Close every client connection (IB Gateway's daily restart)."""
        return {"dropped": self.server.drop_connections(reason)}

    async def cmd_refuse_connections(self, seconds: float | None = None) -> dict:
        """Stop listening for ``seconds`` of sim time (None: until accept_connections)."""
        await self.server.refuse_connections(None if seconds is None else float(seconds))
        return {"refusing": True, "seconds": seconds}

    async def cmd_accept_connections(self) -> dict:
        await self.server.accept_connections()
        return {"refusing": False, "port": self.server.port}

    async def cmd_daily_restart(self, seconds: float = 60.0) -> dict:
        """Drop every connection and refuse new ones for ``seconds`` of sim time."""
        dropped = self.server.drop_connections("daily restart")
        await self.server.refuse_connections(float(seconds))
        return {"dropped": dropped, "refusing_for": seconds}

    async def cmd_connectivity(self, codes: list[int] | None = None, interval: float = 1.0,
                               lost_for: float | None = None, restore: int = 1102) -> dict:
        """Emit 1100 (and ``restore`` after ``lost_for``) or an explicit code sequence."""
        if restore not in (1101, 1102):
            raise ValueError("restore must be 1101 or 1102")
        emitted = self.server.connectivity(codes=codes, interval=float(interval),
                                           lost_for=None if lost_for is None else float(lost_for),
                                           restore=int(restore))
        return {"codes": emitted}

    async def cmd_reject_next_orders(self, n: int = 1, code: int = 201,
                                     reason: str | dict | None = None) -> dict:
        """Reject the next ``n`` new orders with ``code`` and a JSON reason."""
        self.server.broker.faults.add_rejections(int(n), int(code), reason)
        return {"pending_rejections": len(self.server.broker.faults.rejections)}

    async def cmd_reject_next_amendments(self, n: int = 1, code: int = 110,
                                         message: str = "The price does not conform to the minimum price "
                                                        "variation for this contract.") -> dict:
        """Refuse the next ``n`` amendments of working orders with ``code`` and IB's ``message``."""
        self.server.broker.faults.add_amend_rejections(int(n), int(code), str(message))
        return {"pending_amend_rejections": len(self.server.broker.faults.amend_rejections)}

    async def cmd_ack_delay(self, seconds: float = 0.0) -> dict:
        """Hold every message of new orders for ``seconds`` of sim time after placement."""
        if float(seconds) < 0:
            raise ValueError("seconds must be >= 0")
        self.server.broker.faults.ack_delay = float(seconds)
        return {"ack_delay": float(seconds)}

    async def cmd_drop_acks(self, n: int = 1) -> dict:
        """Swallow the acknowledgements (PreSubmitted/Submitted) of the next ``n`` orders."""
        self.server.broker.faults.drop_acks = int(n)
        return {"drop_acks": int(n)}

    async def cmd_sticky_presubmitted(self, n: int | None = None,
                                      fraction: float | None = None) -> dict:
        """Next ``n`` orders (or a seeded ``fraction``) stay PreSubmitted and ignore reqGlobalCancel."""
        faults = self.server.broker.faults
        if n is not None:
            faults.sticky_count = int(n)
        if fraction is not None:
            if not 0.0 <= float(fraction) <= 1.0:
                raise ValueError("fraction must be within 0..1")
            faults.sticky_fraction = float(fraction)
        return {"sticky_presubmitted": faults.sticky_count, "fraction": faults.sticky_fraction}

    async def cmd_correct_execution(self, exec_id: str = "last", price: float | None = None,
                                    shares: float | None = None) -> dict:
        """Re-send an execution with the next suffix (.01 -> .02) and changed price/shares."""
        e = self.server.broker.correct_execution(exec_id, price, shares)
        return e.snapshot()

    async def cmd_pacing_limit(self, n: int = 50) -> dict:
        """Messages per second per client before error 100 and a disconnect (0 disables)."""
        if int(n) < 0:
            raise ValueError("n must be >= 0")
        self.server.pacing_limit = int(n)
        return {"pacing_limit": int(n)}

    async def cmd_market_data(self, state: str, symbols: list[str] | None = None) -> dict:
        """Real-time market-data subscriptions: realtime | 10089 | 354 | 10090 | none,
        for the whole account or for some (local) symbols (see sim.entitlements)."""
        universe = self.server.universe
        con_ids = None if symbols is None else [universe.by_symbol(s).con_id for s in symbols]
        self.server.entitlements.set(state, con_ids)
        return self.server.entitlements.snapshot()

    async def cmd_history_pacing(self, mode: str) -> dict:
        """IB's historical-data pacing: all | small (bars <= 30 s, like IB) | off."""
        self.server.history_pacing.set_mode(mode)
        return self.server.history_pacing.snapshot()

    async def cmd_set_price(self, symbol: str, bid: float | None = None,
                            ask: float | None = None, last: float | None = None) -> dict:
        """Move an instrument's quote now; ticks go out and orders match immediately."""
        server = self.server
        inst = server.universe.by_symbol(symbol)
        changes = server.broker.market.set_price(
            inst, server.clock.now(), None if bid is None else float(bid),
            None if ask is None else float(ask), None if last is None else float(last))
        server.market_ticks(inst, changes)
        if not server.broker.faults.connectivity_lost:
            server.broker.match(inst)
        return server.broker.market.quote(inst.con_id).as_dict()

    async def cmd_fill(self, perm_id: int, quantity: float | None = None,
                       price: float | None = None) -> dict:
        """Fill a working order now (default: all of it at the current touch)."""
        e = self.server.broker.force_fill(int(perm_id), quantity, price)
        return e.snapshot()

    async def cmd_advance(self, seconds: float) -> dict:
        """Manual clock: step ``seconds`` of sim time (ticks, matching, timers)."""
        ran = self.server.scheduler.advance(float(seconds))
        return {"time": self.server.clock.now(), "callbacks": ran}

    async def cmd_market_hours(self, mode: str) -> dict:
        """always | exchange | closed | overnight."""
        if mode not in MARKET_HOURS_MODES:
            raise ValueError(f"mode must be one of {MARKET_HOURS_MODES}")
        self.server.broker.set_market_hours(mode)
        return {"market_hours": mode}

    async def cmd_order_notice(self, perm_id: int, code: int, message: str | None = None) -> dict:
        """Send error ``code`` (default text from IB's list) for an order's id to its client; the order is unchanged."""
        broker = self.server.broker
        order = broker.orders.get(int(perm_id))
        if order is None:
            raise KeyError(f"no order with permId {perm_id}")
        text = notice_text(int(code)) if message is None else str(message)
        broker.error(order.client_id, order.order_id, int(code), text, "", order)
        return {"permId": order.perm_id, "clientId": order.client_id, "orderId": order.order_id,
                "code": int(code), "message": text}

    async def cmd_manual_order(self, symbol: str, action: str, quantity: float, order_type: str = "LMT",
                               lmt_price: float | None = None, aux_price: float | None = None,
                               tif: str = "DAY", order_ref: str = "", outside_rth: bool = False) -> dict:
        """An order typed into TWS by hand (orderId 0 until client 0 binds it)."""
        broker = self.server.broker
        inst = self.server.universe.by_symbol(symbol)
        order = broker.entry.manual_order(
            inst, action, float(quantity), order_type, None if lmt_price is None else float(lmt_price),
            None if aux_price is None else float(aux_price), tif, order_ref, bool(outside_rth))
        return order.snapshot()

    async def cmd_cancel(self, perm_id: int) -> dict:
        """Cancel an open order from TWS (any client's, or a manual one)."""
        broker = self.server.broker
        order = broker.orders.get(int(perm_id))
        if order is None:
            raise KeyError(f"no order with permId {perm_id}")
        if not order.is_open:
            raise ValueError(f"order {perm_id} is {order.status}")
        broker.cancel(order, "cancelled in TWS")
        return order.snapshot()

    async def cmd_precautions(self, price_cap_pct: float | None = None, percentage: float | None = None,
                              size_limit: float | None = None, value_limit: float | None = None) -> dict:
        """Change the precautionary checks (None keeps a value; 0 switches a check off)."""
        broker = self.server.broker
        changes = {k: float(v) for k, v in dict(price_cap_pct=price_cap_pct, percentage=percentage,
                                                size_limit=size_limit, value_limit=value_limit).items()
                   if v is not None}
        broker.precautions = replace(broker.precautions, **changes)
        return dict(broker.precautions.__dict__)

    async def cmd_tif_preset(self, tif: str = "") -> dict:
        """TIF given to orders sent without one, announced with 10349 ("" = no preset notice)."""
        tif = str(tif).upper()
        if tif and tif not in TIFS:
            raise ValueError(f"tif must be empty or one of {TIFS}")
        self.server.broker.tif_preset = tif
        return {"tif_preset": tif}

    async def cmd_status(self) -> dict:
        """How this simulator runs: latency profile, market hours, clock, seed, ports."""
        server = self.server
        return {"latency": server.broker.latency.profile, "market_hours": server.broker.market_hours,
                "clock": server.clock.mode, "seed": server.config.seed, "port": server.port,
                "control_port": server.control_port, "account": server.config.account,
                "base_currency": server.config.base_currency,
                "precautions": dict(server.broker.precautions.__dict__),
                "tif_preset": server.broker.tif_preset}

    async def cmd_clear_faults(self) -> dict:
        """Forget pending order faults (rejections, ack delay/drops, sticky orders)."""
        self.server.broker.faults.clear_order_faults()
        return self.server.broker.faults.snapshot()

    async def cmd_reset(self) -> dict:
        """Drop connections and start over: fresh market, account, orders and faults."""
        server = self.server
        dropped = server.drop_connections("reset")
        server.broker.stop()
        server.scheduler.clear()  # pending connectivity sequences, delayed acks, ...
        server.broker.reset_state()
        server.pacing_limit = server.config.pacing_limit
        server.history_pacing.reset()
        server.entitlements.set(server.config.market_data)
        server.broker.start()
        if server.replayer is not None:
            server.replayer.start()
        server.request_log.clear()
        if not server.listening:
            await server.accept_connections()
        return {"dropped": dropped}


class ControlHTTPServer:
    """Minimal asyncio HTTP/1.1 JSON server for the control API."""

    def __init__(self, server, host: str, port: int) -> None:
        self.api = ControlAPI(server)
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            status, body = await asyncio.wait_for(self._serve(reader), REQUEST_READ_TIMEOUT)
        except asyncio.TimeoutError:
            status, body = 408, {"ok": False, "error": "request timeout"}
        except Exception as exc:  # pragma: no cover - defensive
            logger.exception("sim control request failed")
            status, body = 500, {"ok": False, "error": str(exc)}
        try:
            data = json.dumps(body, default=str).encode()
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                      408: "Request Timeout", 413: "Payload Too Large"}.get(status, "Error")
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader) -> tuple[int, dict]:
        request_line = (await reader.readline()).decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) != 3:
            return 400, {"ok": False, "error": "bad request line"}
        method, path, _ = parts
        length = 0
        while True:
            line = (await reader.readline()).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return 400, {"ok": False, "error": "bad Content-Length"}
        if length > MAX_BODY:
            return 413, {"ok": False, "error": "body too large"}
        raw = await reader.readexactly(length) if length else b""
        if not path.startswith("/v1/"):
            return 404, {"ok": False, "error": f"unknown path {path}"}
        command = path[len("/v1/"):].strip("/")
        if method == "GET" and command not in ("state", "commands", "status"):
            return 405, {"ok": False, "error": "use POST for commands"}
        if method not in ("GET", "POST"):
            return 405, {"ok": False, "error": f"method {method} not allowed"}
        try:
            args = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return 400, {"ok": False, "error": f"body is not JSON: {exc}"}
        if not isinstance(args, dict):
            return 400, {"ok": False, "error": "body must be a JSON object"}
        if command not in self.api.commands:
            return 404, {"ok": False, "error": f"unknown command {command!r}"}
        try:
            result = await self.api.call(command, **args)
        except ControlError as exc:
            return 400, {"ok": False, "error": str(exc)}
        return 200, {"ok": True, "result": result}


def control_request(port: int, command: str, args: dict | None = None, *,
                    host: str = "127.0.0.1", timeout: float = DEFAULT_CLIENT_TIMEOUT) -> Any:
    """Call a control command over HTTP; returns its result or raises ControlError."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        body = json.dumps(args or {}).encode()
        if command == "state" and not args:
            conn.request("GET", "/v1/state")
        else:
            conn.request("POST", f"/v1/{command}", body=body,
                         headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = json.loads(resp.read() or b"{}")
    except (OSError, json.JSONDecodeError) as exc:
        raise ControlError(f"control API on {host}:{port} unreachable: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200 or not payload.get("ok"):
        raise ControlError(payload.get("error") or f"HTTP {resp.status}")
    return payload.get("result")
