"""Machine-readable rejection codes of the risk governor (``RiskDecision.code``, ``Rejected.code``).

Every code is ``risk.<check>``; ``docs/risk.md`` lists each with the check and the config key behind it.
"""

from __future__ import annotations

APPROVED = "ok"

NOT_READY = "risk.not_ready"
HALTED = "risk.halted"
REDUCING = "risk.reducing"
STRATEGY_DISABLED = "risk.strategy_disabled"
RESTRICTED = "risk.restricted"
UNKNOWN_SYMBOL = "risk.unknown_symbol"
NO_MARKET_DATA = "risk.no_market_data"
STALE_MARKET_DATA = "risk.stale_market_data"
MAX_QUANTITY = "risk.max_quantity"
MAX_NOTIONAL = "risk.max_notional"
PRICE_COLLAR = "risk.price_collar"
DUPLICATE = "risk.duplicate"
ORDER_RATE = "risk.order_rate"
MAX_POSITION = "risk.max_position"
MAX_GROSS_EXPOSURE = "risk.max_gross_exposure"
BUYING_POWER = "risk.buying_power"
#: the instrument contradicts IB's contract (multiplier, currency, type, expiry, strike, right)
CONTRACT_MISMATCH = "risk.contract_mismatch"
#: the instrument matches several IB contracts (``ES`` without an expiry)
AMBIGUOUS_CONTRACT = "risk.ambiguous_contract"
#: the gateway has not qualified the instrument (no answer: disconnected, slow): fail closed
NOT_QUALIFIED = "risk.not_qualified"
#: a limit or stop price off the contract's price grid (IB would refuse it: 110)
TICK_SIZE = "risk.tick_size"
#: the contract does not take this order type, TIF or algo (IB's contract details ``orderTypes``)
ORDER_TYPE = "risk.order_type"
#: a member of an order group failed its checks: the whole group is refused (the reason names the member)
GROUP_REJECTED = "risk.group_rejected"
#: a quantity below the contract's minimum size or not a multiple of its size increment (fractional units)
SIZE_INCREMENT = "risk.size_increment"
#: the contract's currency has no exchange rate into the base currency (account values, FX quote)
NO_FX_RATE = "risk.no_fx_rate"
#: the contract's data is delayed (no real-time subscription) and risk.delayed_data refuses this order type
DELAYED_DATA = "risk.delayed_data"
#: IB's what-if: post-trade excess liquidity below risk.margin_floor, or no preview in time (fail closed)
MARGIN = "risk.margin"

#: Rejections caused by the governor's own state rather than by the order: they do not count towards the
#: reject-rate breaker (a strategy hammering a halted governor must not also trip its reject-rate breaker).
STATE_CODES = frozenset({NOT_READY, HALTED, REDUCING, STRATEGY_DISABLED})

ALL_CODES = (
    NOT_READY,
    HALTED,
    REDUCING,
    STRATEGY_DISABLED,
    RESTRICTED,
    UNKNOWN_SYMBOL,
    AMBIGUOUS_CONTRACT,
    CONTRACT_MISMATCH,
    NOT_QUALIFIED,
    SIZE_INCREMENT,
    ORDER_TYPE,
    TICK_SIZE,
    NO_MARKET_DATA,
    STALE_MARKET_DATA,
    NO_FX_RATE,
    MAX_QUANTITY,
    MAX_NOTIONAL,
    PRICE_COLLAR,
    DUPLICATE,
    ORDER_RATE,
    MAX_POSITION,
    MAX_GROSS_EXPOSURE,
    BUYING_POWER,
    DELAYED_DATA,
    MARGIN,
    GROUP_REJECTED,
)

#: Rejections that do not count towards the reject-rate breaker: the governor's own state, and market data
#: problems that hit every strategy alike (the stale-data breaker handles those).
#: (``GROUP_REJECTED``: the group's other members; the failing member's own code counts once)
NOT_COUNTED_FOR_REJECT_RATE = STATE_CODES | {
    NO_MARKET_DATA,
    STALE_MARKET_DATA,
    NOT_QUALIFIED,
    NO_FX_RATE,
    GROUP_REJECTED,
}
