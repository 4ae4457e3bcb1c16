"""The risk governor (``python -m actors.risk``): approves or rejects every order, owns the trading states
(ACTIVE / REDUCING / HALTED per scope) and the circuit breakers that halt trading and order emergency cancels.

Modules: :mod:`~actors.risk.actor` (the actor: routes requests and events), :mod:`~actors.risk.pretrade` (one
CheckOrder: views, approvals), :mod:`~actors.risk.checks` (the pure pre-trade checks), :mod:`~actors.risk.limits`
(global and per-strategy limits), :mod:`~actors.risk.mirror` (what risk knows of the gateway, snapshots),
:mod:`~actors.risk.exposure` (positions and working orders), :mod:`~actors.risk.quotes` (the governor's market
data) over :mod:`~actors.risk.market` (reference prices), :mod:`~actors.risk.account` (IB account values),
:mod:`~actors.risk.throttles` (rates, duplicates), :mod:`~actors.risk.state_keeper` (every read and change of
the trading states) over :mod:`~actors.risk.trading_state` (states, transition rules, persistence),
:mod:`~actors.risk.panel` (the breakers' inputs and actions) over :mod:`~actors.risk.breakers` (the pure
breakers), :mod:`~actors.risk.kill` (kills), :mod:`~actors.risk.cancels` (emergency cancels delivered to the
gateway), :mod:`~actors.risk.ports` (the narrow interfaces collaborators get). See ``docs/risk.md``.
"""
