"""CURVE encryption and authentication for every tcp endpoint (ZAP with an allow-list of public keys).

Keys live in ``<run_dir>/<bus.curve.keys_dir>`` as ZeroMQ certificate files made by ``khazad keys``:
``<name>.key`` (public, with metadata ``role`` and ``name``) and ``<name>.key_secret`` (secret, mode 0600).
Every ``*.key`` in the directory is an allowed client; copy a remote operator's ``.key`` (public only) in to
allow it. Roles:

* ``actor``: Khazad's own processes (every actor of :data:`bus.registry.ACTORS`);
* ``strategy``: a strategy process; its key's ``name`` *is* its strategy id;
* ``operator``: a human or tool allowed to kill, resume and change limits.

The ZAP handler maps an accepted key to the User-Id ``<role>:<name>``; services read it from the frame
(``CallContext.user_id``) and authorise with it, never with what the message claims (see ``bus/authz.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from bus.config import ConfigError, KhazadConfig
from bus.registry import ROLES

#: ZAP domain of every Khazad server socket
ZAP_DOMAIN = "khazad"


@dataclass(frozen=True)
class KeyInfo:
    name: str
    role: str
    public: bytes


def keys_dir(cfg: KhazadConfig) -> Path:
    return cfg.path(cfg.bus.curve.keys_dir)


def create_key(directory: Path, name: str, role: str) -> tuple[Path, Path]:
    """Create a key pair ``<name>.key``/``<name>.key_secret`` (refuses to overwrite an existing pair)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if not name or any(c in name for c in "/\\:. "):
        raise ValueError(f"key name {name!r} must be a plain identifier")
    directory.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public_path.exists() or secret_path.exists():
        raise FileExistsError(f"{public_path} already exists; remove it first to rotate the key")
    public, secret = zmq.curve_keypair()
    meta = f'metadata\n    role = "{role}"\n    name = "{name}"\n'
    public_path.write_text(
        f'#   Khazad CURVE public key ({role} {name})\n{meta}curve\n    public-key = "{public.decode()}"\n'
    )
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"#   Khazad CURVE SECRET key ({role} {name}): never share this file\n{meta}curve\n"
            f'    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n'
        )
    return public_path, secret_path


def _metadata(path: Path) -> dict[str, str]:
    meta: dict[str, str] = {}
    in_meta = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped == "metadata":
            in_meta = True
            continue
        if stripped == "curve":
            in_meta = False
        if in_meta and "=" in stripped:
            k, _, v = stripped.partition("=")
            meta[k.strip()] = v.strip().strip('"')
    return meta


def load_allowed(directory: Path) -> dict[bytes, KeyInfo]:
    """Every public key in the directory, by z85 key."""
    allowed: dict[bytes, KeyInfo] = {}
    for path in sorted(directory.glob("*.key")):
        public, _ = zmq.auth.load_certificate(str(path))
        meta = _metadata(path)
        role = meta.get("role", "")
        name = meta.get("name", path.stem)
        if role not in ROLES:
            continue  # a key without a known role authorises nothing
        allowed[public] = KeyInfo(name=name, role=role, public=public)
    return allowed


class _KhazadAuthenticator(ThreadAuthenticator):
    """ZAP handler: allow only listed keys; User-Id ``<role>:<name>``."""

    def __init__(self, context: zmq.Context, allowed: dict[bytes, KeyInfo]) -> None:
        super().__init__(context=context, log=logging.getLogger("khazad.zap"))
        self._allowed_keys = allowed

        class _Provider:
            def callback(_self, domain: str, key: bytes) -> bool:
                return key in allowed

        self.configure_curve_callback(ZAP_DOMAIN, _Provider())

    def curve_user_id(self, client_public_key: bytes) -> str:
        info = self._allowed_keys.get(zmq.utils.z85.encode(client_public_key))
        return f"{info.role}:{info.name}" if info else ""


@dataclass
class Security:
    """This process's CURVE identity and the server keys it trusts. ``enabled`` False = plain tcp (loopback)."""

    enabled: bool
    name: str = ""
    public: bytes = b""
    secret: bytes = b""
    directory: Path | None = None
    allowed: dict[bytes, KeyInfo] = field(default_factory=dict)
    _auth: _KhazadAuthenticator | None = None

    @classmethod
    def disabled(cls) -> Security:
        return cls(enabled=False)

    @classmethod
    def for_process(cls, cfg: KhazadConfig, name: str) -> Security:
        """Load ``<keys_dir>/<key_name or name>.key_secret`` and the allow-list; ConfigError if missing."""
        if not cfg.bus.curve.enabled:
            return cls.disabled()
        directory = keys_dir(cfg)
        key_name = cfg.bus.curve.key_name or name
        secret_path = directory / f"{key_name}.key_secret"
        if not secret_path.exists():
            raise ConfigError(
                f"bus.curve: no key pair for {key_name!r} in {directory} "
                f"(create it with `khazad keys create {key_name} --role ...`)"
            )
        public, secret = zmq.auth.load_certificate(str(secret_path))
        if secret is None:
            raise ConfigError(f"bus.curve: {secret_path} holds no secret key")
        return cls(
            enabled=True,
            name=key_name,
            public=public,
            secret=secret,
            directory=directory,
            allowed=load_allowed(directory),
        )

    def start_authenticator(self, ctx: zmq.Context) -> None:
        """Start the ZAP handler on ``ctx`` (needed by any process that binds a CURVE server socket)."""
        if not self.enabled or self._auth is not None:
            return
        base = zmq.Context.shadow(ctx.underlying) if type(ctx) is not zmq.Context else ctx
        self._auth = _KhazadAuthenticator(base, self.allowed)
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
            raise ConfigError(f"bus.curve: no public key for {service!r} in {self.directory}")
        public, _ = zmq.auth.load_certificate(str(path))
        return public


def client_security(cfg: KhazadConfig, key_name: str) -> Security | None:
    """CURVE identity of a client process (a strategy, the CLI, the dashboard) when the bus requires it: the key
    pair ``bus.curve.key_name`` or ``key_name`` (a strategy's key is named after its strategy id); None on a plain
    loopback bus."""
    if not cfg.bus.curve.enabled:
        return None
    return Security.for_process(cfg, key_name)
