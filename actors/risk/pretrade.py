"""One ``CheckOrder``, start to finish: the early checks, the preparation (IB's contract through the gateway, a
first price, an exchange rate: one budget of ``risk.market_data_wait_s``), the view of the world at one instant,
the pure checks (:mod:`actors.risk.checks`), and for an approved order the signed approval, the rate token, the
duplicate record and the pending reservation in the exposure book. Every decision is logged on one
line with its order ref, published on ``risk.decision.<strategy>``, and counted for the reject-rate breaker
unless the governor's own state caused it.

Concurrency: requests run concurrently, but a check's only awaits (qualification, first tick, FX) come before the
checks; from building the view to recording the approval nothing yields, so two orders checked at the same time
always see each other's exposure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from loguru import logger

from actors.risk import codes
from actors.risk.checks import (
    EARLY_CHECKS,
    BookView,
    RiskView,
    Verdict,
    evaluate,
    order_notional,
    prices,
    reduces,
)
from actors.risk.fx import FxRates
from actors.risk.limits import LimitTable
from actors.risk.margin import MarginAnswer, MarginPreview
from actors.risk.mirror import GatewayMirror
from actors.risk.ports import Publish
from actors.risk.quotes import MarketDataFeed
from actors.risk.state_keeper import TradingStateKeeper
from actors.risk.throttles import DuplicateDetector, OrderRateLimiter
from bus import topics
from bus.approval import sign
from bus.config import RiskConfig
from bus.messages import Approval, CheckOrder, ContractInfo, OrderSpec, RiskDecision, RiskDecisionEvent, TradingState
from bus.sessions import Session, open_since, session_of

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
        fx: FxRates,
        gateway: GatewayMirror,
        signer: ApprovalSigner,
        publish: Publish,
        count: CountDecision,
        margin: MarginPreview | None = None,
    ) -> None:
        self._risk = risk
        self._limits = limits
        self._states = states
        self._quotes = quotes
        self._fx = fx
        self._gateway = gateway
        self._signer = signer
        self._publish = publish
        self._count = count
        self._margin = margin
        self.rate = OrderRateLimiter()
        self.duplicates = DuplicateDetector()
        self.stats = DecisionStats()

    async def check(self, req: CheckOrder) -> RiskDecision:
        """Run the pre-trade checks on one order; sign an approval bound to it if they pass."""
        t0 = time.perf_counter_ns()
        order = req.order
        sid = order.strategy_id
        limits = self._limits.for_strategy(sid)
        verdict, info = await self.prepare(order)
        approval = None
        margin = await self._margin_answer(order, info) if verdict.approved else None
        if verdict.approved:
            # from here to the end nothing awaits: the view and the reservation are one atomic step
            now = time.monotonic()
            view = self.with_margin(self._view(order, info, now), margin)
            verdict = evaluate(order, view, limits, self._limits.account)
            if verdict.approved:
                assert info is not None
                approval = self._signer.sign(order, is_modify=req.is_modify)
                self.rate.take(sid, limits.max_orders_per_second, now)
                if not req.is_modify:
                    self.duplicates.record(order, limits.duplicate_window_s, now)
                limit, stop = prices(order, view)
                price = limit if limit is not None else stop
                self._gateway.book.add_pending(
                    order, info, price=price, expires_mono=now + self._risk.pending_order_ttl_s
                )
        state, _ = self._effective(order, info)
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

    async def _margin_answer(self, order: OrderSpec, info: ContractInfo | None) -> MarginAnswer | None:
        """IB's what-if for an order the margin check covers (at least ``risk.margin_check_notional``, not only
        reducing the account's position); None for the others."""
        threshold = self._risk.margin_check_notional
        if self._margin is None or threshold <= 0 or info is None:
            return None
        view = self._view(order, info, time.monotonic())
        notional = order_notional(order, view)
        if notional is None or notional < threshold or reduces(view.account, order):
            return None
        return await self._margin.preview(order, info.con_id)

    async def margin(self, order: OrderSpec, info: ContractInfo | None) -> MarginAnswer | None:
        """IB's what-if for an order the margin check covers (see ``_margin_answer``): for a group's members."""
        return await self._margin_answer(order, info)

    def with_margin(self, view: RiskView, margin: MarginAnswer | None) -> RiskView:
        """``view`` with IB's what-if answer for the order (unchanged without one)."""
        if margin is None:
            return view
        return replace(
            view,
            margin_checked=True,
            margin_excess_after=margin.excess_after,
            margin_problem=margin.problem,
            margin_floor=self._risk.margin_floor,
        )

    @property
    def limits(self) -> LimitTable:
        return self._limits

    async def prepare(self, order: OrderSpec) -> tuple[Verdict, ContractInfo | None]:
        """The early checks, then IB's contract, a first price and an exchange rate (the only awaits of a check):
        (the early verdict, the contract's details or None)."""
        limits = self._limits.for_strategy(order.strategy_id)
        verdict = evaluate(order, self._early_view(order), limits, self._limits.account, EARLY_CHECKS)
        con_id: int | None = None
        if verdict.approved:
            deadline = time.monotonic() + self._risk.market_data_wait_s
            con_id = await self._quotes.prepare(order.instrument, deadline)
            info = self._quotes.info(con_id) if con_id is not None else None
            if info is not None:
                await self._fx.prepare(info.instrument.currency, deadline)
        return verdict, self._quotes.info(con_id) if con_id is not None else None

    def view(self, order: OrderSpec, info: ContractInfo | None, now: float) -> RiskView:
        """The world as it concerns ``order`` at this instant (see :meth:`check`: nothing may await between this
        and recording an approval)."""
        return self._view(order, info, now)

    def effective_state(self, order: OrderSpec, info: ContractInfo | None) -> TradingState:
        return self._effective(order, info)[0]

    def after_decision(self, order: OrderSpec, verdict: Verdict, elapsed_ns: int) -> None:
        """Log, publish and count one decision (a group's members each get theirs)."""
        self._after_decision(order, verdict, elapsed_ns, False)

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
                order.instrument.display,
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

    def _effective(self, order: OrderSpec, info: ContractInfo | None) -> tuple[TradingState, list[str]]:
        """The trading state governing the order: IB's symbol and conId once the contract is known."""
        if info is None:
            return self._states.effective(order.strategy_id, order.instrument.symbol)
        return self._states.effective(order.strategy_id, info.instrument.symbol, info.con_id)

    def _early_view(self, order: OrderSpec) -> RiskView:
        state, scopes = self._effective(order, None)
        return RiskView(
            ready=self._gateway.ready,
            state=state,
            state_scopes=tuple(scopes),
            disabled_reason=self._states.disabled_reason(order.strategy_id),
            restricted=self._limits.restricted(order.strategy_id),
        )

    def _view(self, order: OrderSpec, info: ContractInfo | None, now: float) -> RiskView:
        sid, ref = order.strategy_id, order.order_ref
        limits = self._limits.for_strategy(sid)
        state, scopes = self._effective(order, info)
        common = dict(
            ready=self._gateway.ready,
            state=state,
            state_scopes=tuple(scopes),
            reducing_scopes=self._states.reducing(scopes),
            disabled_reason=self._states.disabled_reason(sid),
            restricted=self._limits.restricted(sid),
            stale_data_s=self._risk.stale_data_s,
            base_currency=self._fx.base,
        )
        if info is None:
            refusal = self._quotes.contracts.last_refusal(order.instrument)
            return RiskView(
                **common,  # type: ignore[arg-type]
                contract_refusal=(refusal.code, refusal.reason) if refusal is not None else None,
            )
        con_id = info.con_id
        inst = info.instrument
        book = self._gateway.book
        valuer = self._fx
        wall = time.time()
        age = self._quotes.age(con_id, now)
        since = open_since(info, wall)
        if age is not None and since is not None:
            age = min(age, since)  # data cannot be staler than the session it belongs to
        s_buy, s_sell = book.working_qty(con_id, sid, exclude=ref)
        a_buy, a_sell = book.working_qty(con_id, None, exclude=ref)
        return RiskView(
            **common,  # type: ignore[arg-type]
            names=frozenset({inst.symbol.upper(), inst.local_symbol.upper()} - {""}),
            contract=info,
            ref_price=self._quotes.reference(con_id),
            tick_age_s=age,
            delayed_data=self._quotes.delayed(con_id),
            delayed_policy=self._risk.delayed_data,
            in_session=session_of(info, wall) is not Session.CLOSED,
            fx_rate=self._fx.rate(inst.currency),
            strategy=BookView(
                position=book.position(con_id, sid),
                working_buy=s_buy,
                working_sell=s_sell,
                gross_exposure=book.gross(valuer, sid, exclude=ref),
            ),
            account=BookView(
                position=book.position(con_id),
                working_buy=a_buy,
                working_sell=a_sell,
                gross_exposure=book.gross(valuer, None, exclude=ref),
            ),
            buying_power=self._gateway.account.buying_power,
            working_notional=book.working_notional(valuer, None, exclude=ref),
            rate_tokens=self.rate.tokens(sid, limits.max_orders_per_second, now),
            duplicate_of=self.duplicates.duplicate_of(order, limits.duplicate_window_s, now),
        )
