"""The governor's shape, in one process (no sockets): exhaustive request dispatch, the kill switch forwarding one
emergency cancel under the kill's own id, and the house rules for actors/risk (topics from bus/topics.py, no
``Any`` in collaborator types, small modules)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

import actors.risk
from actors.risk.actor import RiskGovernor
from actors.risk.cancels import EmergencyCanceller
from actors.risk.kill import KillSwitch
from actors.risk.ports import AlertSender
from actors.risk.state_keeper import TradingStateKeeper
from actors.risk.trading_state import TradingStates
from bus import messages as m
from bus import topics
from bus.dispatch import REQUEST_TYPES, unhandled_requests
from tests.support.config import cfg_of, write_config

RISK_DIR = Path(actors.risk.__file__).parent
MAX_MODULE_LINES = 500


@pytest.fixture
def governor(tmp_path: Path) -> RiskGovernor:
    return RiskGovernor(cfg_of(write_config(tmp_path)))


def test_risk_dispatch_handles_or_refuses_every_request_type(governor: RiskGovernor) -> None:
    assert unhandled_requests(governor) == (set(), set())


def test_risk_refused_request_is_answered_unknown_command_and_handled_ones_are_routed(
        governor: RiskGovernor) -> None:
    refused = asyncio.run(governor.on_request(None, m.GetSnapshot()))  # type: ignore[arg-type]
    assert isinstance(refused, m.Rejected) and refused.code == "unknown_command"
    assert refused.request_type == "get_snapshot"
    state = asyncio.run(governor.on_request(None, m.GetRiskState()))  # type: ignore[arg-type]
    assert isinstance(state, m.RiskStateReply) and not state.ready and state.global_state == "ACTIVE"
    assert m.CheckOrder not in governor.refused_requests and m.CheckOrder in governor.request_handlers()
    assert REQUEST_TYPES - set(governor.request_handlers()) == set(governor.refused_requests)


class _Gateway:
    """A gateway link that acknowledges every emergency cancel and records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[m.Request] = []

    async def call_once(self, body: m.Request, timeout_s: float) -> m.Reply | None:
        self.sent.append(body)
        assert isinstance(body, m.EmergencyCancel)
        return m.CancelReport(command_id=body.command_id, scope=body.scope, trading_state="ACTIVE", epoch=1,
                              cancelled=2, remaining=0, confirmed=True, detail="test gateway")

    async def call(self, body: m.Request, timeout_s: float) -> m.Reply | None:
        return await self.call_once(body, timeout_s)


def test_kill_forwards_one_emergency_cancel_carrying_the_kill_id_and_halts_once() -> None:
    published: list[tuple[str, m.Event]] = []

    def publish(topic: str, body: m.Event) -> None:
        published.append((topic, body))

    gateway = _Gateway()
    states = TradingStateKeeper(TradingStates(None), publish)
    canceller = EmergencyCanceller(publish, gateway, AlertSender(publish, "risk"), attempt_timeout_s=1.0)
    switch = KillSwitch(states, canceller, lambda scope: [])
    kill = m.Kill(kill_id="k-7", scope="strategy:alpha", reason="runaway", origin="ops")

    async def scenario() -> m.CancelReport:
        report = await switch.on_request(kill, "cli")
        switch.on_broadcast(kill, "cli")  # the bus copy of the same kill arrives too
        return report

    report = asyncio.run(scenario())
    assert report.command_id == "k-7" and report.confirmed and report.cancelled == 2
    assert report.trading_state == "HALTED"
    assert [(c.command_id, c.scope) for c in gateway.sent if isinstance(c, m.EmergencyCancel)] == \
        [("k-7", "strategy:alpha")]
    assert [b.command_id for t, b in published if t == topics.EMERGENCY_CANCEL
            and isinstance(b, m.EmergencyCancel)] == ["k-7"]
    halts = [b for t, b in published if t == topics.TRADING_STATE and isinstance(b, m.TradingStateEvent)]
    assert [(h.scope, h.state) for h in halts] == [("strategy:alpha", "HALTED")]
    assert states.epoch == 1


def _modules() -> list[Path]:
    return sorted(RISK_DIR.glob("*.py"))


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    return isinstance(parents.get(node), ast.Expr)


def test_risk_modules_spell_no_topic_literals() -> None:
    prefixes = tuple(v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str))
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                first = node.values[0] if node.values else None
                text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and not _is_docstring(node, parents):
                if isinstance(parents.get(node), ast.JoinedStr):
                    continue  # judged with its f-string
                text = node.value
            else:
                continue
            if text.startswith(prefixes):
                found.append(f"{path.name}:{node.lineno}: {text!r}")
    assert found == [], "use bus/topics.py for these topics"


def test_risk_modules_use_no_any() -> None:
    found = [f"{path.name}:{node.lineno}" for path in _modules() for node in ast.walk(ast.parse(path.read_text()))
             if (isinstance(node, ast.Name) and node.id == "Any")
             or (isinstance(node, ast.Attribute) and node.attr == "Any")]
    assert found == []


def test_risk_modules_stay_small() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in _modules()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
