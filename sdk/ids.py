"""Client order ids: strategy-prefixed, time-ordered, unique across processes (see :func:`new_client_order_id`)."""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time

_coid_lock = threading.Lock()
_coid_last_ns = 0
_coid_counter = itertools.count()
#: Distinguishes two processes of the same strategy that generate an id in the same nanosecond.
_COID_PROCESS_TAG = f"{os.getpid() % 0x10000:04x}{secrets.randbits(16):04x}"


def new_client_order_id(strategy_id: str) -> str:
    """A fresh client order id: ``<strategy>-<16 hex ns><4 hex seq>-<8 hex process tag>``.

    Strategy-prefixed (readable in IB's orderRef and in logs), time-ordered (sorting ids sorts by creation time
    within a process; strictly increasing even if the wall clock steps back), and unique across processes.
    At most 32 + 1 + 20 + 1 + 8 = 62 characters (the schema allows 64).
    """
    global _coid_last_ns
    with _coid_lock:
        now = max(time.time_ns(), _coid_last_ns + 1)
        _coid_last_ns = now
        seq = next(_coid_counter) % 0x10000
    return f"{strategy_id}-{now:016x}{seq:04x}-{_COID_PROCESS_TAG}"
