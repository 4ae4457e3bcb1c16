"""A process on node B without an allowed key, for the two-node test:
``python -m tests.support.programs.remote_probe --config B.toml``.

It tries the gateway with no key at all, then with a key pair of its own that no allow-list names, and listens on
the proxy without a key. Prints one JSON line: for each attempt, whether anything answered (it must not).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import zmq

from bus import topics
from bus.codec import Stamper
from bus.config import load_config
from bus.messages import Ping
from bus.pubsub import SyncSubscriber
from bus.retry import RequestTimeout
from bus.sync_client import SyncClient
from bus.security import Security, client_security

#: A connected service answers a Ping in milliseconds; a refused handshake never does.
REFUSED_TIMEOUT_S = 2.0


def _answers(ctx: zmq.Context, endpoint: str, security: Any = None, server_key: Any = None) -> bool:
    cl = SyncClient(ctx, endpoint, service="gateway", stamper=Stamper("intruder"), timeout_s=REFUSED_TIMEOUT_S,
                    retries=0, security=security, server_key=server_key)
    try:
        cl.call(Ping())
        return True
    except RequestTimeout:
        return False
    finally:
        cl.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    ctx = zmq.Context()
    try:
        known = client_security(cfg, "alice")  # only for the servers' public keys (B holds them)
        assert known is not None
        public, secret = zmq.curve_keypair()
        stranger = Security(enabled=True, name="stranger", public=public, secret=secret, directory=known.directory)
        out = {
            "plain_gateway": _answers(ctx, cfg.bus.gateway),
            "unlisted_key_gateway": _answers(ctx, cfg.bus.gateway, stranger, known.server_key("gateway")),
            "listed_key_gateway": _answers(ctx, cfg.bus.gateway, known, known.server_key("gateway")),
        }
        sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, [topics.HEARTBEAT_PREFIX], name="intruder")
        out["plain_proxy_heartbeat"] = sub.recv(REFUSED_TIMEOUT_S) is not None
        sub.close()
        print(json.dumps(out), flush=True)
        return 0
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(main())
