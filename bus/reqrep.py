"""Request/reply over ROUTER (service) and DEALER (client): never a raw REQ socket.

The parts live in modules named for what they hold:

* :mod:`bus.service`: the ROUTER side (:class:`Service`, :class:`CallContext`): de-duplication, admission,
  deadlines, authorisation, the handler's error policy;
* :mod:`bus.async_client`: the asyncio DEALER caller (:class:`AsyncClient`), many concurrent calls on one socket;
* :mod:`bus.sync_client`: the blocking caller (:class:`SyncClient`) for scripts, the CLI and tests;
* :mod:`bus.retry`: the retry/backoff policy, request ids, call deadlines and :class:`RequestTimeout`;
* :mod:`bus.dealer`: what both callers share (the DEALER socket, the settings, the bad-reply answer).

This module re-exports the names users and docs know it by (``bus.reqrep.RequestTimeout`` in docs/sdk.md,
``bus.reqrep.Service`` in bench); new code imports from the module that holds the name.
"""

from __future__ import annotations

from bus.async_client import AsyncClient
from bus.dealer import bad_reply
from bus.retry import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    DEADLINE_ALLOWANCE_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    RequestTimeout,
    backoff_s,
    call_deadline_ns,
    new_request_id,
)
from bus.service import (
    ALWAYS_ADMITTED,
    REPLY_FLUSH_LINGER_MS,
    REPLY_TYPES,
    RUN_WHEN_LATE,
    CallContext,
    Handler,
    Service,
)
from bus.sync_client import SyncClient

__all__ = [
    "ALWAYS_ADMITTED",
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "DEADLINE_ALLOWANCE_S",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "REPLY_FLUSH_LINGER_MS",
    "REPLY_TYPES",
    "RUN_WHEN_LATE",
    "AsyncClient",
    "CallContext",
    "Handler",
    "RequestTimeout",
    "Service",
    "SyncClient",
    "backoff_s",
    "bad_reply",
    "call_deadline_ns",
    "new_request_id",
]
