"""Local HTTP and SMTP servers for the alert-route tests (127.0.0.1, free ports, threads the fixtures stop).

The HTTP server records every POST per path. ``/slow`` holds its answer until the test releases it (or 30 s);
``/fail`` answers 500; ``/flaky`` answers 500 to its first two requests, then 200. The SMTP server speaks enough
RFC 5321 for smtplib: EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT (no TLS)."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_HOLD_S = 30.0


@dataclass
class Recorded:
    requests: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    hits: dict[str, int] = field(default_factory=dict)

    def posts(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body, _ in self.requests if p == path]


class HttpSink:
    """A ThreadingHTTPServer on a free port recording JSON POSTs (see module docstring)."""

    def __init__(self) -> None:
        rec = self.rec = Recorded()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                import time

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rec.lock:
                    rec.hits[self.path] = rec.hits.get(self.path, 0) + 1
                    n = rec.hits[self.path]
                    rec.requests.append((self.path, json.loads(body or b"null"), time.monotonic()))
                if self.path == "/slow":
                    rec.release.wait(SLOW_HOLD_S)
                status = 500 if self.path == "/fail" or (self.path == "/flaky" and n <= 2) else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-sink", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.rec.release.set()
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A minimal SMTP server: records (envelope from, recipients, parsed message, auth user/password)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write((line + "\r\n").encode())

            def handle(self) -> None:
                self.reply("220 sink ESMTP")
                mail_from, rcpts, auth = "", [], ("", "")
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    line = raw.decode().rstrip("\r\n")
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250-sink")
                        self.reply("250-AUTH PLAIN LOGIN")
                        self.reply("250 8BITMIME")
                    elif verb == "AUTH":
                        parts = line.split()
                        if parts[1].upper() == "PLAIN":
                            token = parts[2] if len(parts) > 2 else ""
                            if not token:
                                self.reply("334 ")
                                token = self.rfile.readline().decode().strip()
                            _, user, pw = base64.b64decode(token).decode().split("\0")
                        else:
                            self.reply("334 VXNlcm5hbWU6")
                            user = base64.b64decode(self.rfile.readline().strip()).decode()
                            self.reply("334 UGFzc3dvcmQ6")
                            pw = base64.b64decode(self.rfile.readline().strip()).decode()
                        auth = (user, pw)
                        self.reply("235 ok")
                    elif verb == "MAIL":
                        mail_from = line.split(":", 1)[1].strip().split()[0].strip("<>")
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        rcpts.append(line.split(":", 1)[1].strip().strip("<>"))
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b".\n", b""):
                                break
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        with sink.lock:
                            sink.messages.append({"from": mail_from, "to": list(rcpts),
                                                  "message": message_from_bytes(data), "auth": auth})
                        rcpts = []
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 ok")
                    else:
                        self.reply("502 not implemented")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="smtp-sink", daemon=True)
        self.thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
