"""Dispatch by request type: the base table, unknown types, and the authz policy covering every request type."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from bus import messages as m
from bus import registry
from bus.actor import Actor
from bus.dispatch import REQUEST_TYPES, unhandled_requests
from bus.approval import write_approval_key
from bus.authz import POLICY
from bus.config import KhazadConfig


class _Probe(Actor):
    name = "probe"
    service = "probe"
    refused_requests = frozenset(REQUEST_TYPES - {m.Ping, m.GetStatus, m.GetAccount})

    def request_handlers(self) -> Any:
        return {**super().request_handlers(), m.GetAccount: self._account}

    async def _account(self, ctx: Any, body: m.GetAccount) -> m.Rejected:
        return m.Rejected(code="probe", reason="answered by the probe's handler")


def test_request_types_are_every_member_of_the_request_union() -> None:
    assert m.PlaceOrder in REQUEST_TYPES and m.GetSystemStatus in REQUEST_TYPES
    assert m.Pong not in REQUEST_TYPES and m.FillEvent not in REQUEST_TYPES


def test_dispatch_routes_by_type_and_rejects_unhandled_types_as_unknown_command() -> None:
    probe = _Probe(KhazadConfig())
    pong = asyncio.run(probe.on_request(None, m.Ping()))  # type: ignore[arg-type]
    assert isinstance(pong, m.Pong) and pong.actor == "probe"
    mine = asyncio.run(probe.on_request(None, m.GetAccount()))  # type: ignore[arg-type]
    assert isinstance(mine, m.Rejected) and mine.code == "probe"
    other = asyncio.run(probe.on_request(None, m.GetPositions()))  # type: ignore[arg-type]
    assert isinstance(other, m.Rejected) and other.code == "unknown_command"
    assert other.request_type == "get_positions"


def test_unhandled_requests_reports_missing_and_double_entries() -> None:
    assert unhandled_requests(_Probe(KhazadConfig())) == (set(), set())

    class Forgetful(_Probe):
        refused_requests = frozenset(_Probe.refused_requests - {m.Kill})

    class Confused(_Probe):
        refused_requests = frozenset(_Probe.refused_requests | {m.GetAccount})

    assert unhandled_requests(Forgetful(KhazadConfig())) == ({m.Kill}, set())
    assert unhandled_requests(Confused(KhazadConfig())) == (set(), {m.GetAccount})


def test_authz_policy_names_every_request_type() -> None:
    # A request type without a POLICY entry works on loopback and comes back `unauthorized` under CURVE.
    assert set(POLICY) == set(REQUEST_TYPES)


# -- every service of the registry ------------------------------------------------------------------------------

#: Every service's dispatch is a handler table, by registry name -> "module:class". A service added to the
#: registry must be added here (the next test fails until it is).
TABLE_DISPATCH = {
    "gateway": "actors.gateway.actor:GatewayActor",
    "risk": "actors.risk.actor:RiskGovernor",
    "orders": "actors.orders.actor:OrderManager",
    "portfolio": "actors.portfolio.actor:PortfolioActor",
    "monitor": "actors.monitor.actor:MonitorActor",
}


def _actor_class(path: str) -> type[Actor]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def test_every_registry_service_is_checked() -> None:
    assert set(TABLE_DISPATCH) == set(registry.SERVICE_NAMES)


@pytest.mark.parametrize("service", [s.name for s in registry.SERVICES if s.name in TABLE_DISPATCH])
def test_service_handles_or_refuses_every_request_type(service: str, tmp_path) -> None:
    cfg = KhazadConfig(base_dir=str(tmp_path))
    write_approval_key(cfg.path(cfg.risk.approval_key_file))  # the gateway and risk refuse to start without it
    actor = _actor_class(TABLE_DISPATCH[service])(cfg)
    assert actor.name == service and actor.service == registry.spec(service).endpoint
    assert unhandled_requests(actor) == (set(), set())
