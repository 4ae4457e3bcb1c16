"""One ``CheckOrder``, start to finish: the early checks, the wait for a first price, the view of the world at one
instant, the pure checks (:mod:`actors.risk.checks`), and for an approved order the signed approval, the rate
token, the duplicate record and the pending reservation in the exposure book. Every decision is logged on one
line with its order ref, published on ``risk.decision.<strategy>``, and counted for the reject-rate breaker
unless the governor's own state caused it.

Concurrency: requests run concurrently, but a check's only await (waiting for a first tick) comes before the
checks; from building the view to recording the approval nothing yields, so two orders checked at the same time
always see each other's exposure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from loguru import logger

from actors.risk import codes
from actors.risk.checks import EARLY_CHECKS, BookView, RiskView, Verdict, evaluate
from actors.risk.limits import LimitTable
from actors.risk.mirror import GatewayMirror
from actors.risk.ports import Publish
from actors.risk.quotes import MarketDataFeed
from actors.risk.state_keeper import TradingStateKeeper
from actors.risk.throttles import DuplicateDetector, OrderRateLimiter
from bus import topics
from bus.approval import sign
from bus.config import RiskConfig
from bus.messages import Approval, CheckOrder, OrderSpec, RiskDecision, RiskDecisionEvent, TradingState

LATENCY_SAMPLES = 10_000
#: the heartbeat reports check latency percentiles over the last this many checks
HEALTH_LATENCY_SAMPLES = 1000

#: ``count(strategy, rejected)``: one decision for the reject-rate breaker
CountDecision = Callable[[str, bool], None]


class ApprovalSigner:
    """Signs an approval bound to exactly one order (HMAC, expiry, one-time id: :mod:`bus.approval`); the key
    stays in here."""

    def __init__(self, key: bytes, *, ttl_s: float) -> None:
        self._key = key
        self.ttl_s = ttl_s

    def sign(self, order: OrderSpec, *, is_modify: bool) -> Approval:
        return sign(self._key, order, ttl_s=self.ttl_s, is_modify=is_modify)


class DecisionStats:
    """Counts of decisions and the latency of recent checks (for the heartbeat and status)."""

    def __init__(self) -> None:
        self.approved = 0
        self.rejected = 0
        self.check_ns: deque[int] = deque(maxlen=LATENCY_SAMPLES)

    def record(self, approved: bool, elapsed_ns: int) -> None:
        self.check_ns.append(elapsed_ns)
        if approved:
            self.approved += 1
        else:
            self.rejected += 1

    def latency(self) -> dict[str, str]:
        """p50 and p99 of the recent checks in microseconds (nothing before the first check)."""
        detail: dict[str, str] = {}
        recent = sorted(list(self.check_ns)[-HEALTH_LATENCY_SAMPLES:])
        if recent:
            detail["check_p50_us"] = f"{recent[len(recent) // 2] / 1e3:.0f}"
            detail["check_p99_us"] = f"{recent[min(len(recent) - 1, int(len(recent) * 0.99))] / 1e3:.0f}"
        return detail


class PreTradeChecker:
    """Answers ``CheckOrder`` (see module docstring). Reads the trading states, the quotes and the gateway mirror;
    writes only the pending reservation, its own throttles and its decisions."""

    def __init__(
        self,
        risk: RiskConfig,
        limits: LimitTable,
        states: TradingStateKeeper,
        quotes: MarketDataFeed,
        gateway: GatewayMirror,
        signer: ApprovalSigner,
        publish: Publish,
        count: CountDecision,
    ) -> None:
        self._risk = risk
        self._limits = limits
        self._states = states
        self._quotes = quotes
        self._gateway = gateway
        self._signer = signer
        self._publish = publish
        self._count = count
        self.rate = OrderRateLimiter()
        self.duplicates = DuplicateDetector()
        self.stats = DecisionStats()

    async def check(self, req: CheckOrder) -> RiskDecision:
        """Run the pre-trade checks on one order; sign an approval bound to it if they pass."""
        t0 = time.perf_counter_ns()
        order = req.order
        sid, sym = order.strategy_id, order.instrument.symbol
        limits = self._limits.for_strategy(sid)
        verdict = evaluate(order, self._early_view(order), limits, self._limits.account, EARLY_CHECKS)
        if verdict.approved:
            await self._quotes.prepare(order.instrument, time.monotonic())
        approval = None
        if verdict.approved:
            # from here to the end nothing awaits: the view and the reservation are one atomic step
            now = time.monotonic()
            verdict = evaluate(order, self._view(order, now), limits, self._limits.account)
            if verdict.approved:
                approval = self._signer.sign(order, is_modify=req.is_modify)
                self.rate.take(sid, limits.max_orders_per_second, now)
                if not req.is_modify:
                    self.duplicates.record(order, limits.duplicate_window_s, now)
                self._gateway.book.add_pending(order, expires_mono=now + self._risk.pending_order_ttl_s)
        state, _ = self._states.effective(sid, sym)
        elapsed = time.perf_counter_ns() - t0
        self._after_decision(order, verdict, elapsed, req.is_modify)
        trading_state: TradingState = state
        return RiskDecision(
            approved=verdict.approved,
            code=verdict.code,
            reason=verdict.reason,
            approval=approval,
            trading_state=trading_state,
        )

    def _after_decision(self, order: OrderSpec, verdict: Verdict, elapsed_ns: int, is_modify: bool) -> None:
        what = "modify" if is_modify else "order"
        self.stats.record(verdict.approved, elapsed_ns)
        if verdict.approved:
            logger.info(
                "risk: APPROVED {} {} {} {:g} {} {}{} ({:.0f}us)",
                what,
                order.order_ref,
                order.side,
                order.quantity,
                order.instrument.symbol,
                order.order_type,
                f" @{order.limit_price:g}" if order.limit_price is not None else "",
                elapsed_ns / 1e3,
            )
        else:
            logger.info(
                "risk: REJECTED {} {} {}: {} ({:.0f}us)",
                what,
                order.order_ref,
                verdict.code,
                verdict.reason,
                elapsed_ns / 1e3,
            )
        self._publish(
            topics.risk_decision(order.strategy_id),
            RiskDecisionEvent(
                order_ref=order.order_ref,
                approved=verdict.approved,
                code=verdict.code,
                reason=verdict.reason,
                check_ns=elapsed_ns,
            ),
        )
        if verdict.code not in codes.NOT_COUNTED_FOR_REJECT_RATE:
            self._count(order.strategy_id, not verdict.approved)

    def _early_view(self, order: OrderSpec) -> RiskView:
        state, scopes = self._states.effective(order.strategy_id, order.instrument.symbol)
        return RiskView(
            ready=self._gateway.ready,
            state=state,
            state_scopes=tuple(scopes),
            disabled_reason=self._states.disabled_reason(order.strategy_id),
            restricted=self._limits.restricted(order.strategy_id),
        )

    def _view(self, order: OrderSpec, now: float) -> RiskView:
        sid, sym, ref = order.strategy_id, order.instrument.symbol, order.order_ref
        limits = self._limits.for_strategy(sid)
        state, scopes = self._states.effective(sid, sym)
        price_of = self._quotes.reference
        book = self._gateway.book
        s_buy, s_sell = book.working_qty(sym, sid, exclude=ref)
        a_buy, a_sell = book.working_qty(sym, None, exclude=ref)
        return RiskView(
            ready=self._gateway.ready,
            state=state,
            state_scopes=tuple(scopes),
            reducing_scopes=self._states.reducing(scopes),
            disabled_reason=self._states.disabled_reason(sid),
            restricted=self._limits.restricted(sid),
            ref_price=self._quotes.reference(sym),
            tick_age_s=self._quotes.age(sym, now),
            unknown_symbol_reason=self._quotes.unknown_reason(sym),
            stale_data_s=self._risk.stale_data_s,
            strategy=BookView(
                position=book.position(sym, sid),
                working_buy=s_buy,
                working_sell=s_sell,
                gross_exposure=book.gross(price_of, sid, exclude=ref),
            ),
            account=BookView(
                position=book.position(sym),
                working_buy=a_buy,
                working_sell=a_sell,
                gross_exposure=book.gross(price_of, None, exclude=ref),
            ),
            buying_power=self._gateway.account.buying_power,
            working_notional=book.working_notional(price_of, None, exclude=ref),
            rate_tokens=self.rate.tokens(sid, limits.max_orders_per_second, now),
            duplicate_of=self.duplicates.duplicate_of(order, limits.duplicate_window_s, now),
        )
