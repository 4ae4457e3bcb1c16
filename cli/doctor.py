"""``khazad doctor``: the connection problems every IB user meets, one line per check with a fix.

Checks, in order (a failed check skips the ones that depend on it):

1. ``tcp``        - is anything listening on host:port?
2. ``handshake``  - does the TWS API handshake complete, or is the socket reset (TWS refusing this address)?
3. ``server``     - the server version (Khazad's clients need >= 157);
4. ``client id``  - does startApi succeed, or is the client id already in use (IB 326)?
5. ``accounts``   - which accounts the login manages;
6. ``paper/live`` - do the port, the accounts, ``--mode`` and ``--account`` agree?
7. ``farms``      - IB's data-farm notices (2104/2106/2158 OK, 2103/2105/2157 broken, 1100 lost).

It speaks the socket protocol itself (the client side of it, :mod:`actors.gateway.tws_wire`), so it needs neither
ib_insync nor a running bus; defaults come from the config (``gateway.host``/``port``/``client_id``) when one is found.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from actors.gateway.settings import DEFAULT_PORTS, LIVE_PORTS, PAPER_PORTS, is_paper_account
from actors.gateway.tws_wire import (
    FrameDecoder,
    ProtocolError,
    build_client_handshake,
    build_start_api,
    parse_server_handshake,
    split_fields,
)

MIN_VERSION = 157
MAX_VERSION = 176
DEFAULT_TIMEOUT_S = 5.0
#: After nextValidId, how long to collect farm notices (they follow within milliseconds on a healthy login).
FARM_WAIT_S = 1.0
FARM_QUIET_S = 0.3
FARM_OK = {
    2104: "market data",
    2106: "historical data",
    2158: "sec-def",
    2107: "historical data (inactive)",
    2108: "market data (inactive)",
}
FARM_BROKEN = {2103: "market data", 2105: "historical data", 2157: "sec-def", 2110: "TWS-server link"}
MSG_ERROR = "4"
MSG_NEXT_VALID_ID = "9"
MSG_MANAGED_ACCOUNTS = "15"

FIX_NOT_LISTENING = (
    "start TWS or IB Gateway, enable the API (Configure > API > Settings > 'Enable ActiveX and "
    "Socket Clients') and check its socket port (TWS 7497 paper / 7496 live, IB Gateway 4002 paper "
    "/ 4001 live); from WSL connect to the Windows host's address (the default route's gateway), "
    "not 127.0.0.1"
)
FIX_REJECTED = (
    "TWS refuses this machine: in API > Settings add this machine's address to 'Trusted IPs' and untick "
    "'Allow connections from localhost only'; from WSL connect to the Windows host's address, not "
    "127.0.0.1"
)
FIX_SILENT = (
    "TWS may be waiting for you to accept the incoming connection (a dialog on its screen): accept it or "
    "add this address to 'Trusted IPs'; otherwise the port belongs to another program"
)


@dataclass
class Check:
    name: str
    status: str  # OK | FAIL | WARN | SKIP
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.name:<11} {self.detail}"
        if self.fix:
            text += f"  -> fix: {self.fix}"
        return text


@dataclass
class Probe:
    """What the conversation with the server showed."""

    server_version: int = 0
    connection_time: str = ""
    accounts: list[str] = field(default_factory=list)
    next_valid_id: int | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)
    closed: bool = False


class _Conn:
    """Client side of one API connection: raw payloads in arrival order (the first is the handshake answer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.payloads: list[bytes] = []
        self.consumed = 1  # payloads[0] is the handshake answer
        self.closed = False

    def read(self, deadline: float) -> bool:
        """Read once (until ``deadline``); False on timeout. Raises ConnectionResetError / ProtocolError."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            self.closed = True
            raise ConnectionResetError("connection closed by the server")
        self.payloads.extend(self.decoder.feed(data))
        return True


def _kind_of_port(port: int) -> str:
    return "paper" if port in PAPER_PORTS else "live" if port in LIVE_PORTS else ""


def run_checks(
    host: str,
    port: int,
    client_id: int,
    *,
    mode: str | None = None,
    account: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Check]:
    checks: list[Check] = []
    names = ["tcp", "handshake", "server", "client id", "accounts", "paper/live", "farms"]

    def skip_rest(reason: str) -> list[Check]:
        done = {c.name for c in checks}
        return checks + [Check(n, "SKIP", reason) for n in names if n not in done]

    # 1. tcp
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        checks.append(Check("tcp", "FAIL", f"nothing listens on {host}:{port} (connection refused)", FIX_NOT_LISTENING))
        return skip_rest("no connection")
    except socket.gaierror as exc:
        checks.append(Check("tcp", "FAIL", f"cannot resolve {host!r}: {exc}", "check --host / gateway.host"))
        return skip_rest("no connection")
    except TimeoutError:
        checks.append(
            Check(
                "tcp",
                "FAIL",
                f"no answer from {host}:{port} within {timeout:g}s",
                "a firewall drops the connection or the host is wrong; " + FIX_NOT_LISTENING,
            )
        )
        return skip_rest("no connection")
    except OSError as exc:
        checks.append(Check("tcp", "FAIL", f"cannot connect to {host}:{port}: {exc}", FIX_NOT_LISTENING))
        return skip_rest("no connection")
    checks.append(Check("tcp", "OK", f"{host}:{port} accepts connections"))
    conn = _Conn(sock)
    probe = Probe()
    try:
        # 2. handshake
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(build_client_handshake(MIN_VERSION, MAX_VERSION))
            while not conn.payloads and conn.read(deadline):
                pass
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            checks.append(
                Check(
                    "handshake",
                    "FAIL",
                    f"the socket was reset before the API handshake completed ({exc.__class__.__name__})",
                    FIX_REJECTED,
                )
            )
            return skip_rest("no API session")
        except ProtocolError as exc:
            checks.append(
                Check(
                    "handshake",
                    "FAIL",
                    f"{host}:{port} does not speak the TWS API ({exc})",
                    "point --port at TWS/IB Gateway's API port",
                )
            )
            return skip_rest("no API session")
        if not conn.payloads:
            checks.append(Check("handshake", "FAIL", f"no handshake answer within {timeout:g}s", FIX_SILENT))
            return skip_rest("no API session")
        try:
            probe.server_version, probe.connection_time = parse_server_handshake(conn.payloads[0])
        except ProtocolError as exc:
            checks.append(
                Check(
                    "handshake",
                    "FAIL",
                    f"unexpected first message ({exc})",
                    "point --port at TWS/IB Gateway's API port",
                )
            )
            return skip_rest("no API session")
        checks.append(Check("handshake", "OK", "API handshake completed"))
        # 3. server version
        if probe.server_version < MIN_VERSION:
            checks.append(
                Check(
                    "server",
                    "FAIL",
                    f"server version {probe.server_version} is too old",
                    f"upgrade TWS/IB Gateway (Khazad needs server version >= {MIN_VERSION})",
                )
            )
            return skip_rest("server too old")
        checks.append(
            Check("server", "OK", f"server version {probe.server_version} (connected at {probe.connection_time})")
        )
        # 4. client id
        try:
            sock.sendall(build_start_api(client_id))
            deadline = time.monotonic() + timeout
            while True:
                _absorb(conn, probe)
                if probe.next_valid_id is not None or any(code == 326 for code, _ in probe.errors):
                    break
                if not conn.read(deadline):
                    break
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            probe.closed = True
            _absorb(conn, probe)
        in_use = [m for code, m in probe.errors if code == 326]
        if in_use:
            checks.append(
                Check(
                    "client id",
                    "FAIL",
                    f"client id {client_id} is already in use (IB 326: {in_use[0]})",
                    "another program (the Khazad gateway itself, or a session from before TWS's daily "
                    "restart that has not timed out yet) uses it: stop it, wait a minute, or pick "
                    "another --client-id / gateway.client_id",
                )
            )
            return skip_rest("no API session")
        if probe.next_valid_id is None:
            why = "the server closed the connection" if probe.closed else f"no answer within {timeout:g}s"
            checks.append(
                Check(
                    "client id",
                    "FAIL",
                    f"startApi with client id {client_id} failed: {why}",
                    FIX_REJECTED if probe.closed else FIX_SILENT,
                )
            )
            return skip_rest("no API session")
        checks.append(Check("client id", "OK", f"client id {client_id} accepted (next order id {probe.next_valid_id})"))
        # farm notices follow the start; collect them briefly (bounded, quiet-terminated)
        end = time.monotonic() + FARM_WAIT_S
        while time.monotonic() < end:
            try:
                if not conn.read(min(end, time.monotonic() + FARM_QUIET_S)):
                    break
            except (ConnectionResetError, ProtocolError):
                probe.closed = True
                break
            _absorb(conn, probe)
        _absorb(conn, probe)
    finally:
        try:
            sock.close()
        except OSError:
            pass
    # 5. accounts
    if not probe.accounts:
        checks.append(
            Check(
                "accounts",
                "FAIL",
                "the login manages no accounts",
                "log in to TWS/IB Gateway with a user that has trading permissions",
            )
        )
    else:
        kinds = ", ".join(f"{a} ({'paper' if is_paper_account(a) else 'live'})" for a in probe.accounts)
        checks.append(Check("accounts", "OK", kinds))
    # 6. paper / live
    checks.append(_paper_live(port, probe.accounts, mode, account))
    # 7. farms
    checks.append(_farms(probe.errors))
    return checks


def _absorb(conn: _Conn, probe: Probe) -> None:
    new, conn.consumed = conn.payloads[conn.consumed :], len(conn.payloads)
    for payload in new:
        try:
            fields = split_fields(payload)
        except ProtocolError:
            continue
        if not fields:
            continue
        mid = fields[0]
        if mid == MSG_NEXT_VALID_ID and len(fields) >= 3:
            probe.next_valid_id = int(fields[2] or 0)
        elif mid == MSG_MANAGED_ACCOUNTS and len(fields) >= 3:
            probe.accounts = [a for a in fields[2].split(",") if a]
        elif mid == MSG_ERROR and len(fields) >= 5:
            try:
                probe.errors.append((int(fields[3]), fields[4]))
            except ValueError:
                pass


def _paper_live(port: int, accounts: list[str], mode: str | None, account: str | None) -> Check:
    if not accounts:
        return Check("paper/live", "SKIP", "no accounts to compare")
    paper = all(is_paper_account(a) for a in accounts)
    live = not any(is_paper_account(a) for a in accounts)
    kind = "paper" if paper else "live" if live else "mixed"
    port_kind = _kind_of_port(port)
    if account and account not in accounts:
        return Check(
            "paper/live",
            "FAIL",
            f"account {account} is not among {', '.join(accounts)}",
            "set gateway.account to one of the managed accounts, or log in with the right user",
        )
    if mode in ("sim", "paper") and not paper:
        return Check(
            "paper/live",
            "FAIL",
            f"mode {mode} but this login manages live account(s)",
            f"connect to the paper login (IB Gateway port {DEFAULT_PORTS['paper']}, TWS 7497) or set "
            f'gateway.mode = "live" with KHAZAD_LIVE_CONFIRM',
        )
    if mode == "live" and not live:
        return Check(
            "paper/live",
            "FAIL",
            "mode live but this login manages paper account(s) (DU...)",
            f"connect to the live login (IB Gateway port {DEFAULT_PORTS['live']}, TWS 7496) or set "
            f'gateway.mode = "paper"',
        )
    if port_kind and kind in ("paper", "live") and port_kind != kind:
        return Check(
            "paper/live",
            "FAIL",
            f"port {port} is the usual {port_kind} port but the accounts are {kind}",
            "the paper and live logins are swapped or TWS's API port was changed: check 'Socket port' "
            "in TWS API settings and which login runs there",
        )
    return Check(
        "paper/live",
        "OK",
        f"{kind} accounts"
        + (f" on the usual {port_kind} port" if port_kind else "")
        + (f", mode {mode}" if mode else ""),
    )


def _farms(errors: list[tuple[int, str]]) -> Check:
    ok = [m for c, m in errors if c in FARM_OK]
    broken = [m for c, m in errors if c in FARM_BROKEN]
    lost = [m for c, m in errors if c == 1100]
    if lost:
        return Check(
            "farms",
            "FAIL",
            f"TWS has lost IB's servers (1100: {lost[0]})",
            "check TWS's own internet connection and IB's system status page; orders will be refused",
        )
    if broken:
        return Check(
            "farms",
            "FAIL",
            "; ".join(broken),
            "TWS cannot reach IB's data farms: check its internet connection and IB's system status; "
            "market data will be missing",
        )
    if ok:
        return Check("farms", "OK", "; ".join(ok))
    return Check(
        "farms",
        "WARN",
        "no farm status notices received",
        "usually harmless right after a TWS start; run doctor again in a minute",
    )


def _defaults(args: argparse.Namespace) -> tuple[str, int, int, str | None, str | None]:
    host, port, client_id, mode, account = "127.0.0.1", 0, 1, None, None
    try:
        from bus.config import ConfigError, find_config_path, load_config

        if getattr(args, "config", None) or find_config_path():
            cfg = load_config(getattr(args, "config", None))
            g = cfg.gateway
            host, client_id, mode, account = g.host, g.client_id, g.mode, g.account or None
            port = g.port or (cfg.sim.port if g.mode == "sim" else DEFAULT_PORTS[g.mode])
    except ConfigError as exc:  # doctor still runs with explicit --host/--port
        print(f"(config not used: {exc})", file=sys.stderr)
    host = args.host or host
    port = args.port or port or DEFAULT_PORTS["paper"]
    client_id = args.client_id if args.client_id is not None else client_id
    return host, port, client_id, args.mode or mode, args.account or account


def _run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    host, port, client_id, mode, account = _defaults(args)
    print(f"khazad doctor: {host}:{port} client id {client_id}" + (f" mode {mode}" if mode else ""), file=out)
    checks = run_checks(host, port, client_id, mode=mode, account=account, timeout=args.timeout)
    for c in checks:
        print(c.line(), file=out)
    failed = [c for c in checks if c.status == "FAIL"]
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed", file=out)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="diagnose the connection to TWS / IB Gateway (one line per check, with fixes)")
    p.add_argument("--host", help="TWS/IB Gateway host (default: gateway.host, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default: the gateway's port for its mode)")
    p.add_argument("--client-id", type=int, dest="client_id", help="client id to try (default: gateway.client_id)")
    p.add_argument("--mode", choices=("sim", "paper", "live"), help="what you intend to trade (checks accounts)")
    p.add_argument("--account", help="the account you intend to trade")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per step (default 5)")
    p.set_defaults(handler=_run)
