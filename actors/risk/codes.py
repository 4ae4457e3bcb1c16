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
    NO_MARKET_DATA,
    STALE_MARKET_DATA,
    MAX_QUANTITY,
    MAX_NOTIONAL,
    PRICE_COLLAR,
    DUPLICATE,
    ORDER_RATE,
    MAX_POSITION,
    MAX_GROSS_EXPOSURE,
    BUYING_POWER,
)

#: Rejections that do not count towards the reject-rate breaker: the governor's own state, and market data
#: problems that hit every strategy alike (the stale-data breaker handles those).
NOT_COUNTED_FOR_REJECT_RATE = STATE_CODES | {NO_MARKET_DATA, STALE_MARKET_DATA}
