"""Small programs the tests run as real processes (``python -m tests.support.programs.<name> --config <path>``):
``probe_actor`` (an actor with scripted requests, for the bus and bench tests), ``echo_actor`` (an actor behind
CURVE), ``burst_publisher`` (a brand-new publisher: slow joiners), ``stalled_subscriber`` (a subscriber that stops
reading: high-water marks)."""

from __future__ import annotations

from typing import Any

import zmq

from bus.codec import Stamper
from bus.messages import GetStatus, ServiceStatus
from bus.reqrep import SyncClient

PROBE_ACTOR = "tests.support.programs.probe_actor"
ECHO_ACTOR = "tests.support.programs.echo_actor"
BURST_PUBLISHER = "tests.support.programs.burst_publisher"
STALLED_SUBSCRIBER = "tests.support.programs.stalled_subscriber"

#: The bus endpoint the probe serves by default (no real monitor runs in the tests that use it).
PROBE_SERVICE = "monitor"


def probe_status(zctx: zmq.Context, endpoint: str) -> dict[str, str]:
    """The probe's counters (GetStatus detail)."""
    cl = SyncClient(zctx, endpoint, service="status", stamper=Stamper("test-status"), timeout_s=2.0, retries=2)
    try:
        reply: Any = cl.call(GetStatus())
    finally:
        cl.close()
    assert isinstance(reply, ServiceStatus), reply
    return reply.detail
