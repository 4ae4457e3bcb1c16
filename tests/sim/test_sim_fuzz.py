"""Hypothesis-fuzzed garbage: the server drops the offending client with an
error and keeps serving everyone else."""

from __future__ import annotations

import itertools
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.messages import In
from sim.protocol import FrameDecoder, encode_frame, frame_bytes, split_fields
from tests.sim.sim_drivers import RawClient

FUZZ_SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])
_client_ids = itertools.count(100)

interesting = st.sampled_from(["", "0", "1", "-1", "2", "AAPL", "STK", "FUT", "CASH", "SMART",
                               "USD", "BUY", "SELL", "LMT", "MKT", "STP LMT", "1.5", "0.01",
                               "1e308", "1.7976931348623157E308", "nan", "inf", "-inf",
                               "9" * 30, "20250602 10:00:00", "1 D", "1 min", "DU1234567"])
field_values = st.one_of(interesting, st.text(max_size=12))
msg_ids = st.one_of(st.sampled_from([str(int(m)) for m in In]), st.text(max_size=4))
field_lists = st.builds(lambda head, tail: [head, *tail], msg_ids,
                        st.lists(field_values, max_size=40))
garbage_frames = st.one_of(
    field_lists.map(encode_frame),
    st.binary(min_size=1, max_size=200).map(frame_bytes),
)


def _healthy(sim) -> RawClient:
    """The bystander client that must keep working throughout."""
    good = getattr(sim, "_fuzz_good", None)
    if good is None:
        # one probe per example is far above 50 messages/s: pacing would
        # (correctly) drop the bystander, so switch it off for the fuzz run
        sim.pacing_limit(0)
        good = sim._fuzz_good = RawClient(sim.host, sim.port)
        good.handshake(1)
    return good


def _healthy_round_trip(good: RawClient) -> None:
    good.send(49, 1)
    got = good.recv_until(lambda m: m[0] == "49")
    assert got and got[-1][0] == "49", got


@FUZZ_SETTINGS
@given(frames=st.lists(garbage_frames, min_size=1, max_size=4))
def test_fuzz_garbage_frames_drop_only_that_client(sim, frames):
    good = _healthy(sim)
    raw = RawClient(sim.host, sim.port)
    raw.handshake(next(_client_ids))
    start = len(raw.messages)
    try:
        for frame in frames:
            raw.send_bytes(frame)
        raw.send(49, 1)  # probe: answered unless the garbage got us dropped
        got = raw.recv_until(lambda m: m[0] == "49")
        if raw.closed:
            # dropped: the last thing we heard is IB's "Error reading request"
            errors = [m for m in raw.messages[start:] if m[0] == "4" and m[3] not in ("2104", "2106", "2158")]
            assert errors and errors[-1][3] == "320", errors
        else:
            assert got[-1][0] == "49"
    finally:
        raw.close()
    _healthy_round_trip(good)


@FUZZ_SETTINGS
@given(data=st.binary(min_size=1, max_size=300), after_handshake=st.booleans())
def test_fuzz_raw_bytes_never_wedge_the_server(sim, data, after_handshake):
    good = _healthy(sim)
    sock = socket.create_connection((sim.host, sim.port), timeout=5)
    try:
        if after_handshake:
            raw = RawClient.__new__(RawClient)
            raw.sock, raw.decoder, raw.messages, raw.closed = sock, FrameDecoder(expect_prefix=False), [], False
            raw.handshake(next(_client_ids))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the server sees EOF and must let go
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        for payload in FrameDecoder(expect_prefix=False).feed(received):
            split_fields(payload)  # whatever the server sent is well-formed
    finally:
        sock.close()
    _healthy_round_trip(good)
    state = sim.state()
    assert [c["clientId"] for c in state["clients"]] == [1]
