"""The gateway's durable state: the halt latch (survives restarts) and the executions already published.

Two files next to each other (``gateway.state_file``, e.g. ``run/state/gateway.json``):

* ``gateway.json`` - :class:`GatewayState`: halted scopes, the epoch, kills whose cancel sweep has not been
  confirmed yet. Written atomically (temp file, fsync, rename, fsync of the directory) *before* the gateway acts
  on a kill, so a gateway killed mid-sweep comes back HALTED and finishes the sweep.
* ``gateway.execs.jsonl`` - :class:`ExecJournal`: one line per execution (and per commission report) the
  gateway has published, and per orderRef it placed (written before the order goes to IB: at most once). After a
  restart the gateway asks IB for the day's executions and publishes only those not in the journal, so a fill is
  never lost and, barring a crash in the microseconds between publishing and journalling, never published twice
  (consumers de-duplicate by ``exec_key`` as well).

A state file that cannot be read is not guessed around: :meth:`StateStore.load` raises :class:`StateCorrupt`
and the gateway starts HALTED with a critical alert (an operator resumes explicitly).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec
from loguru import logger

from bus.files import PRIVATE_MODE

STATE_VERSION = 1
#: How long published execution ids are remembered (IB serves at most 7 days of executions).
EXEC_RETENTION_S = 8 * 24 * 3600
#: Rewrite the journal at start-up when this many lines were pruned.
COMPACT_MIN_PRUNED = 1000

FILL = "f"
COMMISSION = "c"
#: an orderRef the gateway handed to IB: a retried SubmitOrder after a gateway restart must not place it again,
#: even when IB no longer lists it (cancelled orders leave the open-order list)
PLACED = "o"


class HaltRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One latched scope (``all``, ``strategy:<id>``, ``symbol:<sym>``)."""

    scope: str
    epoch: int
    reason: str = ""
    origin: str = ""
    kill_id: str = ""
    wall_ns: int = 0


class PendingSweep(msgspec.Struct, frozen=True, kw_only=True):
    """A kill or emergency cancel whose sweep has not been confirmed (finish it after a restart)."""

    command_id: str
    scope: str
    kind: str = "kill"
    reason: str = ""
    wall_ns: int = 0
    #: a kill --keep-protective: its sweep spares the stops that protect open positions
    keep_protective: bool = False


class GatewayState(msgspec.Struct, frozen=True, kw_only=True):
    version: int = STATE_VERSION
    epoch: int = 0
    halted: list[HaltRecord] = []
    pending: list[PendingSweep] = []
    updated_wall_ns: int = 0


class StateCorrupt(Exception):
    """The state file exists but cannot be decoded."""


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE), "wb") as fh:
        os.fchmod(fh.fileno(), PRIVATE_MODE)  # private state, whatever the umask
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class StateStore:
    """Load/save :class:`GatewayState` as JSON (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(GatewayState)

    def load(self) -> GatewayState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return GatewayState()
        try:
            state = self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StateCorrupt(f"{self.path}: {exc}") from None
        if state.version != STATE_VERSION:
            raise StateCorrupt(f"{self.path}: state version {state.version}, expected {STATE_VERSION}")
        return state

    def save(self, state: GatewayState) -> None:
        state = msgspec.structs.replace(state, updated_wall_ns=time.time_ns())
        atomic_write(self.path, self._encoder.encode(state) + b"\n")


class _JournalLine(msgspec.Struct, frozen=True, kw_only=True):
    k: str
    id: str
    t: int


class ExecJournal:
    """Append-only record of published execution ids (and commission reports).

    Each id is written to the file (``write(2)``, so a killed process loses nothing) right after it is
    published; :meth:`flush` fsyncs in batches (what a power loss could cost is a duplicate, which consumers
    drop by ``exec_key``)."""

    def __init__(self, path: Path, *, retention_s: float = EXEC_RETENTION_S) -> None:
        self.path = path
        self.retention_s = retention_s
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_JournalLine)
        self._fd: int | None = None
        self._unsynced = 0
        self.fills: dict[str, int] = {}
        self.commissions: dict[str, int] = {}
        self.placed: dict[str, int] = {}
        self._by_kind = {FILL: self.fills, COMMISSION: self.commissions, PLACED: self.placed}

    def load(self) -> None:
        """Read the journal, dropping entries past retention (and a torn last line after a crash)."""
        self.close()
        for entries in self._by_kind.values():
            entries.clear()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        cutoff = time.time_ns() - int(self.retention_s * 1e9)
        pruned = 0
        bad = 0
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                entry = self._decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                bad += 1
                continue
            if entry.t < cutoff:
                pruned += 1
                continue
            kind = self._by_kind.get(entry.k)
            if kind is not None:
                kind[entry.id] = entry.t
        if bad:
            logger.warning("gateway: exec journal {} had {} unreadable line(s) (a torn write); ignored", self.path, bad)
        if pruned >= COMPACT_MIN_PRUNED or bad:
            self.compact()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
            os.fchmod(self._fd, PRIVATE_MODE)  # an older run may have left it looser
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            try:
                if self._unsynced:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
                self._unsynced = 0

    def compact(self) -> None:
        self.close()
        lines = [
            self._encoder.encode(_JournalLine(k=k, id=i, t=t))
            for k, entries in self._by_kind.items()
            for i, t in entries.items()
        ]
        atomic_write(self.path, b"".join(line + b"\n" for line in lines))

    def has_fill(self, exec_id: str) -> bool:
        return exec_id in self.fills

    def has_commission(self, exec_id: str) -> bool:
        return exec_id in self.commissions

    def has_placed(self, order_ref: str) -> bool:
        return order_ref in self.placed

    def record(self, kind: str, exec_id: str) -> None:
        """Remember an id and write it to the file now; :meth:`flush` makes it durable."""
        now = time.time_ns()
        self._by_kind[kind][exec_id] = now
        os.write(self._open(), self._encoder.encode(_JournalLine(k=kind, id=exec_id, t=now)) + b"\n")
        self._unsynced += 1

    @property
    def dirty(self) -> bool:
        return self._unsynced > 0

    def flush(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0


def journal_path(state_path: Path) -> Path:
    """``gateway.json`` -> ``gateway.execs.jsonl`` (same directory)."""
    return state_path.with_name(f"{state_path.stem}.execs.jsonl")
