"""Wire-level behaviour: framing helpers, handshake and error handling."""

from __future__ import annotations

import socket
import struct

import pytest

from sim.protocol import (
    API_PREFIX, FieldReader, FrameDecoder, ProtocolError, build_client_handshake,
    build_start_api, encode_frame, negotiate_version, parse_client_handshake,
    parse_server_handshake, split_fields,
)
from tests.sim.sim_drivers import RawClient


def test_encode_frame_round_trips_through_the_decoder():
    frame = encode_frame([1, "a b", 2.5, True, None, 1.7976931348623157e308])
    dec = FrameDecoder(expect_prefix=False)
    [payload] = dec.feed(frame)
    assert split_fields(payload) == ["1", "a b", "2.5", "1", "", "1.7976931348623157E308"]


def test_frame_decoder_handles_any_split_of_the_stream():
    stream = build_client_handshake(157, 176) + build_start_api(3) + encode_frame([49, 1])
    for cut in range(len(stream) + 1):
        dec = FrameDecoder(expect_prefix=True)
        payloads = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert parse_client_handshake(payloads[0]) == (157, 176, "")
        assert [split_fields(p) for p in payloads[1:]] == [["71", "2", "3", ""], ["49", "1"]]


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"APX\0", b"API\0" + struct.pack(">I", 10_000)])
def test_frame_decoder_rejects_non_tws_streams(data):
    with pytest.raises(ProtocolError):
        FrameDecoder(expect_prefix=True).feed(data)


def test_split_fields_rejects_garbage():
    with pytest.raises(ProtocolError):
        split_fields(b"no terminator")
    with pytest.raises(ProtocolError):
        split_fields(b"\xff\xfe\0")


def test_field_reader_raises_protocol_errors_only():
    for text in ("x", "1.5", "nan"):
        with pytest.raises(ProtocolError):
            FieldReader([text]).int()
    assert FieldReader(["10.0"]).int() == 10  # quantities may arrive as "10.0"
    with pytest.raises(ProtocolError):
        FieldReader(["nan"]).float()
    r = FieldReader(["12", "1.7976931348623157E308", "1"])
    assert (r.int(), r.float(), r.bool()) == (12, None, True)
    with pytest.raises(ProtocolError):
        r.str()


@pytest.mark.parametrize("client_range,expected", [
    ((157, 176), 176), ((157, 178), 176), ((100, 226), 176), ((157, 170), 170),
    ((177, 200), None), ((100, 150), None)])
def test_negotiate_version_announces_min_of_client_max_and_176(client_range, expected):
    assert negotiate_version(*client_range) == expected


def test_handshake_frame_is_sent_alone_then_start_api_sequence(sim):
    sock = socket.create_connection((sim.host, sim.port), timeout=5)
    sock.sendall(build_client_handshake(100, 226))
    dec = FrameDecoder(expect_prefix=False)
    data = sock.recv(65536)
    payloads = dec.feed(data)
    assert len(payloads) == 1 and dec.buffered == 0  # nothing else until startApi
    version, conn_time = parse_server_handshake(payloads[0])
    assert version == 176
    assert conn_time == "20250602 14:00:00 UTC"  # the manual clock, not the wall clock
    sock.sendall(build_start_api(8))
    msgs = []
    while len(msgs) < 5:
        msgs += [split_fields(p) for p in dec.feed(sock.recv(65536))]
    assert msgs[0] == ["15", "1", "DU1234567"]
    assert msgs[1] == ["9", "1", "1"]
    assert [m[3] for m in msgs[2:5]] == ["2104", "2106", "2158"]
    sock.close()


def test_client_without_common_version_is_closed(sim):
    raw = RawClient(sim.host, sim.port)
    raw.send_bytes(build_client_handshake(190, 200))
    assert raw.wait_closed() == []
    assert "unsupported client versions" in sim.state()["closed_clients"][-1]["closeReason"]


def test_unknown_message_id_gets_320_and_drop_but_others_keep_working(sim):
    good = RawClient(sim.host, sim.port)
    good.handshake(1)
    bad = RawClient(sim.host, sim.port)
    bad.handshake(2)
    bad.send(999, 1, "x")
    got = bad.wait_closed()
    assert [m[3] for m in got if m[0] == "4" and int(m[3]) < 2100] == ["320"]
    good.send(49, 1)
    assert good.recv_until(lambda m: m[0] == "49")[-1][0] == "49"
    good.close()


def test_market_depth_without_subscription_gets_10092_and_connection_stays(sim):
    raw = RawClient(sim.host, sim.port)
    raw.handshake(1)
    raw.send(10, 5, 77, 0, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "", 5, 0, "")
    got = raw.recv_until(lambda m: m[0] == "4" and m[3] == "10092")
    assert got[-1][2] == "77"
    raw.send(49, 1)
    assert raw.recv_until(lambda m: m[0] == "49")
    raw.close()


def test_malformed_known_request_is_dropped_with_320(sim):
    raw = RawClient(sim.host, sim.port)
    raw.handshake(1)
    raw.send(3, 12)  # placeOrder with almost nothing in it
    got = raw.wait_closed()
    assert [m[3] for m in got if m[0] == "4" and int(m[3]) < 2100] == ["320"]


def test_raw_bytes_instead_of_api_prefix_are_dropped(sim):
    sock = socket.create_connection((sim.host, sim.port), timeout=5)
    sock.sendall(b"GET /v1/state HTTP/1.1\r\n\r\n")
    assert sock.recv(100) == b""
    sock.close()
    assert API_PREFIX == b"API\0"
