"""The operator's allow-list (bus/allowlist.py) and the two authorisation tables (bus/authz.py: requests;
bus/topics.py PUBLISHERS: topics), checked against expectations written out here by hand, never read back from the
tables themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq

from bus import allowlist, topics
from bus import messages as m
from bus.allowlist import AllowList, Principal
from bus.authz import authorize, may_publish
from bus.config import EXIT_CONFIG, ConfigError
from tests.support.config import cfg_of, write_config
from tests.support.processes import ActorProcess

KEY_A = zmq.curve_keypair()[0].decode()
KEY_B = zmq.curve_keypair()[0].decode()


def principal(name: str, role: str, *sids: str) -> Principal:
    return Principal(name=name, role=role, public_key=KEY_A,
                     strategies=frozenset(sids or ((name,) if role == "strategy" else ())))


MOMO = principal("momo", "strategy")
DESK = principal("desk", "strategy", "d1", "d2")
ALICE = principal("alice", "operator")
GATEWAY, RISK, ORDERS, PORTFOLIO, MONITOR, PROXY = (principal(n, "actor") for n in
                                                     ("gateway", "risk", "orders", "portfolio", "monitor", "proxy"))


def spec(strategy: str = "momo") -> m.OrderSpec:
    return m.OrderSpec(strategy_id=strategy, client_order_id="c1", instrument=m.Instrument(symbol="AAPL"),
                       side="BUY", quantity=1)


APPROVAL = m.Approval(approval_id="a", order_digest="d", issued_wall_ns=0, expires_wall_ns=1, signature="s")


# -- requests -------------------------------------------------------------------------------------------------------

ALLOWED = [
    (MOMO, m.PlaceOrder(order=spec())),
    (MOMO, m.CancelOrder(strategy_id="momo", client_order_id="c1")),
    (MOMO, m.UnsubscribeMarketData(symbol="AAPL", subscriber="strategy.momo")),
    (MOMO, m.SubscribeMarketData(instrument=m.Instrument(symbol="AAPL"), subscriber="strategy.momo")),
    (DESK, m.PlaceOrder(order=spec("d2"))),
    (ALICE, m.PlaceOrder(order=spec("anyone"))),
    (ALICE, m.Kill(kill_id="k", reason="r")),
    (ALICE, m.Resume(reason="r")),
    (ALICE, m.UnsubscribeMarketData(symbol="AAPL", subscriber="risk")),
    (ORDERS, m.CheckOrder(order=spec())),
    (ORDERS, m.SubmitOrder(order=spec(), approval=APPROVAL)),
    (ORDERS, m.AmendOrder(order=spec(), approval=APPROVAL)),
    (RISK, m.EmergencyCancel(command_id="c", reason="r")),
    (RISK, m.SubscribeMarketData(instrument=m.Instrument(symbol="AAPL"), subscriber="risk")),
    (PORTFOLIO, m.GetSnapshot()),
    (MONITOR, m.GetRiskState()),
    # the data plane (issue 17): any key reads data; a what-if only for the key's own strategy; bars as itself
    (MOMO, m.GetHistoricalBars(instrument=m.Instrument(symbol="AAPL"))),
    (MOMO, m.WhatIfOrder(order=spec())),
    (RISK, m.WhatIfOrder(order=spec("anyone"))),
    (MOMO, m.SubscribeBars(instrument=m.Instrument(symbol="AAPL"), subscriber="strategy.momo")),
    (MOMO, m.GetDailyPnl()),
]
REFUSED = [
    (MOMO, m.CheckOrder(order=spec())),  # approvals go to the order manager only
    (MOMO, m.SubmitOrder(order=spec(), approval=APPROVAL)),
    (RISK, m.SubmitOrder(order=spec(), approval=APPROVAL)),  # the gateway takes orders from the order manager only
    (RISK, m.AmendOrder(order=spec(), approval=APPROVAL)),
    (PORTFOLIO, m.CheckOrder(order=spec())),
    (MOMO, m.PlaceOrder(order=spec("other"))),
    (MOMO, m.CancelAllOrders(strategy_id="other")),
    (DESK, m.PlaceOrder(order=spec("desk"))),  # a key's name is not a grant: its entry's strategies are
    (MOMO, m.UnsubscribeMarketData(symbol="AAPL", subscriber="risk")),
    (MOMO, m.SubscribeMarketData(instrument=m.Instrument(symbol="AAPL"), subscriber="strategy.other")),
    (PORTFOLIO, m.UnsubscribeMarketData(symbol="AAPL", subscriber="risk")),
    (MOMO, m.Kill(kill_id="k", reason="r")),
    (MOMO, m.Resume(reason="r")),
    (RISK, m.Resume(reason="r")),  # resume is an operator's, only
    (GATEWAY, m.Kill(kill_id="k", reason="r")),
    (MOMO, m.EmergencyCancel(command_id="c", reason="r")),
    (ORDERS, m.EmergencyCancel(command_id="c", reason="r")),
    (MOMO, m.SetTradingState(state="ACTIVE", reason="r")),
    (MOMO, m.GetSnapshot()),
    (None, m.Ping()),  # a key no longer on the list
    (MOMO, m.WhatIfOrder(order=spec("other"))),
    (MOMO, m.SubscribeBars(instrument=m.Instrument(symbol="AAPL"), subscriber="strategy.other")),
    (MOMO, m.UnsubscribeBars(con_id=265598, subscriber="strategy.other")),
]


@pytest.mark.parametrize(("who", "body"), ALLOWED, ids=lambda x: getattr(x, "id", type(x).__name__))
def test_allowed_requests_pass(who: Principal, body: object) -> None:
    assert authorize(who, body) is None


@pytest.mark.parametrize(("who", "body"), REFUSED, ids=lambda x: getattr(x, "id", type(x).__name__))
def test_refused_requests_get_unauthorized(who: Principal | None, body: object) -> None:
    rej = authorize(who, body)
    assert rej is not None and rej.code == "unauthorized" and rej.request_type == m.tag_of(type(body))


# -- topics ---------------------------------------------------------------------------------------------------------

PUBLISH = [
    (GATEWAY, topics.fill("AAPL"), True), (MOMO, topics.fill("AAPL"), False), (ALICE, topics.fill("AAPL"), False),
    (ORDERS, topics.fill("AAPL"), False),
    (GATEWAY, topics.gw_order("s1"), True), (RISK, topics.gw_order("s1"), False),
    (ORDERS, topics.order("s1"), True), (GATEWAY, topics.order("s1"), False), (MOMO, topics.order("momo"), False),
    (GATEWAY, topics.TRADING_STATE, False), (RISK, topics.TRADING_STATE, True), (MOMO, topics.TRADING_STATE, False),
    (ALICE, topics.TRADING_STATE, False), (GATEWAY, topics.CONNECTION_STATE, True),
    (RISK, topics.CONNECTION_STATE, False),
    (ALICE, topics.KILL, True), (GATEWAY, topics.KILL, True), (MOMO, topics.KILL, False), (RISK, topics.KILL, False),
    (ALICE, topics.RESUME, True), (MOMO, topics.RESUME, False), (RISK, topics.RESUME, False),
    (GATEWAY, topics.RESUME, False),
    (RISK, topics.EMERGENCY_CANCEL, True), (ALICE, topics.EMERGENCY_CANCEL, False),
    (ALICE, "control.anything", False), (GATEWAY, "control.anything", False),
    (GATEWAY, topics.market_data("AAPL"), True), (MOMO, topics.market_data("AAPL"), False),
    (GATEWAY, topics.instrument(265598), True), (MOMO, topics.instrument(265598), False),
    (RISK, topics.instrument(265598), False),
    (GATEWAY, topics.ACCOUNT_PNL, True), (GATEWAY, topics.position_pnl(265598), True),
    (MOMO, topics.ACCOUNT_PNL, False), (ALICE, topics.ACCOUNT_PNL, False), (RISK, topics.position_pnl(265598), False),
    (GATEWAY, topics.bars(265598, "TRADES", 5), True), (MOMO, topics.bars(265598, "TRADES", 5), False),
    (GATEWAY, topics.ACCOUNT_VALUES, True), (PORTFOLIO, topics.ACCOUNT_VALUES, False),
    (PORTFOLIO, topics.PORTFOLIO_SNAPSHOT, True), (MOMO, topics.PORTFOLIO_SNAPSHOT, False),
    (RISK, topics.risk_decision("s1"), True), (ORDERS, topics.risk_decision("s1"), False),
    (MOMO, topics.heartbeat("strategy.momo"), True), (MOMO, topics.heartbeat("momo"), True),
    (MOMO, topics.heartbeat("gateway"), False), (MOMO, topics.heartbeat("strategy.other"), False),
    (GATEWAY, topics.heartbeat("gateway"), True), (GATEWAY, topics.heartbeat("risk"), False),
    (PROXY, topics.heartbeat("proxy"), True), (DESK, topics.heartbeat("strategy.d1"), True),
    (MOMO, topics.gap("strategy.momo"), True), (MOMO, topics.gap("risk"), False),
    (ORDERS, topics.recon("orders"), True), (ORDERS, topics.recon("portfolio"), False),
    (MONITOR, topics.alert("actor_dead"), True), (RISK, topics.alert("breaker"), True),
    (MOMO, topics.alert("strategy"), True), (MOMO, topics.alert("actor_dead"), False),
    (ALICE, topics.alert("operator"), True), (ALICE, topics.alert("strategy"), False),
    (MOMO, "_probe.x.1", True), (None, "_probe.x.1", False), (None, topics.heartbeat("x"), False),
    (GATEWAY, "test.anything", False), (ALICE, "anything.else", False),
]


@pytest.mark.parametrize(("who", "topic", "allowed"), PUBLISH,
                         ids=[f"{w.id if w else 'none'}-{t}" for w, t, _ in PUBLISH])
def test_publish_acl(who: Principal | None, topic: str, allowed: bool) -> None:
    assert may_publish(who, topic) is allowed


#: the topics the actors publish (named by hand, one per topic constant or builder of bus/topics.py): a topic
#: that no PUBLISHERS line covers is refused for everyone, its owner included
OWNED_TOPICS = [
    (GATEWAY, topics.CONNECTION_STATE), (RISK, topics.TRADING_STATE), (GATEWAY, topics.KILL),
    (ALICE, topics.RESUME), (RISK, topics.EMERGENCY_CANCEL), (GATEWAY, topics.gw_order("s1")),
    (GATEWAY, topics.fill(265598)), (GATEWAY, topics.commission(265598)), (GATEWAY, topics.position(265598)),
    (GATEWAY, topics.ACCOUNT_VALUES), (GATEWAY, topics.market_data(265598)), (GATEWAY, topics.instrument(265598)),
    (GATEWAY, topics.ACCOUNT_PNL), (GATEWAY, topics.position_pnl(265598)), (ORDERS, topics.order("s1")),
    (GATEWAY, topics.bars(265598, "TRADES", 60)),
    (RISK, topics.risk_decision("s1")), (ORDERS, topics.recon("orders")), (PORTFOLIO, topics.PORTFOLIO_SNAPSHOT),
    (MONITOR, topics.alert("actor_dead")), (GATEWAY, topics.heartbeat("gateway")), (MOMO, topics.gap("strategy.momo")),
]


@pytest.mark.parametrize(("who", "topic"), OWNED_TOPICS, ids=[t for _, t in OWNED_TOPICS])
def test_every_topic_an_actor_publishes_has_its_owner_in_publishers(who: Principal, topic: str) -> None:
    assert may_publish(who, topic), f"{topic}: no PUBLISHERS line lets {who.id} publish it"


# -- the file -------------------------------------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_parse_reads_roles_and_strategies_and_render_round_trips(tmp_path: Path) -> None:
    text = (f'[keys.desk]\nrole = "strategy"\npublic_key = "{KEY_A}"\nstrategies = ["d1", "d2"]\n\n'
            f'[keys.alice]\nrole = "operator"\npublic_key = "{KEY_B}"\n')
    got = allowlist.parse(text)
    assert got["desk"] == Principal(name="desk", role="strategy", public_key=KEY_A, strategies=frozenset({"d1", "d2"}))
    assert got["alice"].role == "operator" and got["alice"].strategies == frozenset()
    assert allowlist.parse(allowlist.render(got.values())) == got


@pytest.mark.parametrize(("text", "named"), [
    (f'[keys.momo]\nrole = "admin"\npublic_key = "{KEY_A}"\n', "keys.momo"),
    ('[keys.momo]\nrole = "strategy"\npublic_key = "short"\n', "keys.momo"),
    (f'[keys.gateway]\nrole = "strategy"\npublic_key = "{KEY_A}"\n', "actor's name"),
    (f'[keys.momo]\nrole = "strategy"\npublic_key = "{KEY_A}"\nstrategies = ["risk"]\n', "actors' names"),
    (f'[keys.alice]\nrole = "operator"\npublic_key = "{KEY_A}"\nstrategies = ["x"]\n', "only a strategy"),
    (f'[keys.a]\nrole = "operator"\npublic_key = "{KEY_A}"\n[keys.b]\nrole = "operator"\npublic_key = "{KEY_A}"\n',
     "same public key"),
    (f'[keys."bad name"]\nrole = "operator"\npublic_key = "{KEY_A}"\n', "key name"),
    ('[other]\nx = 1\n', "unknown table"),
])
def test_a_bad_entry_is_refused_naming_it(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        allowlist.parse(text)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_group_or_world_writable_allow_list_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "keys" / "allow.toml", f'[keys.alice]\nrole = "operator"\npublic_key = "{KEY_A}"\n',
                  mode)
    with pytest.raises(ConfigError, match="writable by group or others"):
        allowlist.load(path)
    os.chmod(path, 0o644)
    os.chmod(path.parent, 0o777)  # a directory others may write: they could swap the file
    with pytest.raises(ConfigError, match="keys directory"):
        allowlist.load(path)


def test_reload_on_change_and_a_broken_edit_keeps_the_last_good_list(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys" / "allow.toml", f'[keys.alice]\nrole = "operator"\npublic_key = "{KEY_A}"\n')
    allowed = AllowList(path, refresh_s=0.0)
    assert allowed.principal(KEY_A).id == "operator:alice" and allowed.principal(KEY_B) is None
    _write(path, f'[keys.bob]\nrole = "strategy"\npublic_key = "{KEY_B}"\n')
    assert allowed.principal(KEY_A) is None and allowed.principal(KEY_B).id == "strategy:bob"
    assert allowed.admits(KEY_B) and not allowed.admits(KEY_A)
    _write(path, "not toml [[[")
    assert allowed.principal(KEY_B).id == "strategy:bob"  # the last good list
    _write(path, f'[keys.bob]\nrole = "strategy"\npublic_key = "{KEY_B}"\n', mode=0o666)
    assert allowed.principal(KEY_B).id == "strategy:bob" and allowed.generation == 2


def test_actor_with_an_unsafe_allow_list_exits_78(tmp_path: Path, processes: list[ActorProcess]) -> None:
    path = write_config(tmp_path)
    allow = cfg_of(path).path("keys") / "allow.toml"
    os.chmod(allow, 0o666)
    proxy = ActorProcess("bus.proxy", path, name="proxy").start()
    processes.append(proxy)
    assert proxy.wait(30) == EXIT_CONFIG
    assert "writable by group or others" in proxy.log()
    risk = ActorProcess("actors.risk", path, name="risk").start()
    processes.append(risk)
    assert risk.wait(30) == EXIT_CONFIG
    assert "writable by group or others" in risk.log()
