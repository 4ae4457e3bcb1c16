"""Configuration: the commented default khazad.toml, environment overrides, and errors that name the bad key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig, load_config
from tests.support.config import REPO
from tests.support.processes import ActorProcess
from tests.support.programs import PROBE_ACTOR

DEFAULT_TOML = REPO / "khazad.toml"
#: Keys the loader fills itself, and open tables (their entries are user-chosen names).
NOT_IN_FILE = {"base_dir"}
OPEN_TABLES = {"risk.strategies"}
#: A process that fails its configuration must exit at once (not after a start-up timeout).
CONFIG_EXIT_TIMEOUT_S = 15.0


def _fields(cls: type, prefix: str = "") -> dict[str, Any]:
    """{dotted key: default} for every leaf field of a config struct (sub-structs flattened)."""
    out: dict[str, Any] = {}
    default = cls()
    for f in msgspec.structs.fields(cls):
        key = f"{prefix}{f.name}"
        if key in NOT_IN_FILE or key in OPEN_TABLES:
            continue
        value = getattr(default, f.name)
        if isinstance(value, msgspec.Struct):
            out.update(_fields(type(value), f"{key}."))
        else:
            out[key] = value
    return out


def _keys_in_file(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in OPEN_TABLES:
            keys |= _keys_in_file(v, f"{key}.")
        else:
            keys.add(key)
    return keys


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "khazad.toml"
    path.write_text(text)
    return path


def test_default_config_file_loads_to_exactly_the_defaults() -> None:
    cfg = load_config(DEFAULT_TOML, env={})
    assert msgspec.structs.replace(cfg, base_dir="") == KhazadConfig()
    assert cfg.run_path == REPO / "run"


def test_default_config_file_names_every_key() -> None:
    in_file = _keys_in_file(tomllib.loads(DEFAULT_TOML.read_text()))
    in_code = set(_fields(KhazadConfig))
    assert in_code - in_file == set(), "bus/config_sections.py keys missing from khazad.toml (add them with a comment)"
    assert in_file - in_code == set(), "khazad.toml keys that bus/config_sections.py does not know"


def test_default_config_file_comments_every_key() -> None:
    previous = ""
    uncommented = []
    section = ""
    for line in DEFAULT_TOML.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]") + "."
        elif "=" in stripped and not stripped.startswith("#") and not previous.startswith("#"):
            uncommented.append(section + stripped.split("=", 1)[0].strip())
        if stripped:
            previous = stripped
    assert uncommented == []


def test_environment_overrides_values_and_endpoints(tmp_path: Path) -> None:
    env = {
        "KHAZAD__GATEWAY__PORT": "4001",
        "KHAZAD__BUS__RISK": "tcp://127.0.0.1:6001",
        "KHAZAD__LOGGING__LEVEL": "DEBUG",  # not TOML: taken as a string
        "KHAZAD__RISK__LIMITS__MAX_ORDER_QUANTITY": "5",
        "KHAZAD__RISK__STRATEGIES__ALPHA__MAX_POSITION": "7",
        "KHAZAD__BUS__CURVE__KEY_NAME": '"probe"',
        "UNRELATED": "1",
    }
    cfg = load_config(DEFAULT_TOML, env=env)
    assert cfg.gateway.port == 4001 and cfg.bus.risk == "tcp://127.0.0.1:6001" and cfg.logging.level == "DEBUG"
    assert cfg.risk.limits.max_order_quantity == 5 and cfg.risk.strategies["alpha"].max_position == 7
    assert cfg.bus.curve.key_name == "probe"


def test_config_is_frozen() -> None:
    cfg = load_config(DEFAULT_TOML, env={})
    with pytest.raises(AttributeError):
        cfg.gateway.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("text", "named"), [
    ("[gateway]\nprot = 4001\n", "gateway.prot: unknown key"),
    ("[bus.curve]\nenabld = true\n", "bus.curve.enabld: unknown key"),
    ("nonsense = 1\n", "nonsense: unknown key"),
    ('[gateway]\nport = "x"\n', "gateway.port: Expected `int`, got `str`"),
    ("[gateway]\nport = 70000\n", "gateway.port"),
    ('[gateway]\nmode = "production"\n', "gateway.mode"),
    ("[bus]\nheartbeat_liveness = 0\n", "bus.heartbeat_liveness"),
    ("[bus]\nrequest_timeout_s = -1\n", "bus.request_timeout_s"),
    ("[risk.limits]\nmax_order_quantity = -1\n", "risk.limits.max_order_quantity"),
    ('[risk.strategies.alpha]\nmax_position = "lots"\n', "risk.strategies.alpha.max_position"),
    ("[risk.strategies.alpha]\nmax_postion = 5\n", "risk.strategies.alpha.max_postion: unknown key"),
    ('[bus]\ngateway = "tcp://10.1.2.3:5560"\n', "bus.gateway"),
    ('[bus]\nproxy_frontend = "not an endpoint"\n', "bus.proxy_frontend"),
    ("x = [\n", "not valid TOML"),
])
def test_bad_key_or_value_raises_config_error_naming_it(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env={})
    assert named in str(info.value)


def test_bad_environment_override_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT_TOML, env={"KHAZAD__GATEWAY__PORT": "abc"})
    assert "gateway.port" in str(info.value) and "KHAZAD__GATEWAY__PORT" in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize("module", ["bus.proxy", PROBE_ACTOR])
def test_process_with_bad_config_exits_78_naming_the_key(tmp_path: Path, module: str,
                                                          processes: list[ActorProcess]) -> None:
    path = _write(tmp_path, "[bus]\nheartbeat_liveness = 0\n")
    proc = ActorProcess(module, path, name="bad-config").start()
    processes.append(proc)
    assert proc.wait(CONFIG_EXIT_TIMEOUT_S) == EXIT_CONFIG
    assert "bus.heartbeat_liveness" in proc.log()

