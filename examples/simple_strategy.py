"""A small example strategy: a mean-reversion toy that trades one symbol against the simulator through Khazad.

Run it (with the system up, e.g. ``make run``)::

    python -m examples.simple_strategy --config khazad.toml
    python examples/simple_strategy.py --config khazad.toml        # the same, as a script

It is configured by ``[strategy]`` in ``khazad.toml`` (``strategy_id``, ``symbol``, ``quantity``, ``interval_s``,
``enabled``). Every ``interval_s`` it looks at the mid price and compares it with a slow moving average. When flat
it opens with a **bracket** (``place_bracket_order``): SELL above the average, BUY below, the entry a marketable
limit (the far side of the spread), a take-profit and a stop-loss :data:`BRACKET_PCT` away from the mid. The
bracket's children live at IB: they protect the position even while this process (or Khazad) is down, and one
cancels the other. It waits for the entry to finish with ``wait_for_order`` and logs the whole status history
(``PendingSubmit -> PreSubmitted -> Submitted -> Filled``); an entry that does not fill in time is cancelled with its
bracket. While it holds a position it watches the bracket (``get_group``); when neither child has closed it after
:data:`HOLD_STEPS` intervals, it cancels the bracket and closes with a market order.

Rejections are expected (a kill switch, a risk limit): the strategy logs a rejection once per reason, pauses, and
backs off exponentially (up to :data:`MAX_BACKOFF_S`). While trading is HALTED it does not send orders at all; it
wakes up at once when a ``state.trading`` change arrives, or probes again after the backoff. SIGTERM/SIGINT stop it
cleanly: it cancels its working orders and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import dataclass
from enum import StrEnum

from loguru import logger

from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, StrategyConfig
from bus.messages import OrderView, TickEvent, TradingStateEvent
from sdk import AsyncKhazadClient, OrderRejected, OrderWaitTimeout, RequestTimeout, format_history

#: Smoothing of the moving average of the mid (per tick).
EMA_ALPHA = 0.05
#: Take-profit and stop-loss distance from the mid, in percent (inside risk's default price collar of 5 %).
BRACKET_PCT = 0.5
#: Intervals a bracket may hold a position before the strategy closes it itself.
HOLD_STEPS = 2
#: Backoff after a rejection or an unreachable service: doubles from the interval up to this.
MAX_BACKOFF_S = 60.0
#: How long an order may take to finish before it is cancelled (at least this, else the interval).
MIN_DONE_TIMEOUT_S = 5.0
#: Bound for cancelling on shutdown (supervisord's stopwaitsecs is larger).
SHUTDOWN_CANCEL_TIMEOUT_S = 2.0
#: Price increment used to round limit prices.
PRICE_TICK = 0.01
#: Rejection codes that mean "trading is stopped" (not "this order was wrong").
HALT_CODES = frozenset({"halted", "risk.halted", "risk.strategy_disabled", "risk.reducing"})


class Mode(StrEnum):
    """What the strategy is doing; changes only along :data:`TRANSITIONS`."""

    STARTING = "STARTING"
    TRADING = "TRADING"
    PAUSED = "PAUSED"  # halted, rejected or services unreachable: backing off
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


TRANSITIONS: dict[Mode, frozenset[Mode]] = {
    Mode.STARTING: frozenset({Mode.TRADING, Mode.STOPPING}),
    Mode.TRADING: frozenset({Mode.PAUSED, Mode.STOPPING}),
    Mode.PAUSED: frozenset({Mode.TRADING, Mode.STOPPING}),
    Mode.STOPPING: frozenset({Mode.STOPPED}),
    Mode.STOPPED: frozenset(),
}


@dataclass
class Backoff:
    """Exponential backoff that says when to log: each distinct reason once, then quiet until it changes."""

    base_s: float
    max_s: float = MAX_BACKOFF_S
    delay_s: float = 0.0
    reason: str = ""
    repeats: int = 0

    def failure(self, reason: str) -> bool:
        """Record a failure; True when it should be logged (a new reason)."""
        self.delay_s = self.base_s if self.delay_s == 0 else min(self.max_s, self.delay_s * 2)
        new = reason != self.reason
        self.reason = reason
        self.repeats = 0 if new else self.repeats + 1
        return new

    def success(self) -> bool:
        """Reset; True if there was a failure to report as cleared."""
        had = bool(self.reason)
        self.delay_s, self.reason, self.repeats = 0.0, "", 0
        return had

    @property
    def wait_s(self) -> float:
        return max(self.base_s, self.delay_s)


def round_price(price: float) -> float:
    return round(round(price / PRICE_TICK) * PRICE_TICK, 8)


def mid_of(tick: TickEvent) -> float | None:
    if tick.bid and tick.ask and tick.bid > 0 and tick.ask > 0:
        return (tick.bid + tick.ask) / 2
    return tick.last if tick.last and tick.last > 0 else None


class SimpleStrategy:
    """The example strategy: one symbol, one order at a time, position kept within one order's quantity."""

    def __init__(self, client: AsyncKhazadClient, scfg: StrategyConfig, *, max_orders: int | None = None) -> None:
        self.client = client
        self.scfg = scfg
        self.symbol = scfg.symbol
        self.quantity = scfg.quantity
        self.max_orders = max_orders
        self.mode = Mode.STARTING
        self.ema: float | None = None
        self.position = 0.0
        self.orders_sent = 0
        self.orders_filled = 0
        self.rejections = 0
        self.backoff = Backoff(base_s=scfg.interval_s)
        #: the bracket protecting the position (its group id) and for how many steps it has held it
        self.bracket: str | None = None
        self.held_steps = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    # -- control -----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the strategy to stop (safe from a signal handler on the loop)."""
        self._stop.set()
        self._wake.set()

    def _set_mode(self, new: Mode, why: str = "") -> None:
        if new == self.mode:
            return
        if new not in TRANSITIONS[self.mode]:
            raise RuntimeError(f"strategy: illegal transition {self.mode.value} -> {new.value}")
        logger.info(
            "strategy {}: {} -> {}{}", self.client.strategy_id, self.mode.value, new.value, f" ({why})" if why else ""
        )
        self.mode = new

    def _on_trading_state(self, ev: TradingStateEvent) -> None:
        logger.info(
            "strategy {}: trading state {} for {} (epoch {}): {}",
            self.client.strategy_id,
            ev.state,
            ev.scope,
            ev.epoch,
            ev.reason,
        )
        self._wake.set()  # re-evaluate at once (a resume ends the pause without waiting out the backoff)

    def _on_tick(self, tick: TickEvent) -> None:
        mid = mid_of(tick)
        if mid is not None:
            self.ema = mid if self.ema is None else self.ema + EMA_ALPHA * (mid - self.ema)

    async def _sleep(self, seconds: float) -> None:
        """The strategy's timer: returns after ``seconds``, or at once on stop or a trading-state change."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass  # periodic timer elapsed

    # -- main loop -----------------------------------------------------------------------------------------------

    async def run(self) -> int:
        c = self.client
        c.on_tick(self._on_tick)
        c.on_trading_state(self._on_trading_state)
        first_tick = c.ticks(self.symbol)
        await self._subscribe()
        if not self._stop.is_set() and await first_tick.get(max(MIN_DONE_TIMEOUT_S, self.scfg.interval_s)) is None:
            logger.warning("strategy {}: no tick for {} yet; will retry", c.strategy_id, self.symbol)
        first_tick.close()
        logger.info(
            "strategy {}: trading {} {:g} every {:g}s", c.strategy_id, self.symbol, self.quantity, self.scfg.interval_s
        )
        if not self._stop.is_set():
            self._set_mode(Mode.TRADING)
        while not self._stop.is_set():
            if self.max_orders is not None and self.orders_sent >= self.max_orders and self.bracket is None:
                logger.info("strategy {}: sent {} orders, done", c.strategy_id, self.orders_sent)
                break
            wait = self.scfg.interval_s if self.mode == Mode.TRADING else self.backoff.wait_s
            if self.orders_sent or self.mode == Mode.PAUSED:
                await self._sleep(wait)
            if self._stop.is_set():
                break
            await self._step()
        await self._shutdown()
        return 0

    async def _subscribe(self) -> None:
        while not self._stop.is_set():
            try:
                ack = await self.client.subscribe_market_data(self.symbol)
                logger.info(
                    "strategy {}: market data for {} (conId {})", self.client.strategy_id, ack.symbol, ack.con_id
                )
                return
            except (OrderRejected, RequestTimeout) as exc:
                if self.backoff.failure(f"subscribe: {exc}"):
                    logger.warning(
                        "strategy {}: cannot subscribe to {} yet: {} (retrying with backoff)",
                        self.client.strategy_id,
                        self.symbol,
                        exc,
                    )
                await self._sleep(self.backoff.wait_s)
        self.backoff.success()

    async def _step(self) -> None:
        c = self.client
        if c.trading_state(self.symbol) == "HALTED" and self.backoff.delay_s < self.backoff.max_s:
            # The bus said HALTED: send nothing. A resume wakes us at once; once the backoff is at its maximum we
            # probe with one order anyway, in case the resume event was lost (the probe is simply rejected).
            self._pause("trading is HALTED", halted=True)
            return
        tick = c.last_ticks.get(self.symbol)
        mid = mid_of(tick) if tick is not None else None
        if tick is None or mid is None:
            self._pause(f"no market data for {self.symbol} yet")
            return
        try:
            if self.bracket is not None:
                await self._watch_bracket(self.bracket)
                final = None
            else:
                final = await self._open(self._decide(mid), mid, (tick.ask, tick.bid))
        except OrderRejected as exc:
            self.rejections += 1
            self.orders_sent += exc.order is not None  # a journalled rejection still counts as an attempt
            self._pause(f"rejected {exc.code}: {exc.reason}", halted=exc.code in HALT_CODES)
            return
        except RequestTimeout as exc:
            self._pause(f"no answer: {exc}")
            return
        if final is not None:
            self._record(final)
        if self.backoff.success():
            logger.info("strategy {}: orders accepted again", c.strategy_id)
        if self.mode == Mode.PAUSED:
            self._set_mode(Mode.TRADING, "accepted again")

    async def _open(self, side: str, mid: float, touch: tuple[float | None, float | None]) -> OrderView | None:
        """Open with a bracket: a marketable entry, a take-profit and a stop-loss at :data:`BRACKET_PCT`."""
        c = self.client
        ask, bid = touch
        far = (ask if side == "BUY" else bid) or mid
        up, down = round_price(mid * (1 + BRACKET_PCT / 100)), round_price(mid * (1 - BRACKET_PCT / 100))
        take, stop = (up, down) if side == "BUY" else (down, up)
        group = await c.place_bracket_order(self.symbol, side, self.quantity, round_price(far), take, stop)
        self.orders_sent += 1
        entry = group.orders[0]
        logger.info(
            "strategy {}: bracket {} {} {:g} {} sent: entry {} @{:g}, take-profit @{:g}, stop-loss @{:g} ({})",
            c.strategy_id,
            group.group_id,
            side,
            self.quantity,
            self.symbol,
            entry.spec.client_order_id,
            round_price(far),
            take,
            stop,
            group.status,
        )
        final = await self._finish(entry.spec.client_order_id, group_id=group.group_id)
        if final is not None and final.filled > 0:
            self.bracket, self.held_steps = group.group_id, 0
        return final

    async def _watch_bracket(self, group_id: str) -> None:
        """The position is protected at IB by the bracket: record its close, or close it after HOLD_STEPS."""
        c = self.client
        group = await c.get_group(group_id)
        self.held_steps += 1
        if group.status == "working" and self.held_steps >= HOLD_STEPS:
            logger.info("strategy {}: bracket {} held {} steps: closing", c.strategy_id, group_id, self.held_steps)
            await c.cancel_group(group_id, reason="example: held long enough")
            try:
                for child in group.orders[1:]:
                    await c.wait_for_order(child.spec.client_order_id, "done", timeout=MIN_DONE_TIMEOUT_S)
            except OrderWaitTimeout:
                return  # the cancel is on its way: look again at the next step
            group = await c.get_group(group_id)
        if group.status == "working":
            return
        self.bracket = None
        for child in group.orders[1:]:
            if child.filled > 0:
                self._record(child)
        if abs(self.position) > 0:
            side = "SELL" if self.position > 0 else "BUY"
            view = await c.place_market_order(self.symbol, side, abs(self.position))
            self.orders_sent += 1
            final = await self._finish(view.spec.client_order_id)
            if final is not None:
                self._record(final)

    def _decide(self, mid: float) -> str:
        if self.position > 0:
            return "SELL"
        if self.position < 0:
            return "BUY"
        return "SELL" if self.ema is not None and mid > self.ema else "BUY"

    async def _finish(self, coid: str, *, group_id: str | None = None) -> OrderView | None:
        """Wait for the order to be done; cancel it (with its group) if it takes too long. Returns the final view."""
        c = self.client
        timeout = max(MIN_DONE_TIMEOUT_S, self.scfg.interval_s)
        try:
            return await c.wait_for_order(coid, "done", timeout=timeout)
        except OrderWaitTimeout as exc:
            logger.info(
                "strategy {}: order {} not done after {:g}s ({}), cancelling",
                c.strategy_id,
                coid,
                timeout,
                exc.order.status if exc.order else "?",
            )
        if group_id is not None:
            await c.cancel_group(group_id, reason="example: entry not filled in time")
        else:
            await c.cancel_order(coid, reason="example: not filled in time")
        try:
            return await c.wait_for_order(coid, "done", timeout=timeout)
        except OrderWaitTimeout as exc:
            logger.warning(
                "strategy {}: order {} still not done after cancel ({})",
                c.strategy_id,
                coid,
                exc.order.status if exc.order else "?",
            )
            return exc.order

    def _record(self, view: OrderView) -> None:
        signed = view.filled if view.spec.side == "BUY" else -view.filled
        self.position += signed
        if view.status == "Filled":
            self.orders_filled += 1
        logger.info(
            "strategy {}: order {} {}: {} (filled {:g} @ {:.4f}, position {:g})",
            self.client.strategy_id,
            view.spec.client_order_id,
            view.status,
            format_history(view),
            view.filled,
            view.avg_fill_price,
            self.position,
        )

    def _pause(self, reason: str, *, halted: bool = False) -> None:
        if self.backoff.failure(reason):
            logger.warning(
                "strategy {}: pausing: {}{}; retrying in {:g}s (backing off, logged once)",
                self.client.strategy_id,
                reason,
                " - waiting for `khazad resume`" if halted else "",
                self.backoff.wait_s,
            )
        else:
            logger.debug(
                "strategy {}: still paused ({}), next try in {:g}s",
                self.client.strategy_id,
                reason,
                self.backoff.wait_s,
            )
        if self.mode == Mode.TRADING:
            self._set_mode(Mode.PAUSED, reason)

    async def _shutdown(self) -> None:
        self._set_mode(Mode.STOPPING)
        try:
            cancelled = await asyncio.wait_for(
                self.client.cancel_all_orders(reason="example strategy stopping"), SHUTDOWN_CANCEL_TIMEOUT_S
            )
            if cancelled:
                logger.info(
                    "strategy {}: cancelled {} working order(s) on stop", self.client.strategy_id, len(cancelled)
                )
        except (TimeoutError, OrderRejected, RequestTimeout) as exc:
            logger.warning("strategy {}: could not cancel working orders on stop: {!r}", self.client.strategy_id, exc)
        self._set_mode(Mode.STOPPED)
        logger.info(
            "strategy {}: stopped: {} order(s) sent, {} filled, {} rejection(s), position {:g}",
            self.client.strategy_id,
            self.orders_sent,
            self.orders_filled,
            self.rejections,
            self.position,
        )


async def run_strategy(cfg: KhazadConfig, *, max_orders: int | None = None) -> int:
    """Connect, trade until SIGTERM/SIGINT (or ``max_orders``), clean up. Returns the exit code."""
    scfg = cfg.strategy
    loop = asyncio.get_running_loop()
    async with AsyncKhazadClient(scfg.strategy_id, config=cfg) as client:
        strategy = SimpleStrategy(client, scfg, max_orders=max_orders)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, strategy.stop)
        try:
            return await strategy.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.simple_strategy", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="path to khazad.toml (default: $KHAZAD_CONFIG or ./khazad.toml)")
    parser.add_argument("--max-orders", type=int, default=None, help="stop after sending this many orders")
    args = parser.parse_args(argv)
    from bus.runtime import load_or_exit

    cfg = load_or_exit(args.config, "strategy")
    if not cfg.strategy.enabled:
        logger.info("strategy {}: disabled in [strategy] (enabled = false); exiting", cfg.strategy.strategy_id)
        return 0
    try:
        return asyncio.run(run_strategy(cfg, max_orders=args.max_orders))
    except ConfigError as exc:
        logger.critical("strategy: configuration error: {}", exc)
        return EXIT_CONFIG
    except ValueError as exc:  # e.g. a strategy_id or symbol the schema refuses
        logger.critical("strategy: invalid [strategy] settings: {}", exc)
        return EXIT_CONFIG
    except TimeoutError as exc:  # the bus proxy did not answer the ready handshake
        logger.critical("strategy: cannot reach the bus: {}", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
