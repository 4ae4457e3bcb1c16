"""Issue 14, item 3 (schema side): every string, list and dict on the wire is bounded, and the bounds are
consistent with the socket limits: the largest *valid* message of each channel fits the ZMQ_MAXMSGSIZE of the
socket that receives it, so a legitimate message is never cut off while anything larger is refused before it is
read. Also: the de-duplication cache counts what its keys hold; operator-typed reasons refuse control characters.

The largest valid instance is built from the msgspec types themselves (:func:`tests.security.fuzz.maximal`):
every string, list and dict at its bound, recursively; so a bound added to bus/messages.py is checked here without
editing this file.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from bus import messages as m
from tests.security import fuzz

_ENCODER = msgspec.msgpack.Encoder()


def _walk_unbounded(t: mi.Type, path: str, seen: set[str], out: list[str]) -> None:
    if isinstance(t, mi.StrType):
        if t.max_length is None:
            out.append(path)
    elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        if t.max_length is None:
            out.append(path + "[]")
        _walk_unbounded(t.item_type, path + "[*]", seen, out)
    elif isinstance(t, mi.DictType):
        if t.max_length is None:
            out.append(path + "{}")
        _walk_unbounded(t.key_type, path + "{key}", seen, out)
        _walk_unbounded(t.value_type, path + "{value}", seen, out)
    elif isinstance(t, mi.UnionType):
        for u in t.types:
            _walk_unbounded(u, path, seen, out)
    elif isinstance(t, mi.StructType):
        if t.cls.__name__ in seen:
            return
        seen.add(t.cls.__name__)
        for f in t.fields:
            _walk_unbounded(f.type, f"{t.cls.__name__}.{f.name}", seen, out)


def test_every_string_list_and_dict_field_on_the_wire_has_a_maximum_length() -> None:
    unbounded: list[str] = []
    _walk_unbounded(mi.type_info(m.Envelope[m.Event | m.Request | m.Reply]), "Envelope", set(), unbounded)
    assert unbounded == [], f"{len(unbounded)} field(s) without a maximum length: {unbounded}"


@pytest.fixture(autouse=True)
def longest_patterns() -> None:
    """Patterns whose longest value the generic search cannot guess."""
    fuzz.LONGEST_BY_PATTERN.update({
        m.SCOPE_PATTERN: "symbol:" + "A" * m.SYMBOL_MAX_LENGTH,
        m.SYMBOL_PATTERN: "A" * m.SYMBOL_MAX_LENGTH,
        m.GOOD_TILL_PATTERN: "20261207 16:00:00 " + "A" * 22,
    })
    fuzz.MAXIMAL_FIXUPS.update({m.OrderSpec: _largest_order, m.OrderGroup: _largest_group})


def _largest_order(spec: dict[str, Any]) -> dict[str, Any]:
    """The largest valid order: a TRAIL LIMIT GTD bracket child (its own terms at their widest, the ones that go with
    other types left out: every field at once would break the order's own rules)."""
    return {**spec, "order_type": "TRAIL LIMIT", "limit_price": None, "stop_price": None, "trailing_percent": None,
            "tif": "GTD", "adaptive_priority": "", "oca_type": 0, "parent_id": spec["parent_id"][:-1] + "p"}


def _largest_group(group: dict[str, Any]) -> dict[str, Any]:
    """The largest valid group: an OCA group of the most members, each the largest order (distinct ids)."""
    orders = []
    for i, o in enumerate(group["orders"]):
        orders.append({**o, "client_order_id": o["client_order_id"][:-1] + str(i), "parent_id": "",
                       "oca_type": 3, "group_id": group["group_id"], "strategy_id": group["strategy_id"]})
    return {**group, "kind": "oca", "oca_type": 3, "orders": orders}


def _largest_valid(cls: type) -> tuple[Any, int]:
    """The largest valid envelope around ``cls`` (decoded again, so it really is valid) and its encoded size."""
    body = fuzz.maximal(mi.type_info(cls))
    if cls is m.OrderListReply:
        # the one list of lists: the order manager sends order lists without their history (GetOrder and WaitOrder
        # carry one order's): a page of full histories would be valid and never sent
        body["orders"] = [{**view, "history": []} for view in body["orders"]]
    envelope = fuzz.maximal(mi.type_info(m.Envelope[cls]))
    envelope["body"] = body
    frame = _ENCODER.encode(envelope)
    decoded = msgspec.msgpack.decode(frame, type=m.Envelope[cls])  # raises if the "largest" is not valid
    return decoded, len(frame)


@pytest.mark.parametrize("cls", typing.get_args(m.Request), ids=lambda c: c.__name__)
def test_largest_valid_request_fits_the_request_socket_limit(cls: type) -> None:
    _, size = _largest_valid(cls)
    assert size <= m.MAX_REQUEST_BYTES, f"{cls.__name__}: {size} bytes > {m.MAX_REQUEST_BYTES}"


@pytest.mark.parametrize("cls", typing.get_args(m.Event), ids=lambda c: c.__name__)
def test_largest_valid_event_fits_the_event_socket_limit(cls: type) -> None:
    _, size = _largest_valid(cls)
    assert size <= m.MAX_EVENT_BYTES, f"{cls.__name__}: {size} bytes > {m.MAX_EVENT_BYTES}"


@pytest.mark.parametrize("cls", typing.get_args(m.Reply), ids=lambda c: c.__name__)
def test_largest_valid_reply_fits_the_reply_socket_limit(cls: type) -> None:
    _, size = _largest_valid(cls)
    assert size <= m.MAX_REPLY_BYTES, f"{cls.__name__}: {size} bytes > {m.MAX_REPLY_BYTES}"


def test_the_request_limit_is_sized_from_the_largest_request_not_far_above_it() -> None:
    """A service reads at most MAX_REQUEST_BYTES per frame: the limit follows the largest valid request (with
    room for a schema that grows), not an arbitrary large number."""
    largest = max(_largest_valid(cls)[1] for cls in typing.get_args(m.Request))
    assert largest <= m.MAX_REQUEST_BYTES <= 32 * largest, (largest, m.MAX_REQUEST_BYTES)


def test_dedup_cache_counts_the_bytes_its_keys_hold() -> None:
    """Seen on main: the byte bound counted only replies, so four Pings with a 50 MB ``sender`` pinned 200 MB."""
    from bus import dedup

    cache = dedup.ReplyCache(max_bytes=1024 * 1024)
    for i in range(8):
        cache.remember(("s" * 500_000, f"r{i}"), b"pong")
    assert cache.bytes <= cache.max_bytes and len(cache.done) <= 2, (cache.bytes, len(cache.done))
    cache.start(("x" * 1000, "r"), b"id")
    assert cache.inflight_bytes >= 1000


@pytest.mark.parametrize("reason", ["", "   ", "\t", "\x1b[2J\x1b[31mred", "line\nforged", "bell\x07", "rlo\u202e",
                                    "ls\u2028x", "x" * (m.MAX_REASON_LENGTH + 1)])
def test_operator_reasons_refuse_blank_control_characters_and_overlong_text(reason: str) -> None:
    with pytest.raises(ValueError):
        m.Kill(kill_id="k", reason=reason)
    frame = msgspec.msgpack.encode({"kill_id": "k", "reason": reason, "type": "kill"})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(frame, type=m.Kill)


@pytest.mark.parametrize("reason", ["end of day: flat", "café — ça va", "x" * m.MAX_REASON_LENGTH, " padded "])
def test_ordinary_reasons_pass(reason: str) -> None:
    kill = m.Kill(kill_id="k", reason=reason)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(kill), type=m.Kill) == kill
    assert m.CancelOrder(strategy_id="s", client_order_id="c", reason="").reason == ""


def test_a_heartbeat_carries_a_long_halt_latch_whole() -> None:
    """The gateway's halt latch rides in its heartbeat's ``detail`` and the risk governor acts on it: the bounds
    must never clip it (a clipped scope list would un-halt a scope in the governor's mirror)."""
    scopes = [f"symbol:{'S' * 28}{i:04d}" for i in range(1000)]
    detail = m.heartbeat_detail({m.GATEWAY_LATCH_DETAIL: m.latch_detail(scopes), **{f"k{i}": "v" for i in range(40)}})
    beat = m.Heartbeat(actor="gateway", detail=detail)
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(beat), type=m.Heartbeat)
    assert m.latched_scopes(decoded.detail) == frozenset(scopes)
