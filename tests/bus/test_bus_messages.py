"""Messages and codec: every message round-trips, validation is part of decoding (and construction), and no input
crashes a decoder: garbage is always a typed :class:`~bus.codec.DecodeError` with a reason naming the field."""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import messages as m
from bus.codec import Codec, DecodeError, Stamper, event_codec, reply_codec, request_codec, validate
from tests.support.message_samples import all_message_types, channel_members, sample

CODECS = {"event": event_codec, "request": request_codec, "reply": reply_codec}
UNIONS = {"event": m.Event, "request": m.Request, "reply": m.Reply}

#: Hypothesis budget per property: enough to find shallow crashes, small enough for a fast suite (structured
#: examples cost more to generate than raw bytes).
FUZZ_EXAMPLES = 300
FUZZ_STRUCTURED_EXAMPLES = 120


def _frame(body: dict[str, Any], **header: Any) -> bytes:
    """An envelope built by hand (so it can be invalid), as a peer would put it on the wire."""
    env = {"v": m.SCHEMA_VERSION, "sender": "peer", "incarnation": 1, "seq": 1, "mono_ns": 1, "wall_ns": 1,
           "request_id": "rid-1", "body": body}
    env.update(header)
    return msgspec.msgpack.encode(env)


def _order(**overrides: Any) -> dict[str, Any]:
    order = {"strategy_id": "s1", "client_order_id": "c1", "instrument": {"symbol": "AAPL"}, "side": "BUY",
             "quantity": 10.0}
    order.update(overrides)
    return order


def _decode_error(codec: Codec[Any], frame: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(frame)
    return info.value


# ------------------------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "cls"), all_message_types(), ids=lambda v: getattr(v, "__name__", v))
def test_message_round_trip_through_its_channel_codec_is_equal(channel: str, cls: type) -> None:
    body = sample(cls)  # raises NoSample (a failure) for a message nobody taught the sampler
    stamper = Stamper("round-trip")
    env = stamper.stamp(body, key="t", request_id="rid-7")
    codec = CODECS[channel]()
    decoded = codec.decode(codec.encode(env))
    assert decoded == env
    assert type(decoded.body) is cls


def test_every_message_class_is_in_a_channel_union() -> None:
    members = {cls for union in UNIONS.values() for cls in channel_members(union)}
    classes = {obj for obj in vars(m).values()
               if isinstance(obj, type) and issubclass(obj, m.Base) and obj is not m.Base}
    assert classes - members == set(), "message classes missing from Event/Request/Reply"


def test_envelope_carries_sender_sequence_clocks_and_schema_version() -> None:
    stamper = Stamper("env-test")
    first = stamper.stamp(m.Ping(), key="a")
    second = stamper.stamp(m.Ping(), key="a")
    other = stamper.stamp(m.Ping(), key="b")
    assert (first.v, first.sender) == (m.SCHEMA_VERSION, "env-test")
    assert (first.seq, second.seq, other.seq) == (1, 2, 1)  # per sender and per key (topic)
    assert first.incarnation == second.incarnation == other.incarnation
    assert second.mono_ns >= first.mono_ns > 0
    assert abs(first.wall_ns - time.time_ns()) < 60 * 10**9


# ------------------------------------------------------------------------------------------------------------------
# Validation on decode: the reason names the field
# ------------------------------------------------------------------------------------------------------------------

BAD_QUANTITIES = [math.nan, math.inf, -math.inf, -1.0, 0.0, 0, 2e9, "10", None, [], True]


@pytest.mark.parametrize("quantity", BAD_QUANTITIES, ids=repr)
def test_bad_quantity_in_place_order_is_rejected_naming_quantity(quantity: Any) -> None:
    exc = _decode_error(request_codec(), _frame({"type": "place_order", "order": _order(quantity=quantity)}))
    assert "order.quantity" in exc.reason
    assert (exc.sender, exc.request_id, exc.body_type, exc.code) == ("peer", "rid-1", "place_order", "bad_request")


@pytest.mark.parametrize("symbol", ["", " ", "   ", " AAPL", "AAPL ", "AA!PL", "A" * 33, 5, None],
                         ids=repr)
def test_bad_symbol_is_rejected_naming_symbol(symbol: Any) -> None:
    exc = _decode_error(request_codec(), _frame({"type": "place_order",
                                                  "order": _order(instrument={"symbol": symbol})}))
    assert "order.instrument.symbol" in exc.reason


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "cancel_all_orders", "strategy_id": "s1", "symbol": "  "}, "symbol"),
    ({"type": "list_orders", "symbol": ""}, "symbol"),
    ({"type": "unsubscribe_market_data", "symbol": " X", "subscriber": "s"}, "symbol"),
])
def test_bad_symbol_in_other_requests_is_rejected(body: dict[str, Any], field: str) -> None:
    assert f"`{field}`" in _decode_error(request_codec(), _frame(body)).reason


@pytest.mark.parametrize(("order", "needle"), [
    (_order(order_type="LMT"), "limit_price"),
    (_order(order_type="STP"), "stop_price"),
    (_order(order_type="STP LMT", limit_price=10.0), "stop_price"),
    (_order(order_type="MKT", limit_price=10.0), "limit_price"),
    (_order(order_type="LMT", limit_price=math.nan), "limit_price"),
    (_order(order_type="LMT", limit_price=-1.0), "limit_price"),
    (_order(side="HOLD"), "side"),
    (_order(strategy_id=""), "strategy_id"),
    (_order(strategy_id="has space"), "strategy_id"),
    (_order(strategy_id=5), "strategy_id"),
    (_order(client_order_id="x" * 65), "client_order_id"),
    (_order(instrument="AAPL"), "instrument"),
    (_order(instrument={"symbol": "AAPL", "con_id": -1}), "con_id"),
    (_order(tif="FOREVER"), "tif"),
])
def test_invalid_order_is_rejected_with_a_reason_naming_the_field(order: dict[str, Any], needle: str) -> None:
    exc = _decode_error(request_codec(), _frame({"type": "place_order", "order": order}))
    assert needle in exc.reason, exc.reason


@pytest.mark.parametrize("scope", ["", "everything", "strategy:", "symbol:", "strategy:a b", "all ", 7])
@pytest.mark.parametrize("kind", ["kill", "resume", "emergency_cancel", "set_trading_state", "cancel_scope"])
def test_bad_scope_is_rejected_naming_scope(kind: str, scope: Any) -> None:
    body = {"type": kind, "scope": scope, "reason": "test", "kill_id": "k1", "command_id": "c1", "state": "HALTED"}
    body = {k: v for k, v in body.items() if k in {f.name for f in msgspec.structs.fields(_cls_of(kind))} | {"type"}}
    assert "`scope`" in _decode_error(request_codec(), _frame(body)).reason


def _cls_of(tag: str) -> type:
    return next(cls for cls in channel_members(m.Request) if m.tag_of(cls) == tag)


def test_modify_without_any_change_is_rejected() -> None:
    exc = _decode_error(request_codec(), _frame({"type": "modify_order", "strategy_id": "s1", "client_order_id": "c"}))
    assert "at least one" in exc.reason


def test_missing_required_field_is_rejected_naming_it() -> None:
    exc = _decode_error(request_codec(), _frame({"type": "place_order"}))
    assert "order" in exc.reason and exc.body_type == "place_order"


def test_unknown_message_type_is_an_unknown_command() -> None:
    exc = _decode_error(request_codec(), _frame({"type": "launch_rockets"}))
    assert exc.code == "unknown_command" and exc.body_type == "launch_rockets" and exc.request_id == "rid-1"


def test_event_on_the_request_channel_is_an_unknown_command() -> None:
    exc = _decode_error(request_codec(), _frame({"type": "fill_event"}))
    assert exc.code == "unknown_command"


def test_other_schema_version_is_rejected_with_a_clear_reason() -> None:
    exc = _decode_error(request_codec(), _frame({"type": "ping"}, v=m.SCHEMA_VERSION + 1))
    assert "schema version" in exc.reason and exc.request_id == "rid-1"


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"not msgpack at all", msgspec.msgpack.encode([1, 2, 3]),
                                   msgspec.msgpack.encode({"sender": 5, "body": {"type": "ping"}}),
                                   b"\x91" * 200_000 + b"\xc0"],
                         ids=["empty", "bad-opcode", "text", "array", "wrong-header-type", "nested-200k-deep"])
def test_malformed_frame_is_a_decode_error(frame: bytes) -> None:
    exc = _decode_error(request_codec(), frame)
    assert exc.code == "bad_request" and exc.reason


def test_deeply_nested_body_field_is_a_decode_error_not_a_crash() -> None:
    deep = msgspec.Raw(b"\x91" * 200_000 + b"\xc0")
    exc = _decode_error(request_codec(), _frame({"type": "ping", "extra": deep}))
    assert "nested too deeply" in exc.reason


# ------------------------------------------------------------------------------------------------------------------
# The same checks at construction
# ------------------------------------------------------------------------------------------------------------------

INSTRUMENT = m.Instrument(symbol="AAPL")


def _spec(**kw: Any) -> m.OrderSpec:
    args: dict[str, Any] = dict(strategy_id="s1", client_order_id="c1", instrument=INSTRUMENT, side="BUY",
                                quantity=10.0)
    args.update(kw)
    return m.OrderSpec(**args)


@pytest.mark.parametrize(("build", "needle"), [
    (lambda: _spec(quantity=math.nan), "quantity"),
    (lambda: _spec(quantity=math.inf), "quantity"),
    (lambda: _spec(quantity=-5), "quantity"),
    (lambda: _spec(quantity=0), "quantity"),
    (lambda: _spec(quantity="10"), "quantity"),
    (lambda: _spec(quantity=True), "quantity"),
    (lambda: _spec(order_type="LMT"), "limit_price"),
    (lambda: _spec(limit_price=100.0), "limit_price"),
    (lambda: _spec(order_type="STP"), "stop_price"),
    (lambda: _spec(order_type="LMT", limit_price=math.nan), "limit_price"),
    (lambda: m.Instrument(symbol=""), "symbol"),
    (lambda: m.Instrument(symbol="   "), "symbol"),
    (lambda: m.Instrument(symbol=" AAPL"), "symbol"),
    (lambda: m.Instrument(symbol="AA!PL"), "symbol"),
    (lambda: m.Instrument(symbol=5), "symbol"),
    (lambda: m.ModifyOrder(strategy_id="s1", client_order_id="c1"), "at least one"),
    (lambda: m.ModifyOrder(strategy_id="s1", client_order_id="c1", quantity=-1.0), "quantity"),
    (lambda: m.Kill(kill_id="k", scope="everything", reason="r"), "scope"),
    (lambda: m.Resume(scope="strategy:", reason="r"), "scope"),
    (lambda: m.EmergencyCancel(command_id="c", scope="symbol:", reason="r"), "scope"),
    (lambda: m.SetTradingState(scope="x", state="HALTED", reason="r"), "scope"),
    (lambda: m.CancelScope(scope="nope"), "scope"),
    (lambda: m.TradingStateEvent(scope="nope", state="HALTED", epoch=1), "scope"),
    (lambda: m.CancelAllOrders(strategy_id="s1", symbol=" "), "symbol"),
    (lambda: m.ListOrders(symbol=""), "symbol"),
    (lambda: m.UnsubscribeMarketData(symbol="", subscriber="s"), "symbol"),
])
def test_construction_rejects_what_decoding_rejects(build: Any, needle: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        build()
    assert needle in str(info.value)


def test_validate_checks_constraints_that_construction_cannot() -> None:
    bad = m.PlaceOrder(order=_spec(strategy_id="has space"))  # patterns are checked on decode only
    with pytest.raises(DecodeError) as info:
        validate(bad)
    assert "order.strategy_id" in info.value.reason and info.value.body_type == "place_order"
    good = m.PlaceOrder(order=_spec())
    assert validate(good) == good


# ------------------------------------------------------------------------------------------------------------------
# Fuzzing: arbitrary input never crashes a decoder
# ------------------------------------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.binary(max_size=40))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                       max_leaves=8)
_tags = st.sampled_from([m.tag_of(cls) for _, cls in all_message_types()] + ["", "nope", "Ping"])


_CODEC = {name: make() for name, make in CODECS.items()}


def _decodes_or_typed_error(codec: Codec[Any], frame: bytes) -> None:
    try:
        codec.decode(frame)
    except DecodeError as exc:
        assert exc.reason and exc.code in ("bad_request", "unknown_command")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=st.binary(max_size=512), channel=st.sampled_from(sorted(CODECS)))
def test_arbitrary_bytes_into_a_decoder_give_a_typed_error(frame: bytes, channel: str) -> None:
    _decodes_or_typed_error(_CODEC[channel], frame)


@settings(max_examples=FUZZ_STRUCTURED_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.dictionaries(st.sampled_from(["v", "sender", "incarnation", "seq", "mono_ns", "wall_ns",
                                               "request_id", "body", "junk"]), _values, max_size=9),
       tag=_tags, fields=st.dictionaries(st.text(max_size=16), _values, max_size=6),
       channel=st.sampled_from(sorted(CODECS)))
def test_arbitrary_msgpack_envelopes_give_a_typed_error(header: dict[str, Any], tag: str,
                                                        fields: dict[str, Any], channel: str) -> None:
    header = dict(header)
    header.setdefault("body", {"type": tag, **fields})
    _decodes_or_typed_error(_CODEC[channel], msgspec.msgpack.encode(header))


_TYPES = all_message_types()


@settings(max_examples=FUZZ_STRUCTURED_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(min_value=0, max_value=len(_TYPES) - 1), data=st.data(), wrong=_values)
def test_wrong_typed_field_in_a_valid_message_names_the_field(index: int, data: st.DataObject, wrong: Any) -> None:
    channel, cls = _TYPES[index]
    body = msgspec.to_builtins(sample(cls))
    field = data.draw(st.sampled_from(sorted(k for k in body if k != "type") or ["type"]))
    body[field] = wrong
    frame = _frame(body)
    try:
        _CODEC[channel].decode(frame)
    except DecodeError as exc:
        # the reason names the field (or the tag, when the tag itself was replaced)
        assert f"`{field}" in exc.reason or exc.code == "unknown_command" or field == "type", exc.reason
