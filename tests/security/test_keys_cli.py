"""``khazad keys``: key pairs and the operator's allow-list (create, add, remove, list, init), and what
``khazad run`` provisions on first start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq

from bus.allowlist import allow_path, load
from bus.config import load_config
from bus.registry import ACTOR_NAMES
from bus.security import ensure_keys, keys_dir, public_key_of
from cli.main import main as khazad


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose run directory holds no keys yet."""
    path = tmp_path / "khazad.toml"
    path.write_text(f'run_dir = "{tmp_path / "run"}"\n')
    return path


def entries(config: Path) -> dict:
    return load(allow_path(keys_dir(load_config(config, env={}))))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_every_actor_an_operator_and_strategies_with_private_secrets(config: Path) -> None:
    assert khazad(["--config", str(config), "keys", "init", "--strategy", "momo"]) == 0
    allowed = entries(config)
    assert {n: p.role for n, p in allowed.items()} == {**{a: "actor" for a in ACTOR_NAMES}, "operator": "operator",
                                                        "momo": "strategy"}
    keys = keys_dir(load_config(config, env={}))
    assert all(mode(p) == 0o600 for p in keys.glob("*.key_secret"))
    assert mode(allow_path(keys)) == 0o644 and mode(keys) == 0o700
    assert "metadata" not in (keys / "momo.key").read_text()  # the key files carry no role


def test_create_writes_the_pair_and_its_entry(config: Path, capsys) -> None:
    assert khazad(["--config", str(config), "keys", "init"]) == 0
    assert khazad(["--config", str(config), "keys", "create", "momo", "--role", "strategy"]) == 0
    assert khazad(["--config", str(config), "keys", "create", "desk", "--role", "strategy",
                   "--strategies", "d1,d2"]) == 0
    keys = keys_dir(load_config(config, env={}))
    allowed = entries(config)
    assert allowed["momo"].strategies == frozenset({"momo"})
    assert allowed["momo"].public_key == public_key_of(keys / "momo.key")
    assert allowed["desk"].strategies == frozenset({"d1", "d2"})
    assert mode(keys / "momo.key_secret") == 0o600
    # an existing pair is never overwritten; an actor's name is not a strategy's
    assert khazad(["--config", str(config), "keys", "create", "momo", "--role", "strategy"]) == 2
    assert khazad(["--config", str(config), "keys", "create", "risk", "--role", "strategy"]) == 2
    assert khazad(["--config", str(config), "keys", "create", "alice", "--role", "operator",
                   "--strategies", "x"]) == 2
    capsys.readouterr()
    assert khazad(["--config", str(config), "keys", "list"]) == 0
    listed = {ln.split()[1]: ln.split()[0] for ln in capsys.readouterr().out.splitlines()}
    assert listed["momo"] == "strategy" and listed["desk"] == "strategy" and listed["orders"] == "actor"


def test_create_out_writes_only_what_the_strategy_needs(config: Path, tmp_path: Path) -> None:
    assert khazad(["--config", str(config), "keys", "init"]) == 0
    out = tmp_path / "for-momo"
    assert khazad(["--config", str(config), "keys", "create", "momo", "--role", "strategy", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["momo.key", "momo.key_secret", *(f"{a}.key" for a in ACTOR_NAMES)])
    assert mode(out / "momo.key_secret") == 0o600
    keys = keys_dir(load_config(config, env={}))
    assert entries(config)["momo"].public_key == public_key_of(out / "momo.key")
    assert not (keys / "momo.key_secret").exists()  # its secret is not in the servers' directory
    for a in ACTOR_NAMES:
        assert public_key_of(out / f"{a}.key") == public_key_of(keys / f"{a}.key")


def test_add_and_remove(config: Path, tmp_path: Path) -> None:
    assert khazad(["--config", str(config), "keys", "init"]) == 0
    public, _ = zmq.curve_keypair()
    elsewhere = tmp_path / "alice.key"
    elsewhere.write_text(f'curve\n    public-key = "{public.decode()}"\n')
    assert khazad(["--config", str(config), "keys", "add", "alice", "--role", "operator", "--public-key",
                   str(elsewhere)]) == 0
    bob, _ = zmq.curve_keypair()
    assert khazad(["--config", str(config), "keys", "add", "bob", "--role", "strategy", "--public-key",
                   bob.decode(), "--strategies", "b1"]) == 0
    allowed = entries(config)
    assert allowed["alice"].role == "operator" and allowed["alice"].public_key == public.decode()
    assert allowed["bob"].strategies == frozenset({"b1"})
    # one key, one identity
    assert khazad(["--config", str(config), "keys", "add", "carol", "--role", "operator", "--public-key",
                   bob.decode()]) == 2
    assert khazad(["--config", str(config), "keys", "remove", "alice"]) == 0
    assert "alice" not in entries(config)
    assert khazad(["--config", str(config), "keys", "remove", "alice"]) == 2
    assert khazad(["--config", str(config), "keys", "remove", "gateway"]) == 2  # an actor: only with --force
    assert "gateway" in entries(config)


def test_run_provisioning_restores_actors_but_keeps_a_revoked_operator_revoked(config: Path) -> None:
    cfg = load_config(config, env={})
    made = ensure_keys(cfg, strategies=("example",))
    assert "operator:operator" in made and "strategy:example" in made and len(made) == len(ACTOR_NAMES) + 2
    assert ensure_keys(cfg, strategies=("example",)) == []  # second start: nothing new
    assert khazad(["--config", str(config), "keys", "remove", "operator"]) == 0
    assert khazad(["--config", str(config), "keys", "remove", "orders", "--force"]) == 0
    ensure_keys(cfg, strategies=("example",))
    allowed = entries(config)
    assert "orders" in allowed and "operator" not in allowed  # the operator's decision stands


def test_a_secret_key_readable_by_others_is_refused(config: Path) -> None:
    from bus.config import ConfigError
    from bus.security import Security

    cfg = load_config(config, env={})
    ensure_keys(cfg)
    secret = keys_dir(cfg) / "operator.key_secret"
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        Security.for_process(cfg, "operator")
