"""``khazad doctor`` against the simulator's fault modes (and two tiny misbehaving servers for the cases a
simulator cannot show: a socket reset before the handshake, and a port that is not a TWS API)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from cli.main import main
from tests.support.sim_state import squat


def run_doctor(capsys, *args: str) -> tuple[int, dict[str, str], str]:
    code = main(["doctor", "--timeout", "3", *args])
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines()[1:-1]:
        status, name = line[:5].strip(), line[6:17].strip()
        lines[name] = status + " " + line[18:]
    return code, lines, out


@pytest.fixture(autouse=True)
def no_ambient_config(tmp_path, monkeypatch):
    """The doctor reads ./khazad.toml or $KHAZAD_CONFIG for defaults: keep the developer's out of these tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KHAZAD_CONFIG", raising=False)


@pytest.fixture
def sim() -> Iterator:
    from sim.testing import running_sim

    with running_sim(seed=3) as handle:
        yield handle


def test_doctor_healthy_simulator_all_ok(sim, capsys):
    code, lines, out = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(sim.port), "--client-id", "11")
    assert code == 0, out
    assert all(v.startswith("OK") for v in lines.values()), out
    assert "server version 176" in lines["server"]
    assert "DU1234567 (paper)" in lines["accounts"]
    assert "usfarm" in lines["farms"]
    assert len(lines) == 7 and out.strip().endswith("all checks passed")


def test_doctor_refused_port_says_how_to_enable_the_api(sim, capsys):
    sim.refuse_connections()
    code, lines, out = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(sim.port))
    assert code == 1
    assert lines["tcp"].startswith("FAIL") and "connection refused" in lines["tcp"]
    assert "Enable ActiveX and Socket Clients" in lines["tcp"] and "WSL" in lines["tcp"]
    assert all(lines[n].startswith("SKIP") for n in ("handshake", "client id", "farms"))


def test_doctor_client_id_in_use(sim, capsys):
    squatter = squat(sim.port, 5)
    try:
        code, lines, out = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(sim.port), "--client-id", "5")
    finally:
        squatter.close()
    assert code == 1
    assert lines["handshake"].startswith("OK") and lines["server"].startswith("OK")
    assert lines["client id"].startswith("FAIL") and "already in use" in lines["client id"] and "326" in out
    assert "--client-id" in lines["client id"]


def test_doctor_mode_and_account_mismatch(sim, capsys):
    code, lines, _ = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(sim.port), "--mode", "live")
    assert code == 1 and lines["paper/live"].startswith("FAIL") and "paper account" in lines["paper/live"]
    code, lines, _ = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(sim.port), "--mode", "paper",
                                "--account", "DU999")
    assert code == 1 and "DU999 is not among DU1234567" in lines["paper/live"]
    code, lines, _ = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(sim.port), "--mode", "paper")
    assert code == 0 and lines["paper/live"].startswith("OK")


def test_doctor_farm_notices_are_classified():
    from cli.doctor import _farms

    assert _farms([(2104, "Market data farm connection is OK:usfarm")]).status == "OK"
    broken = _farms([(2104, "ok"), (2103, "Market data farm connection is broken:usfarm")])
    assert broken.status == "FAIL" and "broken:usfarm" in broken.detail and broken.fix
    assert _farms([(1100, "Connectivity between IB and TWS has been lost")]).status == "FAIL"
    assert _farms([]).status == "WARN"


class _OneShotServer:
    """Accepts connections and either resets them at once (TWS refusing an untrusted IP) or talks nonsense."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(1024)
                    if self.behaviour == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    elif self.behaviour == "http":
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_doctor_socket_reset_points_to_trusted_ips(capsys):
    server = _OneShotServer("reset")
    try:
        code, lines, out = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(server.port))
    finally:
        server.close()
    assert code == 1 and lines["tcp"].startswith("OK")
    assert lines["handshake"].startswith("FAIL") and "reset" in lines["handshake"]
    assert "Trusted IPs" in lines["handshake"] and "localhost only" in lines["handshake"]
    assert "WSL" in lines["handshake"] and "not 127.0.0.1" in lines["handshake"]


def test_doctor_port_of_another_program(capsys):
    server = _OneShotServer("http")
    try:
        code, lines, out = run_doctor(capsys, "--host", "127.0.0.1", "--port", str(server.port))
    finally:
        server.close()
    assert code == 1 and lines["handshake"].startswith("FAIL"), out


def test_doctor_wire_speaks_the_framing_the_simulator_parses():
    # the doctor's client side (actors/gateway/tws_wire.py) and the simulator's server side (sim/protocol.py) are
    # two implementations of one format that never import each other: each side decodes what the other encodes
    from actors.gateway import tws_wire
    from sim import protocol

    server = protocol.FrameDecoder(expect_prefix=True)
    (hello,) = server.feed(tws_wire.build_client_handshake(157, 176))
    assert protocol.parse_client_handshake(hello) == (157, 176, "")
    (start,) = server.feed(tws_wire.build_start_api(11))
    assert protocol.split_fields(start) == ["71", "2", "11", ""]
    client = tws_wire.FrameDecoder()
    payloads = client.feed(protocol.build_server_handshake(176, "20260101 09:30:00 UTC")
                           + protocol.encode_frame([9, 1, 42]) + protocol.encode_frame([15, 1, "DU1,DU2"])[:-3])
    assert tws_wire.parse_server_handshake(payloads[0]) == (176, "20260101 09:30:00 UTC")
    assert [tws_wire.split_fields(p) for p in payloads[1:]] == [["9", "1", "42"]]  # the third frame is not whole
    assert [tws_wire.split_fields(p) for p in client.feed(b"U2\0")] == [["15", "1", "DU1,DU2"]]
    with pytest.raises(tws_wire.ProtocolError):
        tws_wire.split_fields(b"no terminator")
