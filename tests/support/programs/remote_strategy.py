"""A strategy process for the two-node test, run on node B:
``python -m tests.support.programs.remote_strategy --config B.toml --strategy ID --orders N --limit PRICE``.

Through the SDK (its key picked by strategy id from B's keys directory), it places N resting BUY limit orders,
waits until each is live at IB, prints ``{"refs": [...]}`` on one line, then keeps running (its heartbeat on the
bus) until SIGTERM/SIGINT, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from sdk import KhazadClient

LIVE_TIMEOUT_S = 30.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--strategy", required=True)
    p.add_argument("--orders", type=int, default=3)
    p.add_argument("--limit", type=float, required=True)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with KhazadClient(args.strategy, config=args.config, timeout_s=5.0) as c:
        refs = []
        for i in range(args.orders):
            view = c.place_limit_order("AAPL", "BUY", 1 + i, limit_price=args.limit)
            c.wait_for_order(view.spec.client_order_id, "live", timeout=LIVE_TIMEOUT_S)
            refs.append(view.spec.order_ref)
        print(json.dumps({"refs": refs}), flush=True)
        stop.wait()  # the process under test just keeps running until told to stop
    return 0


if __name__ == "__main__":
    sys.exit(main())
