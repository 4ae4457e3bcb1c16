"""A subscriber process that stalls on purpose: ``python -m tests.support.programs.stalled_subscriber --config <path> --topic T
--stall S``.

It subscribes with a receive high-water mark of 1, does the ready handshake, prints ``ready``, then does not read
for S seconds (the stall under test: longer than the transport's heartbeat timeout), then drains until it sees an
``Alert(message="end")`` and prints ``received=<n> gaps=<g> missed=<m>``. Exit 0 means it survived the stall.
"""

from __future__ import annotations

import argparse
import sys
import threading

import zmq

from bus.codec import Stamper
from bus.config import load_config
from bus.pubsub import Publisher, SyncSubscriber
from bus.security import client_security

#: Bound for draining after the stall.
DRAIN_TIMEOUT_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--stall", type=float, required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, env={})
    ctx = zmq.Context()
    sec = client_security(cfg, "operator")
    key = sec.server_key("proxy") if sec is not None else None
    sub = SyncSubscriber(ctx, cfg.bus.proxy_backend, [args.topic], name="stalled", rcvhwm=1, security=sec,
                         server_key=key)
    helper = Publisher(ctx, cfg.bus.proxy_frontend, Stamper("stalled-probe"), security=sec, server_key=key)
    try:
        sub.wait_ready(helper)
        print("ready", flush=True)
        threading.Event().wait(args.stall)  # the stall being tested (not reading), not synchronisation
        received = 0
        while (got := sub.recv(DRAIN_TIMEOUT_S)) is not None:
            received += 1
            if getattr(got[1].body, "message", "") == "end":
                break
        print(f"received={received} gaps={sub.tracker.gaps} missed={sub.tracker.missed}", flush=True)
        return 0 if got is not None else 1
    finally:
        helper.close()
        sub.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
