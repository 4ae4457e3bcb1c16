"""The monitor's answer to ``GetSystemStatus``: one row per actor (expected ones first) and the system's
connection, trading state, alerts, counters and recent fills, bounded to what a reply may carry."""

from __future__ import annotations

from actors.monitor.activity import ActivityLedger
from actors.monitor.liveness import LivenessWatch, shown_state
from actors.monitor.reporting import AlertDesk
from actors.monitor.trading import TradingBoard
from bus.messages import MAX_ACTORS, MAX_DETAIL_ENTRIES, MAX_KEYED_ENTRIES, ActorHealth, SystemStatusReply

#: Alerts a status reply carries (newest first); the desk keeps more for the audit and the routes.
STATUS_ALERTS = 20


def actor_rows(liveness: LivenessWatch) -> list[ActorHealth]:
    """One row per actor: NOT SEEN for an expected actor that never reported; its RSS added to its detail."""
    rows = []
    tracker = liveness.tracker
    for name in liveness.names()[:MAX_ACTORS]:
        peer = tracker.peers.get(name)
        expected = name in liveness.expected
        if peer is None:
            rows.append(ActorHealth(name=name, alive=False, state="NOT SEEN", expected=expected))
            continue
        detail = dict(peer.detail)
        if name in liveness.rss and len(detail) < MAX_DETAIL_ENTRIES:
            detail["rss_mb"] = f"{liveness.rss[name] / 1e6:.1f}"
        rows.append(
            ActorHealth(
                name=name,
                alive=peer.alive,
                state=shown_state(peer),
                pid=peer.pid,
                last_beat_age_s=round(tracker.age(name) or 0.0, 3),
                detail=detail,
                expected=expected,
            )
        )
    return rows


def system_status(
    liveness: LivenessWatch, connection: str, trading: TradingBoard, desk: AlertDesk, ledger: ActivityLedger
) -> SystemStatusReply:
    """The whole ``SystemStatusReply`` (``khazad status`` and ``khazad top`` render it)."""
    counters = desk.counters
    rejects = int(counters.get("rejects_risk", 0) + counters.get("rejects_gateway", 0))
    return SystemStatusReply(
        actors=actor_rows(liveness),
        connection=connection,
        trading_state=trading.global_state(),
        epoch=trading.epoch,
        alerts=list(reversed(desk.alerts))[:STATUS_ALERTS],
        gaps=int(counters.get("gaps", 0)),
        rejects=rejects,
        recent_fills=list(ledger.recent_fills),
        trading_states=dict(list(trading.as_dict().items())[:MAX_KEYED_ENTRIES]),
        counters=dict(sorted(counters.items())),
    )
