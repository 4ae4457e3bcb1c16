"""Measure what Khazad publishes about an order when IB sends a notice on it (issue 12's before/after table).

``python -m tests.truth.probe [codes...]`` starts the truth desk (simulator, proxy, gateway, risk, order manager:
real processes) and, for each code: places a resting order, has the simulator send the code on it (control
``order_notice``: IB's order is unchanged), waits behind a barrier (another order's cancel, published after the
notice), and prints each view next to IB's ground truth; then fills the order and prints the views again. Only
requests every version of Khazad answers are used, so the same probe measures the old code and the new.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.support.waiting import eventually
from tests.truth.support import RESTING_BUY, SETTLE_TIMEOUT_S, Desk, running_desk, spec

DEFAULT_CODES = (103, 104, 105, 110, 135, 161, 163, 200, 201, 202, 327, 383, 387, 399, 404, 434, 439, 441, 451,
                 2109, 2137, 10006, 10089, 10090, 10147, 10148, 10149, 10245, 10311, 10349, 99999)
BARRIER_SYMBOL = "MSFT"
BARRIER_LIMIT = 410.0  # MSFT trades near 420 in the simulator: resting, inside the collar


def barrier(desk: Desk, tag: str) -> None:
    """Everything the gateway published before this point has reached the order manager and risk."""
    b = spec(f"barrier{tag}", symbol=BARRIER_SYMBOL, limit=BARRIER_LIMIT)
    desk.place_working(b)
    eventually(lambda: desk.risk_state().working_buy.get(BARRIER_SYMBOL, 0.0) > 0, SETTLE_TIMEOUT_S)
    desk.cancel(b, reason="barrier")
    eventually(lambda: desk.order(b).status == "Cancelled", SETTLE_TIMEOUT_S)
    eventually(lambda: desk.risk_state().working_buy.get(BARRIER_SYMBOL, 0.0) == 0.0, SETTLE_TIMEOUT_S)


def views(desk: Desk, s: object) -> str:
    v = desk.order(s)  # type: ignore[arg-type]
    risk = desk.risk_state().working_buy.get("AAPL", 0.0)
    snap = [o.status for o in desk.snapshot().open_orders if o.order_ref == s.order_ref]  # type: ignore[attr-defined]
    truth = desk.sim_order(s.order_ref)  # type: ignore[attr-defined]
    late = any("late fill" in h.reason for h in v.history)
    return (f"orders={v.status}/{v.error_code}/{v.reason[:40]!r} filled={v.filled:g}{' LATE' if late else ''} "
            f"risk_working={risk:g} (IB {desk.sim_working_qty():g}) snapshot={snap} IB={truth['status']}")


def main(codes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_desk(Path(tmp)) as desk:
        for code in codes:
            s = spec(f"p{code}")
            perm = desk.place_working(s)["permId"]
            desk.sim.call("order_notice", perm_id=perm, code=code)
            barrier(desk, str(code))
            after_notice = views(desk, s)
            desk.sim.call("fill", perm_id=perm, price=RESTING_BUY)
            eventually(lambda s=s: desk.order(s).filled >= s.quantity, SETTLE_TIMEOUT_S)
            barrier(desk, f"{code}f")
            print(f"{code}\tnotice: {after_notice}\n\tfill:   {views(desk, s)}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or list(DEFAULT_CODES))
