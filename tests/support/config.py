"""Test configurations: a ``khazad.toml`` on free ports with its run dir under the test's tmp dir (an approval key,
and the CURVE keys and allow-list of :mod:`tests.support.keys`: every test runs the authenticated bus unless it
asks for a plain one, ``curve=False``), the ``[gateway]`` section that points the gateway at a test simulator, and
the repository's root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bus import registry
from bus.approval import write_approval_key
from bus.config import KhazadConfig, load_config
from bus.sockets import free_tcp_ports

REPO = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    return free_tcp_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so they cannot repeat)."""
    return free_tcp_ports(n)


#: bus endpoint -> the test config (written or read in this process) that owns it: ping()/wait_serving() find the
#: key for an endpoint
_CONFIG_BY_ENDPOINT: dict[str, KhazadConfig] = {}


def write_config(tmp: Path, *, extra: str = "", ports: dict[str, int] | None = None, curve: bool = True,
                 strategies: tuple[str, ...] = (), actors: tuple[str, ...] = ()) -> Path:
    """Write a khazad.toml for a test: free ports everywhere, run_dir under ``tmp``, an approval key, and (unless
    ``curve=False``) the CURVE keys and allow-list (``strategies``/``actors`` add keys; see
    :func:`tests.support.keys.provision_keys`)."""
    names = list(registry.ENDPOINT_FIELDS)
    ports = dict(ports or {})
    fresh = iter(free_ports(len(names) + 3))
    for n in names + ["sim", "sim_control", "metrics"]:
        ports.setdefault(n, next(fresh))
    bus = "\n".join(f'{n} = "tcp://127.0.0.1:{ports[n]}"' for n in names)
    text = f"""
run_dir = "{tmp / 'run'}"

[bus]
{bus}
heartbeat_interval_s = 0.2
request_timeout_s = 2.0

[sim]
port = {ports['sim']}
control_port = {ports['sim_control']}

[monitor]
metrics_port = {ports['metrics']}

[logging]
level = "DEBUG"
{extra}
"""
    if not curve:
        text += "\n[bus.curve]\nenabled = false\n"
    path = tmp / "khazad.toml"
    path.write_text(text)
    cfg = load_config(path, env={})
    write_approval_key(cfg.path(cfg.risk.approval_key_file))
    if cfg.bus.curve.enabled:
        from tests.support.keys import provision_keys

        provision_keys(cfg, strategies=strategies, actors=actors)
    _remember(cfg)
    return path


def cfg_of(path: Path) -> KhazadConfig:
    cfg = load_config(path, env={})
    _remember(cfg)
    return cfg


def _remember(cfg: KhazadConfig) -> None:
    for field in registry.ENDPOINT_FIELDS:
        _CONFIG_BY_ENDPOINT[getattr(cfg.bus, field)] = cfg


def config_of_endpoint(endpoint: str) -> KhazadConfig | None:
    """The test config (written or read in this process) that owns ``endpoint``."""
    return _CONFIG_BY_ENDPOINT.get(endpoint)


#: The ``[gateway]`` settings the tests use against a simulator (fast reconnects, bounded connects and sweeps).
GATEWAY_TEST_SETTINGS: dict[str, Any] = {
    "mode": "sim", "client_id": 7, "reconnect_initial_s": 0.1, "reconnect_max_s": 0.5, "connect_timeout_s": 5.0,
    "kill_verify_timeout_s": 15.0,
}


def gateway_extra(port: int, **overrides: Any) -> str:
    """A ``[gateway]`` section for write_config(extra=...) pointing at a simulator port; an override of None
    leaves that key at the configuration's default."""
    values: dict[str, Any] = {**GATEWAY_TEST_SETTINGS, "port": port, **overrides}
    lines = ["[gateway]"]
    for k, v in values.items():
        if v is None:
            continue
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


#: ``[orders]`` for the order manager's tests: short timeouts towards its peers (a silent double is found fast).
ORDERS_EXTRA = """
[orders]
risk_timeout_s = 0.5
gateway_timeout_s = 1.0
orphan_timeout_s = 30.0
snapshot_timeout_s = 1.0
"""
