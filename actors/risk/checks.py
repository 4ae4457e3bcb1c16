"""The pre-trade checks: pure functions of one order, a :class:`RiskView` (what the governor knows that matters
for this order, taken at one instant) and the limits. No I/O, no clock, no state: the governor builds the view,
:func:`evaluate` answers, the governor records an approval.

Order of the checks (the first failure is the answer): trading state, disabled strategy, restricted symbol,
market data, quantity, notional, price collar, REDUCING admission, duplicate, order rate, position, gross
exposure, buying power. Each rejection has a code from :mod:`actors.risk.codes` and a reason for humans.

Position, gross exposure and buying power are checked on two books: the strategy's own (with its effective
limits, i.e. ``[risk.strategies.<id>]`` over ``[risk.limits]``) and the account's (with the global
``[risk.limits]``). An order that *reduces* the exposure of a book never fails that book's position, exposure
or buying-power check: closing risk must stay possible when a limit is already exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.risk import codes
from bus.config import RiskLimits
from bus.messages import OrderSpec

EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Verdict:
    code: str
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.code == codes.APPROVED


OK = Verdict(codes.APPROVED, "approved")


@dataclass(frozen=True, slots=True)
class BookView:
    """One book (a strategy's or the account's) as it concerns one order, that order excluded."""

    position: float = 0.0
    working_buy: float = 0.0
    working_sell: float = 0.0
    gross_exposure: float = 0.0


@dataclass(frozen=True, slots=True)
class RiskView:
    """Everything the checks need about the world at one instant."""

    ready: bool = True
    state: str = "ACTIVE"
    #: the scopes (``all``, ``strategy:<id>``, ``symbol:<sym>``) that are not ACTIVE for this order
    state_scopes: tuple[str, ...] = ()
    reducing_scopes: tuple[str, ...] = ()
    disabled_reason: str | None = None
    restricted: frozenset[str] = frozenset()
    ref_price: float | None = None
    tick_age_s: float | None = None
    #: the gateway does not know the symbol (its answer to the market-data subscription)
    unknown_symbol_reason: str | None = None
    stale_data_s: float = 30.0
    strategy: BookView = BookView()
    account: BookView = BookView()
    buying_power: float | None = None
    #: notional of the account's working orders (this one excluded): committed buying power
    working_notional: float = 0.0
    rate_tokens: float = 1.0
    duplicate_of: str | None = None


def multiplier(order: OrderSpec) -> float:
    try:
        m = float(order.instrument.multiplier) if order.instrument.multiplier else 1.0
    except ValueError:
        return 1.0
    return m if m > 0 else 1.0


def order_notional(order: OrderSpec, ref_price: float | None) -> float | None:
    """Quantity x the price it would trade at (its limit, else its stop, else the market) x multiplier."""
    price = order.limit_price if order.limit_price is not None else order.stop_price
    if price is None:
        price = ref_price
    if price is None:
        return None
    return order.quantity * price * multiplier(order)


def reduces(book: BookView, order: OrderSpec) -> bool:
    """True when the order can only bring the book's position towards flat: opposite side to the position and,
    with every working order on the same side filled too, never past zero (a flip counts as opening)."""
    q = order.quantity
    if order.side == "SELL":
        return book.position > EPSILON and book.position - book.working_sell - q >= -EPSILON
    return book.position < -EPSILON and book.position + book.working_buy + q <= EPSILON


def _side_projection(book: BookView, order: OrderSpec) -> float:
    """Worst-case position if this order and every working order on its side fill."""
    if order.side == "BUY":
        return book.position + book.working_buy + order.quantity
    return book.position - book.working_sell - order.quantity


# -- the checks, each: (order, view, limits, account_limits) -> Verdict | None -----------------------------------


def check_ready(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if not view.ready:
        return Verdict(codes.NOT_READY, "no account/position snapshot from the gateway yet")
    return None


def check_state(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if view.state == "HALTED":
        return Verdict(codes.HALTED, f"trading is HALTED for {', '.join(view.state_scopes) or 'all'}")
    return None


def check_disabled(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if view.disabled_reason is not None:
        return Verdict(
            codes.STRATEGY_DISABLED,
            f"strategy {order.strategy_id} is disabled ({view.disabled_reason}); EnableStrategy to re-enable",
        )
    return None


def check_restricted(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if order.instrument.symbol.upper() in view.restricted:
        return Verdict(codes.RESTRICTED, f"{order.instrument.symbol} is a restricted symbol")
    return None


def check_market_data(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    sym = order.instrument.symbol
    if view.unknown_symbol_reason is not None:
        return Verdict(codes.UNKNOWN_SYMBOL, f"{sym}: {view.unknown_symbol_reason}")
    if view.ref_price is None or view.tick_age_s is None:
        return Verdict(codes.NO_MARKET_DATA, f"no market data for {sym}: cannot collar or value the order")
    if view.tick_age_s > view.stale_data_s:
        return Verdict(
            codes.STALE_MARKET_DATA,
            f"market data for {sym} is {view.tick_age_s:.1f}s old (risk.stale_data_s = {view.stale_data_s:g})",
        )
    return None


def check_quantity(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if order.quantity > limits.max_order_quantity + EPSILON:
        return Verdict(
            codes.MAX_QUANTITY, f"quantity {order.quantity:g} > max_order_quantity {limits.max_order_quantity:g}"
        )
    return None


def check_notional(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    notional = order_notional(order, view.ref_price)
    if notional is not None and notional > limits.max_order_notional + EPSILON:
        return Verdict(
            codes.MAX_NOTIONAL, f"notional {notional:,.2f} > max_order_notional {limits.max_order_notional:,.2f}"
        )
    return None


def check_collar(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    ref = view.ref_price
    if ref is None:
        return None
    for name, price in (("limit", order.limit_price), ("stop", order.stop_price)):
        if price is None:
            continue
        off_pct = abs(price - ref) / ref * 100.0
        if off_pct > limits.price_collar_pct + EPSILON:
            return Verdict(
                codes.PRICE_COLLAR,
                f"{name} price {price:g} is {off_pct:.2f}% from the market {ref:g} "
                f"(price_collar_pct {limits.price_collar_pct:g})",
            )
    return None


def check_reducing(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    for scope in view.reducing_scopes:
        book = view.strategy if scope == f"strategy:{order.strategy_id}" else view.account
        if not reduces(book, order):
            whose = "strategy" if book is view.strategy else "account"
            return Verdict(
                codes.REDUCING,
                f"{scope} is REDUCING and this order does not reduce the {whose} exposure "
                f"(position {book.position:g}, working buy {book.working_buy:g} / sell {book.working_sell:g})",
            )
    return None


def check_duplicate(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if view.duplicate_of is not None:
        return Verdict(codes.DUPLICATE, f"same order as {view.duplicate_of} within {limits.duplicate_window_s:g}s")
    return None


def check_rate(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if view.rate_tokens < 1.0:
        return Verdict(
            codes.ORDER_RATE,
            f"strategy {order.strategy_id} exceeds max_orders_per_second {limits.max_orders_per_second:g}",
        )
    return None


def check_position(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    for whose, book, lim in (("strategy", view.strategy, limits), ("account", view.account, acct)):
        if reduces(book, order):
            continue
        projected = _side_projection(book, order)
        if abs(projected) > lim.max_position + EPSILON and abs(projected) > abs(book.position) - EPSILON:
            return Verdict(
                codes.MAX_POSITION,
                f"{whose} position in {order.instrument.symbol} could reach {projected:g} "
                f"(position {book.position:g} + working + this order) > max_position {lim.max_position:g}",
            )
    return None


def check_gross(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    notional = order_notional(order, view.ref_price) or 0.0
    for whose, book, lim in (("strategy", view.strategy, limits), ("account", view.account, acct)):
        if reduces(book, order):
            continue
        projected = book.gross_exposure + notional
        if projected > lim.max_gross_exposure + EPSILON:
            return Verdict(
                codes.MAX_GROSS_EXPOSURE,
                f"{whose} gross exposure would be {projected:,.2f} (positions + working orders + this "
                f"order) > max_gross_exposure {lim.max_gross_exposure:,.2f}",
            )
    return None


def check_buying_power(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    ratio = limits.min_buying_power_ratio
    if ratio <= 0 or reduces(view.account, order):
        return None
    if view.buying_power is None:
        return Verdict(codes.BUYING_POWER, "the account reports no BuyingPower/AvailableFunds yet")
    required = (order_notional(order, view.ref_price) or 0.0) * ratio
    available = view.buying_power - view.working_notional * ratio
    if required > available + EPSILON:
        return Verdict(
            codes.BUYING_POWER,
            f"needs {required:,.2f} of buying power (notional x min_buying_power_ratio {ratio:g}), "
            f"{available:,.2f} available after working orders",
        )
    return None


CHECKS = (
    check_ready,
    check_state,
    check_disabled,
    check_restricted,
    check_market_data,
    check_quantity,
    check_notional,
    check_collar,
    check_reducing,
    check_duplicate,
    check_rate,
    check_position,
    check_gross,
    check_buying_power,
)

#: The checks that do not need market data or exposure: run before the governor waits for a first tick.
EARLY_CHECKS = (check_ready, check_state, check_disabled, check_restricted, check_quantity)


def evaluate(
    order: OrderSpec, view: RiskView, limits: RiskLimits, account_limits: RiskLimits, checks: tuple = CHECKS
) -> Verdict:
    """Run the checks in order; the first rejection is the verdict."""
    for check in checks:
        verdict = check(order, view, limits, account_limits)
        if verdict is not None:
            return verdict
    return OK
