"""The IB client library's "no value" markers (NaN, IB's UNSET_DOUBLE, None) read as Python values: :func:`is_set`
and :func:`num`. Attribute-free and library-free, so every gateway module can use them."""

from __future__ import annotations

import math
from typing import Any

#: Doubles at or above this are IB's UNSET_DOUBLE (sys.float_info.max), "no value".
UNSET_DOUBLE_FLOOR = 1.7e308


def is_set(value: Any) -> bool:
    """False for the library's "no value" markers (NaN, IB's UNSET_DOUBLE, None)."""
    if value is None:
        return False
    try:
        f = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(f) and f < UNSET_DOUBLE_FLOOR


def num(value: Any) -> float | None:
    """``value`` as a float, None when it is one of the library's "no value" markers."""
    return float(value) if is_set(value) else None
