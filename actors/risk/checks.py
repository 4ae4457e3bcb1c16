"""The pre-trade checks: pure functions of one order, a :class:`RiskView` (what the governor knows that matters
for this order, taken at one instant) and the limits. No I/O, no clock, no state: the governor builds the view,
:func:`evaluate` answers, the governor records an approval.

Order of the checks (the first failure is the answer): trading state, disabled strategy, restricted symbol,
quantity, the contract (IB's details: unknown, ambiguous, contradicted, not qualified), size increment, order type
(IB's orderTypes), tick size,
market data, exchange rate, notional, price collar, REDUCING admission, duplicate, order rate, position, gross
exposure, buying power. Each rejection has a code from :mod:`actors.risk.codes` and a reason for humans.

Units: quantities are the contract's units (shares, contracts, base currency units of an FX pair); prices are in
the contract's currency; every money amount compared with a limit is in the account's base currency: quantity x
price x IB's multiplier x the rate of the contract's currency (``view.fx_rate``).

Position, gross exposure and buying power are checked on two books: the strategy's own (with its effective
limits, i.e. ``[risk.strategies.<id>]`` over ``[risk.limits]``) and the account's (with the global
``[risk.limits]``). An order that *reduces* the exposure of a book never fails that book's position, exposure
or buying-power check: closing risk must stay possible when a limit is already exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.risk import codes
from bus.config import RiskLimits
from bus.contracts import decimals_of, grid_neighbours, rounded_order, size_problem
from bus.messages import ContractInfo, OrderSpec, ib_order_tokens

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
    #: the scopes (``all``, ``strategy:<id>``, ``symbol:<sym>``, ``conid:<id>``) that are not ACTIVE for this order
    state_scopes: tuple[str, ...] = ()
    reducing_scopes: tuple[str, ...] = ()
    disabled_reason: str | None = None
    restricted: frozenset[str] = frozenset()
    #: upper-cased names of the contract (the order's symbol, IB's symbol and local symbol) for the restricted list
    names: frozenset[str] = frozenset()
    #: IB's details of the order's contract (None: not qualified)
    contract: ContractInfo | None = None
    #: the gateway's refusal of the instrument: (code, reason)
    contract_refusal: tuple[str, str] | None = None
    ref_price: float | None = None
    tick_age_s: float | None = None
    #: inside the contract's trading hours (or hours unknown): only then does old data count as stale
    in_session: bool = True
    stale_data_s: float = 30.0
    #: the rate of the contract's currency into the base currency (None: no rate)
    fx_rate: float | None = 1.0
    base_currency: str = ""
    strategy: BookView = BookView()
    account: BookView = BookView()
    buying_power: float | None = None
    #: notional of the account's working orders (this one excluded): committed buying power
    working_notional: float = 0.0
    rate_tokens: float = 1.0
    duplicate_of: str | None = None
    #: the reference price is IB's delayed data, and what risk.delayed_data allows on it
    delayed_data: bool = False
    delayed_policy: str = "limit_only"
    #: IB's what-if (only for orders the margin check covers): post-trade excess liquidity, or why there is none
    margin_checked: bool = False
    margin_excess_after: float | None = None
    margin_problem: str | None = None
    margin_floor: float = 0.0


def prices(order: OrderSpec, view: RiskView) -> tuple[float | None, float | None]:
    """(limit, stop) as they go to IB: rounded to the contract's grid when the order asks for it
    (:func:`bus.contracts.rounded_order`, the gateway's own rounding)."""
    if view.contract is None:
        return order.limit_price, order.stop_price
    return rounded_order(order, view.contract)


def trade_price(order: OrderSpec, view: RiskView) -> float | None:
    """The price the order would trade at: its limit, else its stop, else the market."""
    limit, stop = prices(order, view)
    if limit is not None:
        return limit
    if stop is not None:
        return stop
    return view.ref_price


def order_notional(order: OrderSpec, view: RiskView) -> float | None:
    """Quantity x trade price x IB's multiplier x the exchange rate: the order's value in the base currency."""
    price = trade_price(order, view)
    if price is None or view.contract is None or view.fx_rate is None:
        return None
    return order.quantity * price * view.contract.multiplier * view.fx_rate


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.2f}{' ' + currency if currency else ''}"


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
    for name in sorted({order.instrument.symbol.upper(), *view.names}):
        if name in view.restricted:
            return Verdict(codes.RESTRICTED, f"{name} is a restricted symbol")
    return None


#: the gateway's refusal codes -> the governor's
_REFUSALS = {
    "contract_mismatch": codes.CONTRACT_MISMATCH,
    "ambiguous_contract": codes.AMBIGUOUS_CONTRACT,
    "unknown_symbol": codes.UNKNOWN_SYMBOL,
}


def check_contract(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    """No order without IB's contract details (fail closed), and never on an instrument IB contradicts."""
    if view.contract is not None:
        return None
    name = order.instrument.display
    if view.contract_refusal is not None:
        code, reason = view.contract_refusal
        return Verdict(_REFUSALS.get(code, codes.NOT_QUALIFIED), f"{name}: {reason}")
    return Verdict(codes.NOT_QUALIFIED, f"{name}: the gateway has not qualified the instrument with IB (no answer)")


def check_size(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    assert view.contract is not None
    problem = size_problem(view.contract, order.quantity)
    return Verdict(codes.SIZE_INCREMENT, problem) if problem is not None else None


def check_order_type(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    """IB's contract details list the order types, TIFs and algos the contract takes (``orderTypes``): an order
    needing one it does not list would be refused by IB (a MOC on a future, GTD where IB has no GTD)."""
    assert view.contract is not None
    listed = {t.strip() for t in view.contract.order_types.split(",") if t.strip()}
    if not listed:
        return None  # IB gave no list: nothing to check against
    missing = [t for t in ib_order_tokens(order) if t not in listed]
    if missing:
        return Verdict(
            codes.ORDER_TYPE,
            f"{view.contract.display} does not take {', '.join(missing)} (IB's orderTypes for the contract)",
        )
    return None


def check_tick(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    """A price off the contract's grid would be refused by IB (110): refuse it here, with the valid prices."""
    info = view.contract
    assert info is not None
    for kind, price in zip(("limit", "stop"), prices(order, view), strict=True):
        if price is None:
            continue
        around = grid_neighbours(info, price)
        if around is None:
            continue
        d = decimals_of(info, price)
        inc = around[1] - around[0]
        return Verdict(
            codes.TICK_SIZE,
            f"{kind} price {price!r} is not on {info.display}'s price grid (increment {inc:.{d}f} at this price): "
            f"nearest valid prices {around[0]:.{d}f} and {around[1]:.{d}f} (or send round_to_tick)",
        )
    return None


def check_market_data(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    name = view.contract.display if view.contract is not None else order.instrument.display
    if view.ref_price is None or view.tick_age_s is None:
        return Verdict(codes.NO_MARKET_DATA, f"no market data for {name}: cannot collar or value the order")
    if view.in_session and view.tick_age_s > view.stale_data_s:
        return Verdict(
            codes.STALE_MARKET_DATA,
            f"market data for {name} is {view.tick_age_s:.1f}s old during its trading hours "
            f"(risk.stale_data_s = {view.stale_data_s:g})",
        )
    return None


def check_delayed_data(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if not view.delayed_data or view.delayed_policy == "allow":
        return None
    name = view.contract.display if view.contract is not None else order.instrument.display
    if view.delayed_policy == "block":
        return Verdict(codes.DELAYED_DATA, f"market data for {name} is delayed (risk.delayed_data = block)")
    if order.order_type != "LMT":
        return Verdict(
            codes.DELAYED_DATA,
            f"market data for {name} is delayed: only limit orders (collared on the delayed price) are allowed, "
            f"not {order.order_type} (risk.delayed_data = limit_only)",
        )
    return None


def check_margin(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if not view.margin_checked:
        return None
    if view.margin_problem is not None:
        return Verdict(codes.MARGIN, f"no margin preview from IB: {view.margin_problem} (fail closed)")
    excess = view.margin_excess_after
    if excess is None or excess < view.margin_floor - EPSILON:
        shown = "unknown" if excess is None else _money(excess, view.base_currency)
        return Verdict(
            codes.MARGIN,
            f"IB's what-if: excess liquidity after the trade {shown} < risk.margin_floor "
            f"{_money(view.margin_floor, view.base_currency)}",
        )
    return None


def check_fx(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if view.fx_rate is None:
        ccy = view.contract.instrument.currency if view.contract is not None else order.instrument.currency
        return Verdict(
            codes.NO_FX_RATE,
            f"no exchange rate {ccy} -> {view.base_currency or 'base currency (unknown yet)'}: IB's account "
            f"values report none and no FX quote is available; the order cannot be valued",
        )
    return None


def check_quantity(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    if order.quantity > limits.max_order_quantity + EPSILON:
        return Verdict(
            codes.MAX_QUANTITY, f"quantity {order.quantity:g} > max_order_quantity {limits.max_order_quantity:g}"
        )
    return None


def check_notional(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    notional = order_notional(order, view)
    if notional is not None and notional > limits.max_order_notional + EPSILON:
        info, price = view.contract, trade_price(order, view)
        assert info is not None and price is not None
        ccy = info.instrument.currency
        how = f"{order.quantity:g} x {price:g} {ccy} x multiplier {info.multiplier:g}"
        if ccy != view.base_currency and view.fx_rate is not None:
            how += f" x {ccy}/{view.base_currency} {view.fx_rate:.6g}"
        return Verdict(
            codes.MAX_NOTIONAL,
            f"notional {_money(notional, view.base_currency)} ({how}) > max_order_notional "
            f"{_money(limits.max_order_notional, view.base_currency)}",
        )
    return None


def check_collar(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    ref = view.ref_price
    if ref is None:
        return None
    for name, price in zip(("limit", "stop"), prices(order, view), strict=True):
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
            name = view.contract.display if view.contract is not None else order.instrument.display
            return Verdict(
                codes.MAX_POSITION,
                f"{whose} position in {name} could reach {projected:g} "
                f"(position {book.position:g} + working + this order) > max_position {lim.max_position:g}",
            )
    return None


def check_gross(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    notional = order_notional(order, view) or 0.0
    for whose, book, lim in (("strategy", view.strategy, limits), ("account", view.account, acct)):
        if reduces(book, order):
            continue
        projected = book.gross_exposure + notional
        if projected > lim.max_gross_exposure + EPSILON:
            return Verdict(
                codes.MAX_GROSS_EXPOSURE,
                f"{whose} gross exposure would be {_money(projected, view.base_currency)} (positions + working "
                f"orders + this order) > max_gross_exposure {_money(lim.max_gross_exposure, view.base_currency)}",
            )
    return None


def check_buying_power(order: OrderSpec, view: RiskView, limits: RiskLimits, acct: RiskLimits) -> Verdict | None:
    ratio = limits.min_buying_power_ratio
    if ratio <= 0 or reduces(view.account, order):
        return None
    if view.buying_power is None:
        return Verdict(codes.BUYING_POWER, "the account reports no BuyingPower/AvailableFunds yet")
    required = (order_notional(order, view) or 0.0) * ratio
    available = view.buying_power - view.working_notional * ratio
    if required > available + EPSILON:
        return Verdict(
            codes.BUYING_POWER,
            f"needs {_money(required, view.base_currency)} of buying power (notional x min_buying_power_ratio "
            f"{ratio:g}), {_money(available, view.base_currency)} available after working orders",
        )
    return None


CHECKS = (
    check_ready,
    check_state,
    check_disabled,
    check_restricted,
    check_quantity,
    check_contract,
    check_size,
    check_order_type,
    check_tick,
    check_market_data,
    check_delayed_data,
    check_fx,
    check_notional,
    check_collar,
    check_reducing,
    check_duplicate,
    check_rate,
    check_position,
    check_gross,
    check_buying_power,
    check_margin,
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
