"""Test configurations: a ``khazad.toml`` on free ports with its run dir under the test's tmp dir (and an approval
key), the ``[gateway]`` section that points the gateway at a test simulator, and the repository's root."""

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


def write_config(tmp: Path, *, extra: str = "", ports: dict[str, int] | None = None) -> Path:
    """Write a khazad.toml for a test: free ports everywhere, run_dir under ``tmp``, an approval key."""
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
    path = tmp / "khazad.toml"
    path.write_text(text)
    cfg = load_config(path, env={})
    write_approval_key(cfg.path(cfg.risk.approval_key_file))
    return path


def cfg_of(path: Path) -> KhazadConfig:
    return load_config(path, env={})


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
