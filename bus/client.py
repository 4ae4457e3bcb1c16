"""Compatibility alias: the strategy SDK moved to :mod:`sdk` (``from sdk import KhazadClient``).

This module stays because ``from bus.client import KhazadClient`` is a published contract: strategies written
against the first releases import it, and the README promised it. It only re-exports names; new code imports
from :mod:`sdk` (and topics from :mod:`bus.topics`). Nothing in ``bus`` imports this module, so the transport
never depends on the SDK.
"""

from bus.security import client_security
from bus.topics import TRADING_STATE as TRADING_STATE_TOPIC
from bus.topics import market_data as md_topic
from bus.topics import order as order_topic
from sdk import (
    REJECTED_STATUSES,
    AsyncKhazadClient,
    AsyncStream,
    Endpoints,
    KhazadClient,
    KhazadClientError,
    OrderRejected,
    OrderWaitTimeout,
    RequestTimeout,
    SyncStream,
    UnexpectedReply,
    format_history,
    new_client_order_id,
)
from sdk.endpoints import resolve_config

__all__ = [
    "AsyncKhazadClient",
    "KhazadClient",
    "Endpoints",
    "OrderRejected",
    "OrderWaitTimeout",
    "KhazadClientError",
    "UnexpectedReply",
    "RequestTimeout",
    "new_client_order_id",
    "order_topic",
    "md_topic",
    "TRADING_STATE_TOPIC",
    "REJECTED_STATUSES",
    "format_history",
    "client_security",
    "resolve_config",
    "AsyncStream",
    "SyncStream",
]
