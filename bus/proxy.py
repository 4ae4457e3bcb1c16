"""The event bus proxy: ``python -m bus.proxy --config khazad.toml``.

XSUB (``bus.proxy_frontend``, publishers connect) <-> XPUB (``bus.proxy_backend``, subscribers connect), both CURVE
servers behind the allow-list's ZAP handler. A thread forwards every message whose sender's key may publish its
topic (:func:`forward_with_acl`); with CURVE turned off explicitly, libzmq's steerable proxy forwards everything
(C speed, no Python per message). The main thread handles signals: on
SIGTERM/SIGINT it sends TERMINATE to the proxy's control socket and exits 0 within the shutdown bound. The proxy
publishes its own heartbeat (``hb.proxy``) through itself, which also proves the path works end to end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import zmq
from loguru import logger

from bus import registry, sockets, topics
from bus.authz import may_publish
from bus.codec import Stamper
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.messages import Heartbeat
from bus.pubsub import Publisher
from bus.runtime import load_or_exit
from bus.security import Security

PROCESS = registry.PROXY.name
CONTROL_ENDPOINT = "inproc://proxy-control"
SELF_ENDPOINT = "inproc://proxy-self"

#: How often the proxy logs a running count of refused messages (the first one is always logged).
REFUSED_LOG_EVERY = 1000


def forward_with_acl(frontend: zmq.Socket, backend: zmq.Socket, control: zmq.Socket, security: Security) -> None:
    """The CURVE proxy: like zmq.proxy, plus the publish ACL (:func:`bus.authz.may_publish`, from the table
    :data:`bus.topics.PUBLISHERS`) applied to every message from its sender's key as the allow-list says now (the
    ZAP User-Id on each message is the sender's public key)."""
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    poller.register(control, zmq.POLLIN)
    refused = 0
    while True:
        events = dict(poller.poll())
        if control in events and control.recv() == b"TERMINATE":
            return
        if frontend in events:
            while True:
                try:
                    frames = frontend.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                try:
                    principal = security.principal(str(frames[0].get("User-Id") or ""))
                except zmq.ZMQError:
                    principal = None
                topic = frames[0].bytes.decode(errors="replace")
                if may_publish(principal, topic):
                    backend.send_multipart(frames, copy=False)
                else:
                    refused += 1
                    if refused == 1 or refused % REFUSED_LOG_EVERY == 0:
                        logger.warning(
                            "proxy: refused {} message(s) from a key that may not publish them (latest: {} on {!r})",
                            refused,
                            principal.id if principal is not None else "a key not (or no longer) allowed",
                            topic[:64],
                        )
        if backend in events:
            while True:
                try:
                    frontend.send_multipart(backend.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break


def serve(cfg: KhazadConfig, stop: threading.Event, ready: threading.Event | None = None) -> int:
    bus = cfg.bus
    ctx = zmq.Context()
    security = None
    if bus.curve.enabled:
        security = Security.for_process(cfg, PROCESS)
        security.start_authenticator(ctx)
    frontend = sockets.configure(ctx.socket(zmq.XSUB), rcvhwm=bus.recv_hwm)
    backend = sockets.configure(ctx.socket(zmq.XPUB), sndhwm=bus.send_hwm)
    control = ctx.socket(zmq.PAIR)
    control.setsockopt(zmq.LINGER, 0)
    sockets_to_close = [frontend, backend, control]
    try:
        sockets.bind(frontend, bus.proxy_frontend, allow_non_loopback=bus.allow_non_loopback, security=security)
        frontend.bind(SELF_ENDPOINT)
        sockets.bind(backend, bus.proxy_backend, allow_non_loopback=bus.allow_non_loopback, security=security)
        control.bind(CONTROL_ENDPOINT)
        worker_ctl = ctx.socket(zmq.PAIR)
        worker_ctl.setsockopt(zmq.LINGER, 0)
        worker_ctl.connect(CONTROL_ENDPOINT)
        sockets_to_close.append(worker_ctl)

        def forward() -> None:
            try:
                if security is not None:
                    forward_with_acl(frontend, backend, worker_ctl, security)
                else:
                    zmq.proxy_steerable(frontend, backend, None, worker_ctl)  # C speed when there is no ACL
            except zmq.ContextTerminated:
                pass

        thread = threading.Thread(target=forward, name="proxy", daemon=True)
        thread.start()
        stamper = Stamper(PROCESS)
        if security is not None:  # publish our heartbeat as actor:proxy through the authenticated endpoint
            hb = Publisher(ctx, bus.proxy_frontend, stamper, security=security, server_key=security.public)
        else:
            hb = Publisher(ctx, SELF_ENDPOINT, stamper)
        sockets_to_close.append(hb.sock)
        logger.info(
            "proxy: publishers -> {}  subscribers -> {} (pid {})", bus.proxy_frontend, bus.proxy_backend, os.getpid()
        )
        if ready is not None:
            ready.set()
        topic = topics.heartbeat(PROCESS)
        while not stop.is_set():
            hb.publish(topic, Heartbeat(actor=PROCESS, pid=os.getpid(), interval_s=bus.heartbeat_interval_s))
            stop.wait(bus.heartbeat_interval_s)  # periodic timer; wakes at once on stop
        control.send(b"TERMINATE")
        thread.join(timeout=1.0)
        logger.info("proxy: stopped")
        return 0
    finally:
        for s in sockets_to_close:
            s.close(0)
        if security is not None:
            security.stop_authenticator()
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bus.proxy", description="Khazad event bus proxy (XSUB/XPUB)")
    parser.add_argument("--config", help="path to khazad.toml")
    args = parser.parse_args(argv)
    cfg = load_or_exit(args.config, PROCESS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        return serve(cfg, stop)
    except ConfigError as exc:
        logger.critical("proxy: configuration error: {}", exc)
        return EXIT_CONFIG
    except zmq.ZMQError as exc:
        logger.critical("proxy: cannot bind: {}", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
