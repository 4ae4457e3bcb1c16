"""Protocol trace: one line per message in each direction.

Line format (fields separated by ``|`` so commas inside values stay readable)::

    <seq> <sim-time> <dir> c<conn> <message-name> |field|field|...

``dir`` is ``<`` for client -> server and ``>`` for server -> client;
connection events use ``*``.  Lines carry the simulated time and a
connection counter, never wall-clock time or port numbers, so with the
manual clock two runs with the same seed and the same requests produce
byte-identical traces.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, TextIO


class ProtocolTrace:
    """Writes trace lines to a file (or any text stream)."""

    def __init__(self, target: str | Path | TextIO) -> None:
        if isinstance(target, (str, Path)):
            self._stream: TextIO = open(target, "w", encoding="utf-8", newline="\n")
            self._owned = True
        else:
            self._stream = target
            self._owned = False
        self._seq = 0

    @staticmethod
    def _time(ts: float) -> str:
        dt = datetime.fromtimestamp(ts, timezone.utc)
        return dt.strftime("%Y%m%dT%H%M%S.") + f"{dt.microsecond // 1000:03d}"

    def _write(self, ts: float, direction: str, conn_id: int, name: str,
               fields: Iterable[object]) -> None:
        self._seq += 1
        body = "|".join(str(f) for f in fields)
        self._stream.write(f"{self._seq:07d} {self._time(ts)} {direction} c{conn_id} {name} |{body}\n")

    def incoming(self, ts: float, conn_id: int, name: str, fields: Iterable[object]) -> None:
        self._write(ts, "<", conn_id, name, fields)

    def outgoing(self, ts: float, conn_id: int, name: str, fields: Iterable[object]) -> None:
        self._write(ts, ">", conn_id, name, fields)

    def event(self, ts: float, conn_id: int, what: str, detail: str = "") -> None:
        self._write(ts, "*", conn_id, what, [detail] if detail else [])

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._stream.close()


class MemoryTrace(ProtocolTrace):
    """A trace kept in memory (tests read it with ``getvalue``)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())

    def getvalue(self) -> str:
        assert isinstance(self._stream, io.StringIO)
        return self._stream.getvalue()
