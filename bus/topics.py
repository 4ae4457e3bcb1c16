"""Every pub/sub topic, in one place: constants for fixed topics, builders for keyed ones, prefixes for
subscriptions. Publishers and subscribers both read this module, so a topic is spelt exactly once.

Instrument topics are keyed by IB's contract id (conId), never by symbol: ``md.265598`` is AAPL, ``md.551601503``
ES March 2027 and ``md.551601532`` ES June, so a subscriber of one expiry never receives the other's ticks.

Subscriptions match by prefix (ZeroMQ SUB semantics): subscribe with a ``*_PREFIX`` constant to receive every key.
"""

from __future__ import annotations

# -- liveness ----------------------------------------------------------------------------------------------------
HEARTBEAT_PREFIX = "hb."
# -- connection and trading state ---------------------------------------------------------------------------------
STATE_PREFIX = "state."
CONNECTION_STATE = "state.connection"
TRADING_STATE = "state.trading"
# -- operator and risk commands, broadcast in addition to their acknowledged requests -----------------------------
CONTROL_PREFIX = "control."
KILL = "control.kill"
RESUME = "control.resume"
EMERGENCY_CANCEL = "control.emergency_cancel"
# -- gateway events ------------------------------------------------------------------------------------------------
GW_ORDER_PREFIX = "gw.order."
FILL_PREFIX = "fill."
COMMISSION_PREFIX = "commission."
POSITION_PREFIX = "position."
ACCOUNT_VALUES = "account.values"
MARKET_DATA_PREFIX = "md."
INSTRUMENT_PREFIX = "instrument."
PNL_PREFIX = "pnl."
#: real-time bars (issue 17): ``bars.<conId>.<whatToShow>.<seconds>``
BARS_PREFIX = "bars."
#: IB's daily P&L of the account (reqPnL); a position's is ``pnl.<conId>``
ACCOUNT_PNL = "pnl.account"
# -- order manager, risk, portfolio events ------------------------------------------------------------------------
ORDER_PREFIX = "order."
RISK_DECISION_PREFIX = "risk.decision."
RECON_PREFIX = "recon."
PORTFOLIO_SNAPSHOT = "portfolio.snapshot"
# -- alerts and bus health -----------------------------------------------------------------------------------------
ALERT_PREFIX = "alert."
GAP_PREFIX = "bus.gap."
#: the ready-handshake probe of bus.pubsub (never seen by actors)
PROBE_PREFIX = "_probe."


def heartbeat(actor: str) -> str:
    """``hb.<actor>``: the actor's :class:`~bus.messages.Heartbeat`."""
    return f"{HEARTBEAT_PREFIX}{actor}"


def gw_order(strategy_id: str) -> str:
    """``gw.order.<strategy>``: the gateway's :class:`~bus.messages.OrderStatusEvent` and
    :class:`~bus.messages.OrderNoticeEvent` for one strategy's orders (``external`` for orders Khazad did not place)."""
    return f"{GW_ORDER_PREFIX}{strategy_id}"


def fill(con_id: int | str) -> str:
    """``fill.<conId>``: :class:`~bus.messages.FillEvent` of one contract."""
    return f"{FILL_PREFIX}{con_id}"


def commission(con_id: int | str) -> str:
    """``commission.<conId>``: :class:`~bus.messages.CommissionEvent` of one contract."""
    return f"{COMMISSION_PREFIX}{con_id}"


def position(con_id: int | str) -> str:
    """``position.<conId>``: :class:`~bus.messages.PositionEvent` of one contract."""
    return f"{POSITION_PREFIX}{con_id}"


def market_data(con_id: int | str) -> str:
    """``md.<conId>``: :class:`~bus.messages.TickEvent` of one contract."""
    return f"{MARKET_DATA_PREFIX}{con_id}"


def instrument(con_id: int | str) -> str:
    """``instrument.<conId>``: :class:`~bus.messages.InstrumentEvent` (IB's contract details)."""
    return f"{INSTRUMENT_PREFIX}{con_id}"


def position_pnl(con_id: int | str) -> str:
    """``pnl.<conId>``: :class:`~bus.messages.PositionPnLEvent` (IB's daily P&L of one position)."""
    return f"{PNL_PREFIX}{con_id}"


def bars(con_id: int | str, what_to_show: str, bar_seconds: int, *, use_rth: bool = False) -> str:
    """``bars.<conId>.<whatToShow>.<seconds>`` (``<whatToShow>_RTH`` for regular-hours bars):
    :class:`~bus.messages.BarEvent` of one contract and bar size (``bars.1.TRADES.30`` is a prefix of
    ``bars.1.TRADES.300``: consumers compare the exact topic)."""
    what = f"{what_to_show}_RTH" if use_rth else what_to_show
    return f"{BARS_PREFIX}{con_id}.{what}.{bar_seconds}"


def order(strategy_id: str) -> str:
    """``order.<strategy>``: the order manager's :class:`~bus.messages.OrderUpdate` for one strategy."""
    return f"{ORDER_PREFIX}{strategy_id}"


def risk_decision(strategy_id: str) -> str:
    """``risk.decision.<strategy>``: :class:`~bus.messages.RiskDecisionEvent`."""
    return f"{RISK_DECISION_PREFIX}{strategy_id}"


def recon(actor: str) -> str:
    """``recon.<actor>``: :class:`~bus.messages.ReconciliationReport`."""
    return f"{RECON_PREFIX}{actor}"


def alert(kind: str) -> str:
    """``alert.<kind>``: :class:`~bus.messages.Alert`."""
    return f"{ALERT_PREFIX}{kind}"


def gap(subscriber: str) -> str:
    """``bus.gap.<subscriber>``: :class:`~bus.messages.GapReport` from a subscriber that saw a sequence gap."""
    return f"{GAP_PREFIX}{subscriber}"


# -- who may publish what (the proxy enforces it per message from the sender's authenticated key) -----------------
#: Special owners. ANY: every key. SELF: the topic's rest (after the prefix) is a name the key owns (its own
#: ``hb.<name>``, ``bus.gap.<name>``, ``recon.<name>``; see :meth:`bus.allowlist.Principal.owns_name`). ROLE: the
#: rest is the key's role (``alert.strategy`` from a strategy, ``alert.operator`` from an operator). OPERATORS,
#: ACTORS: any key of that role. Any other owner is an actor's name.
ANY = "@any"
SELF = "@self"
ROLE = "@role"
OPERATORS = "@operator"
ACTORS = "@actor"
#: topic prefix -> who may publish under it. The longest matching prefix decides; a topic no prefix covers is
#: refused, for every key (a new topic needs its line here).
PUBLISHERS: dict[str, frozenset[str]] = {
    PROBE_PREFIX: frozenset({ANY}),  # the ready handshake's empty probes (subscribers never deliver them)
    HEARTBEAT_PREFIX: frozenset({SELF}),
    GAP_PREFIX: frozenset({SELF}),
    CONNECTION_STATE: frozenset({"gateway"}),
    TRADING_STATE: frozenset({"risk"}),  # the one authority for trading states (actors/risk/state_keeper.py)
    KILL: frozenset({OPERATORS, "gateway"}),  # the gateway relays the kill it executed
    RESUME: frozenset({OPERATORS}),
    EMERGENCY_CANCEL: frozenset({"risk"}),
    CONTROL_PREFIX: frozenset(),  # any other control.* topic: nobody
    GW_ORDER_PREFIX: frozenset({"gateway"}),
    FILL_PREFIX: frozenset({"gateway"}),
    COMMISSION_PREFIX: frozenset({"gateway"}),
    POSITION_PREFIX: frozenset({"gateway"}),
    ACCOUNT_VALUES: frozenset({"gateway"}),
    MARKET_DATA_PREFIX: frozenset({"gateway"}),
    INSTRUMENT_PREFIX: frozenset({"gateway"}),  # IB's contract details, by conId
    PNL_PREFIX: frozenset({"gateway"}),  # IB's daily P&L (reqPnL, reqPnLSingle): risk's daily-loss breaker reads it
    BARS_PREFIX: frozenset({"gateway"}),  # real-time bars built from IB's 5-second bars (issue 17)
    ORDER_PREFIX: frozenset({"orders"}),
    RISK_DECISION_PREFIX: frozenset({"risk"}),
    RECON_PREFIX: frozenset({SELF}),
    PORTFOLIO_SNAPSHOT: frozenset({"portfolio"}),
    ALERT_PREFIX: frozenset({ACTORS, ROLE}),
}
