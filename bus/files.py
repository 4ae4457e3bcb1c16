"""Files that hold private state (the order journal, the audit trail, the actors' state files): readable and
writable by their owner only (mode 0600), whatever the umask, and tightened when an older run left them looser."""

from __future__ import annotations

import os
from pathlib import Path

#: owner read/write only
PRIVATE_MODE = 0o600
#: SQLite's companion files (WAL mode): they hold the same data as the database
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (created empty if missing; chmod if it is looser)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database file (and any companion file already there) with mode 0600. SQLite creates its WAL and
    shared-memory files with the database file's mode, so making the database private first covers them."""
    private_file(path)
    for suffix in SQLITE_SIDECARS:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.chmod(side, PRIVATE_MODE)
    return path
