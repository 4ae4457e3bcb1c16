"""Observe durability: record every ``os.fsync`` (which file, how many bytes it held) and ``os.replace`` in order.

A state file written atomically must be fsynced *with its full content* before it is renamed over the old one, and
its directory fsynced after the rename; a test compares the recorded sequence with exactly that.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class DiskOps:
    """What happened, in order: ("fsync", path, size or None for a directory) and ("replace", src, dst)."""

    ops: list[tuple[str, str, object]] = field(default_factory=list)

    def names(self) -> list[tuple[str, str, object]]:
        """The ops with paths shortened to their file names (temp names vary with the pid)."""
        return [(op, Path(a).name, b if op == "fsync" else Path(str(b)).name) for op, a, b in self.ops]


def spy_on_disk(monkeypatch: pytest.MonkeyPatch) -> DiskOps:
    """Patch ``os.fsync`` and ``os.replace`` (everywhere: modules call them through ``os``) to record, then run
    the real call."""
    seen = DiskOps()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        seen.ops.append(("fsync", target, None if stat.S_ISDIR(st.st_mode) else st.st_size))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: object) -> None:
        seen.ops.append(("replace", str(src), str(dst)))
        real_replace(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def assert_atomic_durable_write(seen: DiskOps, path: Path) -> None:
    """Exactly: fsync of the temp file holding the whole new content, rename over ``path``, fsync of the folder."""
    assert len(seen.ops) == 3, seen.ops
    (op1, tmp, size), (op2, src, dst), (op3, folder, dsize) = seen.ops
    assert op1 == "fsync" and Path(tmp).parent == path.parent and Path(tmp) != path, seen.ops
    assert size == path.stat().st_size and size > 0, (size, path.stat().st_size)  # all of it, before the rename
    assert (op2, src, dst) == ("replace", tmp, str(path)), seen.ops
    assert (op3, folder, dsize) == ("fsync", str(path.parent), None), seen.ops
