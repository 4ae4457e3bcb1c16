"""What IB's contract details say about prices and quantities, as pure functions of a
:class:`~bus.messages.ContractInfo`: the price grid (min tick, or the market rule's increments by price level), the
nearest valid prices around an off-tick price, the passive rounding a strategy may ask for (``round_to_tick``), the
size rules (``minSize``, ``sizeIncrement``) and the value of a quantity (quantity x price x IB's multiplier).

Shared by the gateway (it rounds what it places) and the risk governor (it checks and values), so both compute
exactly the same grid. Arithmetic is decimal: ``190.0000001`` is off a 0.01 grid, ``0.1 + 0.2`` is on it.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from bus.messages import ContractInfo, OrderSpec

#: A price within this many increments of a grid point is on the grid (float noise from JSON or arithmetic).
GRID_TOLERANCE = Decimal("1e-7")
#: IB gives no size increment: whole units.
DEFAULT_SIZE_INCREMENT = 1.0


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def increment_at(info: ContractInfo, price: float) -> float:
    """The price increment that applies at ``price``: the market rule's level below it, else the min tick (0 when
    IB gives neither: no grid)."""
    increment = info.min_tick
    for step in sorted(info.price_increments, key=lambda s: s.low_edge):
        if price >= step.low_edge:
            increment = step.increment
    return increment


def grid_neighbours(info: ContractInfo, price: float) -> tuple[float, float] | None:
    """``(below, above)``: the valid prices on each side of an off-grid ``price``; None when it is on the grid
    (or the contract has no grid)."""
    inc = increment_at(info, price)
    if inc <= 0:
        return None
    p, step = _dec(price), _dec(inc)
    steps = p / step
    nearest = steps.to_integral_value()
    if abs(steps - nearest) <= GRID_TOLERANCE:
        return None
    below = (steps.to_integral_value(rounding=ROUND_FLOOR) * step).normalize()
    above = (steps.to_integral_value(rounding=ROUND_CEILING) * step).normalize()
    return float(below), float(above)


def decimals_of(info: ContractInfo, price: float) -> int:
    """How many decimals a price needs on this contract's grid at ``price`` (for readable reasons)."""
    inc = increment_at(info, price)
    if inc <= 0:
        return 2
    exponent = _dec(inc).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def passive_price(info: ContractInfo, price: float, side: str, kind: str) -> float:
    """``price`` rounded to the grid on the passive side: a buy limit down, a sell limit up; a buy stop up and a sell
    stop down (further from triggering). On-grid prices come back unchanged (snapped to the exact grid value)."""
    around = grid_neighbours(info, price)
    if around is None:
        inc = increment_at(info, price)
        if inc <= 0:
            return price
        step = _dec(inc)
        return float(((_dec(price) / step).to_integral_value() * step).normalize())
    below, above = around
    if kind == "stop":
        return above if side == "BUY" else below
    return below if side == "BUY" else above


def rounded_order(spec: OrderSpec, info: ContractInfo) -> tuple[float | None, float | None]:
    """(limit, stop) as they go to IB: rounded to the grid when the order asks for it (``round_to_tick``), as given
    otherwise."""
    if not spec.round_to_tick:
        return spec.limit_price, spec.stop_price
    limit = None if spec.limit_price is None else passive_price(info, spec.limit_price, spec.side, "limit")
    stop = None if spec.stop_price is None else passive_price(info, spec.stop_price, spec.side, "stop")
    return limit, stop


def size_problem(info: ContractInfo, quantity: float) -> str | None:
    """Why IB would refuse this quantity for the contract (below ``minSize``, or not a multiple of
    ``sizeIncrement``: fractional units only where IB allows them), or None."""
    inc = info.size_increment or DEFAULT_SIZE_INCREMENT
    name = info.display
    q, step = _dec(quantity), _dec(inc)
    steps = q / step
    if abs(steps - steps.to_integral_value()) > GRID_TOLERANCE:
        below = float((steps.to_integral_value(rounding=ROUND_FLOOR) * step).normalize())
        above = float((steps.to_integral_value(rounding=ROUND_CEILING) * step).normalize())
        what = "fractional quantities are not allowed" if inc >= 1 else f"the size increment is {inc:g}"
        valid = f"{below:g} or {above:g}" if below > 0 else f"{above:g}"
        return f"quantity {quantity:g} is not a multiple of {name}'s size increment {inc:g} ({what}); valid: {valid}"
    if info.min_size > 0 and quantity < info.min_size:
        return f"quantity {quantity:g} is below {name}'s minimum size {info.min_size:g}"
    return None


def notional(info: ContractInfo, quantity: float, price: float) -> float:
    """Quantity x price x IB's multiplier, in the contract's currency (``info.instrument.currency``)."""
    return quantity * price * info.multiplier
