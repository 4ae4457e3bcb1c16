"""The gateway's request table: every request type of the schema is handled or refused on purpose."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.gateway.actor import GatewayActor
from bus import messages as m
from bus.dispatch import unhandled_requests
from bus.approval import load_approval_key, sign
from tests.support.builders import order
from tests.support.config import cfg_of, gateway_extra, write_config


def _gateway(tmp_path: Path) -> GatewayActor:
    return GatewayActor(cfg_of(write_config(tmp_path, extra=gateway_extra(1))), env={})


def test_gateway_dispatch_is_exhaustive(tmp_path: Path) -> None:
    assert unhandled_requests(_gateway(tmp_path)) == (set(), set())


def test_gateway_refuses_other_services_requests_and_answers_its_own(tmp_path: Path) -> None:
    gw = _gateway(tmp_path)
    refused = asyncio.run(gw.on_request(None, m.PlaceOrder(order=order(coid="x"))))  # type: ignore[arg-type]
    assert isinstance(refused, m.Rejected) and refused.code == "unknown_command"
    assert refused.request_type == "place_order" and "gateway" in refused.reason
    status = asyncio.run(gw.on_request(None, m.GetStatus()))  # type: ignore[arg-type]
    assert isinstance(status, m.GatewayStatus) and status.connection == "DISCONNECTED"
    # not connected: an approved order is refused with a reason, never sent
    spec = order(coid="y")
    approval = sign(load_approval_key(gw.cfg, {}), spec, ttl_s=30)
    submit = asyncio.run(gw.on_request(None, m.SubmitOrder(order=spec, approval=approval)))  # type: ignore[arg-type]
    assert isinstance(submit, m.Rejected) and submit.code == "disconnected"
