"""One registry of actors (bus/registry.py): every consumer reads it, so an actor added there gets its key, is
expected by the monitor and runs under supervisord without another list to edit; and the registry agrees with the
configuration's endpoint fields."""

from __future__ import annotations

import msgspec
import pytest

from bus import registry
from bus.allowlist import allow_path
from bus.allowlist import load as load_allow_list
from bus.config import BusConfig, MonitorConfig, load_config
from cli.main import main as khazad
from launch.plan import Plan
from launch.supervisord import render, sections
from tests.support.config import write_config

#: an actor that serves no requests (no [bus] endpoint needed): adding it must take one registry entry
RECORDER = registry.ActorSpec(name="recorder", module="actors.recorder", endpoint=None, priority=65,
                              summary="records every event (test actor)")


@pytest.fixture
def registry_with_recorder(monkeypatch: pytest.MonkeyPatch) -> registry.ActorSpec:
    actors = (*registry.ACTORS, RECORDER)
    monkeypatch.setattr(registry, "ACTORS", actors)
    monkeypatch.setattr(registry, "ACTOR_NAMES", tuple(a.name for a in actors))
    monkeypatch.setattr(registry, "BY_NAME", {a.name: a for a in actors})
    return RECORDER


def test_an_actor_added_to_the_registry_reaches_config_keys_and_supervisord(registry_with_recorder, tmp_path, capsys):
    # the monitor expects it (config default)
    assert "recorder" in MonitorConfig().expected_actors
    # `khazad keys init` makes its actor key
    path = write_config(tmp_path, curve=False)  # no keys yet: `keys init` makes them all
    assert khazad(["--config", str(path), "keys", "init"]) == 0
    cfg = load_config(path, env={})
    keys = {k.name: k.role for k in load_allow_list(allow_path(cfg.path(cfg.bus.curve.keys_dir))).values()}
    assert keys["recorder"] == "actor"
    # launch renders its supervisord program from the registry entry (module, priority)
    plan = Plan(cfg=cfg, config_path=path, run_dir=tmp_path / "run", mode="paper", with_strategy=False)
    assert "recorder" in plan.programs
    section = sections(render(plan))["program:recorder"]
    assert "-m actors.recorder --config" in section and "priority = 65" in section
    assert plan.programs.index("portfolio") < plan.programs.index("recorder") < plan.programs.index("monitor")


def test_registry_endpoints_are_exactly_the_bus_config_endpoints():
    # a service in the registry needs its [bus] field (BusConfig is an explicit schema), and no [bus] endpoint field
    # exists without an owner in the registry
    endpoint_fields = {f.name for f in msgspec.structs.fields(BusConfig)
                       if isinstance(f.default, str) and f.default.startswith("tcp://")}
    assert endpoint_fields == set(registry.ENDPOINT_FIELDS)
    assert {a.endpoint for a in registry.SERVICES} == set(registry.SERVICE_NAMES)


def test_status_asks_every_service_of_the_registry():
    from cli.status import STATUS_SERVICES

    assert tuple(STATUS_SERVICES) == registry.SERVICE_NAMES
    assert "proxy" not in STATUS_SERVICES  # the proxy serves no requests: status probes it on the bus
