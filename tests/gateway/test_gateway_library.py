"""The client-library seam: ib_insync is imported by exactly one module, and ib_async (its maintained fork) works
as a drop-in through it against the simulator."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bus import topics
from bus.messages import CancelIbOrder, CancelReport, FillEvent, Rejected, SubmitAck
from tests.support.builders import order
from tests.support.config import REPO
from tests.support.gateway_harness import FAR_BELOW, place_working
from tests.support.sim_state import sim_order, working_at_sim

IMPORT_RE = re.compile(r"^\s*(import|from)\s+(ib_insync|ib_async|ibapi)\b", re.M)
SEAM = REPO / "actors" / "gateway" / "ib.py"


def test_only_the_seam_imports_the_client_library():
    offenders = []
    for pkg in ("actors", "bus", "sdk", "cli", "launch"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            if IMPORT_RE.search(text) or ("import_module" in text and "ib_insync" in text and path != SEAM):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert "importlib.import_module(name)" in SEAM.read_text()
    # importing the gateway (and running the doctor) does not load the library; building a session does
    probe = ("import sys, actors.gateway.actor, cli.doctor; "
             "assert 'ib_insync' not in sys.modules and 'ib_async' not in sys.modules; "
             "from actors.gateway.ib import IbSession; IbSession('ib_async', pacing_per_s=45); "
             "assert 'ib_async' in sys.modules and 'ib_insync' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("gateway_overrides", [{"client_library": "ib_async"}])
def test_ib_async_drop_in_smoke(gateway, recorder, sim):
    assert "library=ib_async" in gateway.log()
    # a fill, with the exact status sequence
    spec = order(coid="async-fill", qty=10)
    assert isinstance(gateway.submit(spec), SubmitAck)
    recorder.wait_status(spec.order_ref, "Submitted")
    sim.advance(1.0)
    recorder.wait_status(spec.order_ref, "Filled")
    assert recorder.status_names(spec.order_ref) == ["PendingSubmit", "PreSubmitted", "Submitted", "Filled"]
    assert len([f for f in recorder.bodies(topics.FILL_PREFIX, FillEvent) if f.order_ref == spec.order_ref]) == 1
    # a 201 rejection with its reason
    sim.reject_next_orders(1, reason="async reject")
    rej = order(coid="async-rej")
    gateway.submit(rej)
    ev = recorder.wait_status(rej.order_ref, "Cancelled")
    assert ev.error_code == 201 and ev.reason == "async reject"
    # a cancel
    can = order(coid="async-can", order_type="LMT", limit=FAR_BELOW)
    gateway.submit(can)
    recorder.wait_status(can.order_ref, "Submitted")
    gateway.call(CancelIbOrder(order_ref=can.order_ref))
    recorder.wait_status(can.order_ref, "Cancelled")
    assert recorder.status_names(can.order_ref)[-2:] == ["Submitted", "Cancelled"]  # IB's statuses, no local guess
    assert recorder.statuses(can.order_ref)[-1].reason == "strategy: cancel requested"
    # a kill with sticky PreSubmitted orders
    sim.sticky_presubmitted(n=2)
    place_working(gateway, sim, 5, prefix="ak")
    report = gateway.kill(kill_id="async-kill")
    assert isinstance(report, CancelReport) and report.confirmed and report.cancelled == 5
    assert working_at_sim(sim.state()) == []
    refused = gateway.submit(order(coid="async-halted"))
    assert isinstance(refused, Rejected) and refused.code == "halted"
    # a daily restart with a fill in the gap
    gateway.resume()
    refs = place_working(gateway, sim, 1, prefix="ag")
    perm = sim_order(sim.state(), refs[0])["permId"]
    sim.refuse_connections()
    sim.drop_connections("daily restart")
    recorder.wait_for(lambda r: any(e.state == "DISCONNECTED" for e in r.bodies(topics.CONNECTION_STATE)),
                      what="DISCONNECTED")
    sim.fill(perm)
    sim.accept_connections()
    gateway.wait_ready()
    gap = recorder.wait_for(lambda r: [f for f in r.bodies(topics.FILL_PREFIX, FillEvent) if f.order_ref == refs[0]])
    assert len(gap) == 1 and gap[0].replayed
