"""CURVE keys for test configurations: every test config runs the authenticated bus (the default), so
:func:`tests.support.config.write_config` writes the key pairs of every actor, the operator, the strategies the tests
trade as (:data:`TEST_STRATEGIES`) and the test actors (:data:`TEST_ACTORS`), with the allow-list naming them. The
key material is made once per test session and copied into each config's keys directory (cheap)."""

from __future__ import annotations

import os
from pathlib import Path

import zmq

from bus import allowlist, registry
from bus.config import KhazadConfig
from bus.registry import ACTOR_ROLE, OPERATOR_ROLE, STRATEGY_ROLE
from bus.security import OPERATOR_KEY, keys_dir

#: strategy ids the tests trade as (a strategy key each, acting for itself)
TEST_STRATEGIES = (
    "example", "s1", "s2", "momo", "other", "cs1", "e2e1", "e2e2", "e2e3", "chaos_a", "chaos_b", "chaos_probe",
    "bench", "demo", "ex1", "ex2", "memory", "flood", "alpha", "beta", "latecomer", "logs", "leaver", "killed",
    "termed", "tick", "opt", "es-june", "es-march",
)
#: test actors that run under their own name with an actor key (tests/support/programs/probe_actor.py)
TEST_ACTORS = ("probe", "probe2", "recorder", "tester")
#: the actor key a test process publishes with (an actor may publish any ``alert.*`` topic; bus.topics.PUBLISHERS)
TEST_PUBLISHER = "tester"
#: key pairs made once per session: name -> (public z85, secret z85)
_SESSION_KEYS: dict[str, tuple[str, str]] = {}


def _keypair(name: str) -> tuple[str, str]:
    if name not in _SESSION_KEYS:
        public, secret = zmq.curve_keypair()
        _SESSION_KEYS[name] = (public.decode(), secret.decode())
    return _SESSION_KEYS[name]


def write_key_files(directory: Path, name: str, public: str, secret: str | None) -> None:
    """``<name>.key`` (and ``<name>.key_secret``, mode 0600, when ``secret`` is given) as `khazad keys` writes them."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / f"{name}.key").write_text(f'curve\n    public-key = "{public}"\n')
    if secret is not None:
        path = directory / f"{name}.key_secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'curve\n    public-key = "{public}"\n    secret-key = "{secret}"\n')


def provision_keys(cfg: KhazadConfig, *, strategies: tuple[str, ...] = (), actors: tuple[str, ...] = ()) -> None:
    """The keys directory of a test config: every actor's, the operator's, the test strategies' and the test
    actors' key pairs (session material) and the allow-list naming them."""
    directory = keys_dir(cfg)
    wanted = [(n, ACTOR_ROLE) for n in (*registry.ACTOR_NAMES, *TEST_ACTORS, *actors)]
    wanted += [(OPERATOR_KEY, OPERATOR_ROLE)] + [(s, STRATEGY_ROLE) for s in (*TEST_STRATEGIES, *strategies)]
    principals = []
    for name, role in dict.fromkeys(wanted):
        public, secret = _keypair(name)
        write_key_files(directory, name, public, secret)
        sids = frozenset({name}) if role == STRATEGY_ROLE else frozenset()
        principals.append(allowlist.Principal(name=name, role=role, public_key=public, strategies=sids))
    allowlist.write(allowlist.allow_path(directory), principals)
