"""The operator's allow-list: which CURVE public keys this host's bus admits, and as whom.

One TOML file, ``<keys_dir>/allow.toml``, written by ``khazad keys`` (or by hand) and by nobody else::

    [keys.orders]
    role = "actor"
    public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

    [keys.momo]
    role = "strategy"
    public_key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    strategies = ["momo", "momo-eu"]

Identity, role and the strategies a key may act for come **only** from here, never from anything the key's owner
wrote (a public key file's comments or metadata are not read). The file must be owned by the user running Khazad
(or root) and writable by nobody else, and so must its directory: anything looser is refused at start.

Keys are looked up by their z85 text (the ZAP User-Id, see :mod:`bus.security`). The file is re-read when it
changes: a new connection's handshake always sees the file as it is now, a request or a published message sees it
at most :data:`REFRESH_S` old. A broken or insecure edit while running keeps the last good list (and says so).
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from loguru import logger
from msgspec import Meta

from bus.config import ConfigError
from bus.registry import ACTOR_NAMES, ACTOR_ROLE, ROLES, STRATEGY_ROLE

#: the allow-list's file name inside the keys directory
ALLOW_FILE = "allow.toml"
#: a request or a published message sees the allow-list at most this old (a stat every REFRESH_S, not per message)
REFRESH_S = 0.2
#: key names: a strategy's key is named after its strategy id, so the same alphabet (``bus.messages.StrategyId``)
NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,32}$"
#: a CURVE public key in z85 text: 40 characters
Z85_KEY_PATTERN = r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$"
_NAME_RE = re.compile(NAME_PATTERN)

Role = Literal["actor", "strategy", "operator"]
assert set(Role.__args__) == set(ROLES)  # type: ignore[attr-defined]  # one list of roles (bus.registry)


class Entry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[keys.<name>]`` table."""

    role: Role
    public_key: Annotated[str, Meta(pattern=Z85_KEY_PATTERN)]
    #: the strategy ids a strategy key may act for (default: its own name); empty for other roles
    strategies: list[Annotated[str, Meta(pattern=NAME_PATTERN)]] = []


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection is, as the allow-list says: ``<role>:<name>`` and, for a strategy, its strategy ids."""

    name: str
    role: str
    public_key: str
    strategies: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        return f"{self.role}:{self.name}"

    def acts_for(self, strategy_id: str) -> bool:
        """May this principal act for ``strategy_id``? Strategies only for their own ids; others for any."""
        return self.role != STRATEGY_ROLE or strategy_id in self.strategies

    def owns_name(self, name: str) -> bool:
        """Is ``name`` one this principal may use for itself (a heartbeat, a gap report, a market-data
        subscriber)? Its key name; a strategy also ``<id>`` and ``strategy.<id>`` (the SDK's default name)."""
        if name == self.name:
            return True
        if self.role != STRATEGY_ROLE:
            return False
        return name in self.strategies or (name.startswith("strategy.") and name[9:] in self.strategies)


def allow_path(keys_dir: Path) -> Path:
    return keys_dir / ALLOW_FILE


def check_private(path: Path, what: str) -> os.stat_result:
    """Refuse a file or directory that someone other than us (or root) owns or that group/others may write."""
    st = path.stat()
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{what} {path} is owned by uid {st.st_uid}, not by the operator (uid {os.geteuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"only the operator may write it (chmod go-w {path})"
        )
    return st


def parse(text: str, where: str = ALLOW_FILE) -> dict[str, Principal]:
    """The principals of an allow-list text, by name; ConfigError naming the bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - {"keys"}
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {sorted(unknown)}; entries are [keys.<name>]")
    tables = data.get("keys", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: keys must be a table of [keys.<name>] entries")
    out: dict[str, Principal] = {}
    seen: dict[str, str] = {}
    for name, table in tables.items():
        if not _NAME_RE.match(name):
            raise ConfigError(f"{where}: keys.{name}: a key name is 1-32 of A-Z a-z 0-9 _ -")
        try:
            entry = msgspec.convert(table, Entry)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{where}: keys.{name}: {exc}") from None
        if entry.public_key in seen:
            raise ConfigError(f"{where}: keys.{name} has the same public key as keys.{seen[entry.public_key]}")
        if entry.strategies and entry.role != STRATEGY_ROLE:
            raise ConfigError(f"{where}: keys.{name}: only a strategy key lists strategies")
        if name in ACTOR_NAMES and entry.role != ACTOR_ROLE:
            raise ConfigError(f"{where}: keys.{name}: {name!r} is an actor's name; its role can only be actor")
        reserved = sorted(set(entry.strategies) & set(ACTOR_NAMES))
        if reserved:
            raise ConfigError(f"{where}: keys.{name}: {reserved} are actors' names, not strategy ids")
        seen[entry.public_key] = name
        sids = frozenset(entry.strategies or ([name] if entry.role == STRATEGY_ROLE else []))
        out[name] = Principal(name=name, role=entry.role, public_key=entry.public_key, strategies=sids)
    return out


def render(principals: Iterable[Principal]) -> str:
    """The allow-list text (what :func:`parse` reads back), sorted by role then name."""
    lines = [
        "# Khazad allow-list: the CURVE keys this host's bus admits, and what each may do.",
        "# Only the operator writes this file (`khazad keys create|add|remove`); it must not be writable by",
        "# group or others. Changes apply to running processes without a restart.",
        "",
    ]
    for p in sorted(principals, key=lambda p: (ROLES.index(p.role), p.name)):
        lines += [f"[keys.{p.name}]", f'role = "{p.role}"', f'public_key = "{p.public_key}"']
        if p.role == STRATEGY_ROLE:
            lines.append("strategies = [" + ", ".join(f'"{s}"' for s in sorted(p.strategies)) + "]")
        lines.append("")
    return "\n".join(lines)


def load(path: Path) -> dict[str, Principal]:
    """Check the file's and its directory's ownership and mode, then parse it."""
    if not path.exists():
        raise ConfigError(
            f"no allow-list at {path}: create the keys with `khazad keys init` (or `khazad run`, which does it)"
        )
    check_private(path.parent, "the keys directory")
    check_private(path, "the allow-list")
    return parse(path.read_text(), str(path))


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


class AllowList:
    """The allow-list of one serving process, re-read when the file changes (thread-safe: the ZAP thread and the
    event loop share it). ``generation`` counts successful reloads."""

    def __init__(self, path: Path, refresh_s: float = REFRESH_S) -> None:
        self.path = path
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._by_name = load(path)
        self._by_key = {p.public_key: p for p in self._by_name.values()}
        self._sig = _signature(path.stat())
        self._next_check = time.monotonic() + refresh_s
        self._bad_sig: tuple[int, int, int, int] | None = None
        self.generation = 1

    def principal(self, key: str | bytes) -> Principal | None:
        """The principal of a z85 public key (None: not, or no longer, allowed); the file at most ``refresh_s``
        old."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        return self._by_key.get(key.decode() if isinstance(key, bytes) else key)

    def admits(self, key: str | bytes) -> bool:
        """For the ZAP handler: a new connection sees the file as it is now."""
        self.refresh()
        return (key.decode() if isinstance(key, bytes) else key) in self._by_key

    def by_name(self, name: str) -> Principal | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when a new list was loaded."""
        with self._lock:
            self._next_check = time.monotonic() + self.refresh_s
            try:
                sig = _signature(self.path.stat())
            except OSError as exc:
                return self._keep(None, f"cannot stat: {exc}")
            if sig == self._sig or sig == self._bad_sig:
                return False
            try:
                by_name = load(self.path)
            except (ConfigError, OSError) as exc:
                return self._keep(sig, str(exc))
            removed = sorted(set(self._by_name) - set(by_name))
            added = sorted(set(by_name) - set(self._by_name))
            self._by_name, self._by_key = by_name, {p.public_key: p for p in by_name.values()}
            self._sig, self._bad_sig = sig, None
            self.generation += 1
            logger.info(
                "allow-list {} reloaded (generation {}): {} key(s){}{}",
                self.path,
                self.generation,
                len(by_name),
                f", added {', '.join(added)}" if added else "",
                f", removed {', '.join(removed)}" if removed else "",
            )
            return True

    def _keep(self, sig: tuple[int, int, int, int] | None, why: str) -> bool:
        if sig is None or sig != self._bad_sig:  # say it once per bad version of the file
            logger.critical(
                "allow-list {}: keeping the last good list ({} keys): {}", self.path, len(self._by_name), why
            )
        self._bad_sig = sig
        return False


# -- writing (khazad keys, khazad run) -----------------------------------------------------------------------------


@contextmanager
def editing(path: Path) -> Iterator[dict[str, Principal]]:
    """Read-modify-write the allow-list under an exclusive lock; written atomically (mode 0644) when the block
    exits without an exception. A missing file starts empty (and its directory is created, mode 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = load(path) if path.exists() else {}
        yield current
        try:
            parse(render(current.values()), str(path))  # never write a list the servers would refuse
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        write(path, current.values())
    finally:
        os.close(fd)


def write(path: Path, principals: Iterable[Principal]) -> None:
    """Replace the file atomically (temp file + rename), mode 0644, owned by us."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(render(principals))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # whatever the umask said
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"key name {name!r} must be 1-32 of A-Z a-z 0-9 _ - (a strategy's key: its strategy id)")
    return name
