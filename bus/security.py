"""CURVE encryption and authentication of every bus endpoint, on by default (loopback included).

Key pairs live in the keys directory (``<run_dir>/<bus.curve.keys_dir>``, default ``<run_dir>/keys``) as ZeroMQ
certificate files: ``<name>.key`` (public) and ``<name>.key_secret`` (secret, mode 0600; refused if group or others
may read it). A process uses the pair named ``bus.curve.key_name`` or, by default, its own name: an actor its actor
name, a strategy (the SDK) its strategy id, the CLI ``operator``.

Who may connect, and as whom, is the operator's allow-list (:mod:`bus.allowlist`, ``<keys_dir>/allow.toml``), never
the key files: every server socket (each service's ROUTER, the proxy's XSUB and XPUB) runs a ZAP handler that admits
only keys on the list, reading the file afresh for each new connection. CURVE authenticates only at the handshake,
so a service re-checks the caller's key for every request and the proxy for every published message
(:class:`~bus.allowlist.AllowList` re-reads a changed file at most every :data:`~bus.allowlist.REFRESH_S`): a key
removed from the list is refused from then on without a restart. Roles:

* ``actor``: Khazad's own processes (every actor of :data:`bus.registry.ACTORS`);
* ``strategy``: a strategy process; the allow-list entry names the strategy ids it may act for;
* ``operator``: a human or tool allowed to kill, resume and change limits.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from bus import allowlist, registry
from bus.allowlist import AllowList, Principal, allow_path, check_name
from bus.config import ConfigError, KhazadConfig
from bus.registry import ACTOR_ROLE, OPERATOR_ROLE, ROLES, STRATEGY_ROLE

#: ZAP domain of every Khazad server socket
ZAP_DOMAIN = "khazad"
#: the key pair the CLI (and `khazad run`'s health check) uses unless bus.curve.key_name names another
OPERATOR_KEY = "operator"
#: the public keys a client needs: the proxy's and every service's (the actors that bind a server socket)
SERVER_KEYS: tuple[str, ...] = registry.ACTOR_NAMES


def keys_dir(cfg: KhazadConfig) -> Path:
    return cfg.path(cfg.bus.curve.keys_dir)


def create_key(directory: Path, name: str) -> tuple[Path, Path]:
    """Create a key pair ``<name>.key``/``<name>.key_secret`` (mode 0600; refuses to overwrite an existing pair).
    The files carry no role: that is the allow-list's (:func:`allow`)."""
    check_name(name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public_path.exists() or secret_path.exists():
        raise FileExistsError(f"{public_path} already exists; remove it first to rotate the key")
    public, secret = zmq.curve_keypair()
    note = "#   Khazad CURVE {} key {}: its role comes from the server's allow-list, not from this file\n"
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(note.format("public", name) + f'curve\n    public-key = "{public.decode()}"\n')
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            note.format("SECRET", name).replace("\n", ": never share this file\n")
            + f'curve\n    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n'
        )
    return public_path, secret_path


def public_key_of(path: Path) -> str:
    """The z85 public key in a ``.key`` (or ``.key_secret``) file."""
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a CURVE key file ({exc})") from None
    return public.decode()


def allow(directory: Path, name: str, role: str, public_key: str, strategies: list[str] | None = None) -> Principal:
    """Add (or replace) the allow-list entry ``name`` (the operator's decision: role and strategies are set here)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    check_name(name)
    if strategies and role != STRATEGY_ROLE:
        raise ValueError("only a strategy key lists strategies")
    for sid in strategies or ():
        check_name(sid)
    sids = frozenset(strategies or ([name] if role == STRATEGY_ROLE else []))
    principal = Principal(name=name, role=role, public_key=public_key, strategies=sids)
    with allowlist.editing(allow_path(directory)) as entries:
        clash = next((p.name for p in entries.values() if p.public_key == public_key and p.name != name), None)
        if clash:
            raise ValueError(f"that public key is already allowed as {clash!r}")
        entries[name] = principal
    return principal


def revoke(directory: Path, name: str) -> Principal | None:
    """Remove the allow-list entry ``name`` (the key files stay); the removed entry, or None if there was none."""
    with allowlist.editing(allow_path(directory)) as entries:
        return entries.pop(name, None)


def issue(keys: Path, out: Path, name: str) -> tuple[Path, Path]:
    """Create ``name``'s key pair in ``out`` with copies of the servers' public keys from ``keys`` and nothing else:
    what a strategy or operator on its own account (or host) needs to connect."""
    public, secret = create_key(out, name)
    for server in SERVER_KEYS:
        src = keys / f"{server}.key"
        if src.exists() and src.resolve() != (out / src.name).resolve():
            shutil.copyfile(src, out / src.name)
    return public, secret


def ensure_keys(cfg: KhazadConfig, strategies: tuple[str, ...] = (), operator: str = OPERATOR_KEY) -> list[str]:
    """What ``khazad run`` and ``khazad keys init`` do before anything starts: a key pair for every actor, the
    operator and the given strategies where missing, and their allow-list entries. Actors' entries always follow
    their key files; the operator's and a strategy's entry is added only with a new key pair, or on the first
    start (no allow-list yet), so an entry the operator removed stays removed. Returns ``role:name`` created."""
    directory = keys_dir(cfg)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    first = not allow_path(directory).exists()
    made: list[str] = []
    wanted = [(n, ACTOR_ROLE) for n in registry.ACTOR_NAMES] + [(check_name(operator), OPERATOR_ROLE)]
    wanted += [(check_name(s), STRATEGY_ROLE) for s in strategies]
    with allowlist.editing(allow_path(directory)) as entries:
        for name, role in wanted:
            created = not (directory / f"{name}.key_secret").exists()
            if created:
                create_key(directory, name)
                made.append(f"{role}:{name}")
            public = public_key_of(directory / f"{name}.key_secret")
            if role == ACTOR_ROLE or created or first:
                entry = entries.get(name)
                if entry is None or entry.public_key != public or entry.role != role:
                    sids = frozenset([name]) if role == STRATEGY_ROLE else frozenset()
                    entries[name] = Principal(name=name, role=role, public_key=public, strategies=sids)
    return made


class _KhazadAuthenticator(ThreadAuthenticator):
    """ZAP handler: admit only keys on the allow-list (read afresh per handshake); User-Id = the z85 public key,
    which services and the proxy map to a :class:`~bus.allowlist.Principal` per request or message."""

    def __init__(self, context: zmq.Context, allowed: AllowList) -> None:
        super().__init__(context=context, log=logging.getLogger("khazad.zap"))

        class _Provider:
            def callback(_self, domain: str, key: bytes) -> bool:
                return allowed.admits(key)

        self.configure_curve_callback(ZAP_DOMAIN, _Provider())


@dataclass
class Security:
    """This process's CURVE identity and where it finds the server keys; for a server, the allow-list too.
    ``enabled`` False = plain tcp (only when a configuration turns CURVE off explicitly)."""

    enabled: bool
    name: str = ""
    public: bytes = b""
    secret: bytes = b""
    directory: Path | None = None
    _allow: AllowList | None = None
    _auth: _KhazadAuthenticator | None = None

    @classmethod
    def disabled(cls) -> Security:
        return cls(enabled=False)

    @classmethod
    def for_process(cls, cfg: KhazadConfig, name: str) -> Security:
        """Load ``<keys_dir>/<key_name or name>.key_secret``; ConfigError if missing or readable by others."""
        if not cfg.bus.curve.enabled:
            return cls.disabled()
        directory = keys_dir(cfg)
        key_name = cfg.bus.curve.key_name or name
        secret_path = directory / f"{key_name}.key_secret"
        if not secret_path.exists():
            raise ConfigError(
                f"bus.curve: no key pair for {key_name!r} in {directory} "
                f"(create it with `khazad keys create {key_name} --role ...` on the serving host)"
            )
        mode = stat.S_IMODE(secret_path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"bus.curve: {secret_path} is readable by others (mode {mode:04o}): chmod 600 it")
        public, secret = zmq.auth.load_certificate(str(secret_path))
        if secret is None:
            raise ConfigError(f"bus.curve: {secret_path} holds no secret key")
        return cls(enabled=True, name=key_name, public=public, secret=secret, directory=directory)

    @property
    def allow_list(self) -> AllowList:
        """The operator's allow-list (servers only); ConfigError if missing or writable by others."""
        if self._allow is None:
            assert self.directory is not None
            self._allow = AllowList(allow_path(self.directory))
        return self._allow

    def principal(self, user_id: str) -> Principal | None:
        """Who sent a frame whose ZAP User-Id is ``user_id``, by the allow-list as it is now (None: not allowed)."""
        return self.allow_list.principal(user_id) if user_id else None

    def start_authenticator(self, ctx: zmq.Context) -> None:
        """Start the ZAP handler on ``ctx`` (needed by any process that binds a CURVE server socket)."""
        if not self.enabled or self._auth is not None:
            return
        allowed = self.allow_list
        base = zmq.Context.shadow(ctx.underlying) if type(ctx) is not zmq.Context else ctx
        self._auth = _KhazadAuthenticator(base, allowed)
        self._auth.start()

    def stop_authenticator(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def make_server(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()

    def make_client(self, sock: zmq.Socket, server_key: str | bytes | None) -> None:
        if not server_key:
            raise ConfigError("bus.curve: connecting without the server's public key")
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key

    def server_key(self, service: str) -> bytes:
        """Public key of the actor that binds ``service`` (``proxy`` for the event bus)."""
        assert self.directory is not None
        path = self.directory / f"{service}.key"
        if not path.exists():
            raise ConfigError(
                f"bus.curve: no public key for {service!r} in {self.directory} (copy the serving host's {service}.key)"
            )
        return public_key_of(path).encode()


def client_security(cfg: KhazadConfig, key_name: str) -> Security | None:
    """CURVE identity of a client process (a strategy, the CLI, the dashboard): the key pair ``bus.curve.key_name``
    or ``key_name`` (a strategy's key is named after its strategy id); None when CURVE is turned off."""
    if not cfg.bus.curve.enabled:
        return None
    return Security.for_process(cfg, key_name)
