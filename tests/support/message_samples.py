"""Valid sample instances of every bus message, built from the message definitions themselves.

Every field is filled (optional ones with a non-default value too, so a round trip exercises all of them) from its
msgspec type and constraints. A constrained string needs a known sample for its pattern, and a few messages have
cross-field rules (``__post_init__``) that need a hint; when a new message or pattern cannot be sampled,
:func:`sample` raises :class:`NoSample` naming it, and the round-trip test fails until a hint is added here.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
from msgspec import inspect as mi

from bus import messages as m


class NoSample(Exception):
    """A message (or one of its fields) this module cannot build a valid value for yet."""


#: A sample string per constrained-string pattern in bus/messages.py.
PATTERN_SAMPLES: dict[str, str] = {
    r"^[A-Za-z0-9_.\-]+$": "probe.1",  # Name
    r"^[A-Za-z0-9_\-]+$": "strat-1",  # StrategyId
    r"^[A-Za-z0-9_.:\-]+$": "c:1",  # ClientOrderId
    m.SYMBOL_PATTERN: "BRK B",
    m.SCOPE_PATTERN: "strategy:strat-1",
    m.REASON_PATTERN: "end of day: flat",
    m.OPTIONAL_REASON_PATTERN: "no longer needed",
    m.GOOD_TILL_PATTERN: "20261207 16:00:00 US/Eastern",
    r"^[A-Za-z0-9_.:\-]*$": "g:1",  # GroupMemberId
}


def _oca_member(coid: str) -> m.OrderSpec:
    return m.OrderSpec(
        strategy_id="strat-1",
        client_order_id=coid,
        instrument=m.Instrument(symbol="AAPL"),
        side="SELL",
        quantity=1,
        order_type="LMT",
        limit_price=1.5,
        group_id="c:1",
        oca_type=1,
    )


#: Field values forced for messages with cross-field rules (the generator fills everything else).
HINTS: dict[type, dict[str, Any]] = {
    # STP LMT so that limit_price and stop_price may both be set; the trailing and GTD fields belong to other types
    m.OrderSpec: {
        "order_type": "STP LMT",
        "trailing_amount": None,
        "trailing_percent": None,
        "trail_stop_price": None,
        "limit_offset": None,
        "good_till": "",
        "adaptive_priority": "",
        "parent_id": "",
        "group_id": "c:1",
        "oca_type": 1,
    },
    m.OrderGroup: {
        "strategy_id": "strat-1",
        "group_id": "c:1",
        "kind": "oca",
        "oca_type": 1,
        "orders": [msgspec.to_builtins(_oca_member(c)) for c in ("a", "b")],
    },
}


def channel_members(union: Any) -> tuple[type, ...]:
    """The message classes of a channel union (``Event``, ``Request``, ``Reply``)."""
    return typing.get_args(union)


def all_message_types() -> list[tuple[str, type]]:
    """(channel, class) for every member of every channel union."""
    return [
        (name, cls)
        for name, union in (("event", m.Event), ("request", m.Request), ("reply", m.Reply))
        for cls in channel_members(union)
    ]


def _value(t: mi.Type, where: str) -> Any:
    if isinstance(t, mi.UnionType):
        for option in t.types:
            if not isinstance(option, mi.NoneType):
                return _value(option, where)
        return None
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            if t.pattern not in PATTERN_SAMPLES:
                raise NoSample(f"{where}: no sample string for pattern {t.pattern!r} (add it to PATTERN_SAMPLES)")
            return PATTERN_SAMPLES[t.pattern]
        n = t.min_length or 4
        return ("sample" * 10)[: min(n if t.min_length else 6, t.max_length or 64)]
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
        return max(7, low) if low is not None else 7
    if isinstance(t, mi.FloatType):
        value = 1.5
        if t.le is not None:
            value = min(value, t.le)
        return value
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.ListType):
        return [_value(t.item_type, f"{where}[]")]
    if isinstance(t, mi.DictType):
        return {_value(t.key_type, f"{where}.key"): _value(t.value_type, f"{where}[]")}
    if isinstance(t, mi.StructType):
        return sample(t.cls)
    raise NoSample(f"{where}: no sample for type {t!r}")


def sample(cls: type) -> Any:
    """A valid instance of ``cls`` with every field set; raises :class:`NoSample` naming what is missing."""
    info = mi.type_info(cls)
    if not isinstance(info, mi.StructType):
        raise NoSample(f"{cls.__name__} is not a msgspec Struct")
    hints = HINTS.get(cls, {})
    values = {
        f.name: hints[f.name] if f.name in hints else _value(f.type, f"{cls.__name__}.{f.name}") for f in info.fields
    }
    try:
        return msgspec.convert(values, cls)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise NoSample(f"{cls.__name__}: generated values are invalid ({exc}); add a hint in HINTS") from None
