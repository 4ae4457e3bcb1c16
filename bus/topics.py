"""Every pub/sub topic, in one place: constants for fixed topics, builders for keyed ones, prefixes for
subscriptions. Publishers and subscribers both read this module, so a topic is spelt exactly once.

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


def fill(key: str) -> str:
    """``fill.<instrument key>``: :class:`~bus.messages.FillEvent`."""
    return f"{FILL_PREFIX}{key}"


def commission(key: str) -> str:
    """``commission.<instrument key>``: :class:`~bus.messages.CommissionEvent`."""
    return f"{COMMISSION_PREFIX}{key}"


def position(key: str) -> str:
    """``position.<instrument key>``: :class:`~bus.messages.PositionEvent`."""
    return f"{POSITION_PREFIX}{key}"


def market_data(key: str) -> str:
    """``md.<instrument key>``: :class:`~bus.messages.TickEvent`."""
    return f"{MARKET_DATA_PREFIX}{key}"


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
