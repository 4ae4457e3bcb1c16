"""Small programs the tests run as real processes (``python -m tests.support.programs.<name> --config <path>``):
``probe_actor`` (an actor with scripted requests, for the bus and bench tests), ``echo_actor`` (an actor behind
CURVE), ``burst_publisher`` (a brand-new publisher: slow joiners), ``stalled_subscriber`` (a subscriber that stops
reading: high-water marks), ``remote_strategy`` and ``remote_probe`` (a strategy and a keyless intruder on the
second node of the two-node test).

The probe serves another actor's endpoint (``monitor``) with its own key (``probe``): its clients expect that server
key (:func:`probe_client`)."""

from __future__ import annotations

from typing import Any

import zmq

from bus.codec import Stamper
from bus.messages import GetStatus, ServiceStatus
from bus.sync_client import SyncClient
from tests.support.clients import security, server_key
from tests.support.config import config_of_endpoint

PROBE_ACTOR = "tests.support.programs.probe_actor"
ECHO_ACTOR = "tests.support.programs.echo_actor"
BURST_PUBLISHER = "tests.support.programs.burst_publisher"
STALLED_SUBSCRIBER = "tests.support.programs.stalled_subscriber"

#: The bus endpoint the probe serves by default (no real monitor runs in the tests that use it).
PROBE_SERVICE = "monitor"
#: The key the probe serves (and publishes) with: its own name's.
PROBE_KEY = "probe"


def probe_client(zctx: zmq.Context, endpoint: str, *, stamper: Stamper | None = None, timeout_s: float = 2.0,
                 retries: int = 2) -> SyncClient:
    """A blocking operator client of the probe serving ``endpoint`` (the caller closes it)."""
    cfg = config_of_endpoint(endpoint)
    sec = security(cfg) if cfg is not None else None
    return SyncClient(zctx, endpoint, service="probe", stamper=stamper or Stamper("test-status"), timeout_s=timeout_s,
                      retries=retries, security=sec, server_key=server_key(sec, PROBE_KEY))


def probe_status(zctx: zmq.Context, endpoint: str) -> dict[str, str]:
    """The probe's counters (GetStatus detail)."""
    cl = probe_client(zctx, endpoint)
    try:
        reply: Any = cl.call(GetStatus())
    finally:
        cl.close()
    assert isinstance(reply, ServiceStatus), reply
    return reply.detail
