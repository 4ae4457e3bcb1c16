"""A brand-new publisher process for the slow-joiner tests: ``python -m tests.support.programs.burst_publisher --config <path>
--count N [--topic T]``.

It connects, does the ready handshake and publishes ``Alert(kind="burst", message="<i>")`` for i in 0..N-1 at once,
then keeps its socket open until SIGTERM (closing with linger 0 would drop whatever is still queued) and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import zmq

from bus.codec import Stamper
from bus.config import load_config
from bus.messages import Alert
from bus.pubsub import Publisher
from bus.security import client_security


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--topic", default="burst.x")
    parser.add_argument("--name", default="burst")
    parser.add_argument("--key", default="tester", help="the CURVE key to publish with (an actor's: alert.* topics)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cfg = load_config(args.config, env={})
    ctx = zmq.Context()
    sec = client_security(cfg, args.key)
    pub = Publisher(ctx, cfg.bus.proxy_frontend, Stamper(args.name), security=sec,
                    server_key=sec.server_key("proxy") if sec is not None else None)
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        for i in range(args.count):
            pub.publish(args.topic, Alert(kind="burst", message=str(i)))
        print(f"published {args.count}", flush=True)
        stop.wait()
        return 0
    finally:
        pub.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
