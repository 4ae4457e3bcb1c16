"""supervisord's XML-RPC interface over its unix socket (``supervisor.getAllProcessInfo()`` and friends): how a run
(and the tests) see and drive the programs."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from typing import Any


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path, self._timeout)


def supervisor_rpc(sock_path: Path, timeout: float = 5.0) -> xmlrpc.client.ServerProxy:
    """XML-RPC proxy to supervisord over its unix socket (``.supervisor.getAllProcessInfo()`` etc.)."""
    return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(sock_path), timeout))


def supervisor_running(sock_path: Path) -> int | None:
    """supervisord's pid if one answers on ``sock_path``."""
    if not sock_path.exists():
        return None
    try:
        pid = supervisor_rpc(sock_path, 2.0).supervisor.getPID()
    except (OSError, xmlrpc.client.Error):
        return None
    assert isinstance(pid, int)  # supervisord's getPID() answers an int (the stubs allow any XML-RPC value)
    return pid


def process_infos(rpc: xmlrpc.client.ServerProxy) -> dict[str, dict[str, Any]]:
    infos = rpc.supervisor.getAllProcessInfo()
    assert isinstance(infos, list)  # a list of structs (the stubs allow any XML-RPC value)
    return {i["name"]: i for i in infos}
