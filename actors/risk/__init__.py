"""The risk governor (``python -m actors.risk``): approves or rejects every order, owns the trading states
(ACTIVE / REDUCING / HALTED per scope) and the circuit breakers that halt trading and order emergency cancels.

Modules: :mod:`~actors.risk.checks` (the pure pre-trade checks), :mod:`~actors.risk.limits` (global and
per-strategy limits), :mod:`~actors.risk.exposure` (positions and working orders), :mod:`~actors.risk.market`
(reference prices), :mod:`~actors.risk.account` (IB account values), :mod:`~actors.risk.throttles` (rates,
duplicates), :mod:`~actors.risk.trading_state` (states, transition rules, persistence),
:mod:`~actors.risk.breakers` (circuit breakers), :mod:`~actors.risk.cancels` (emergency cancels delivered to the
gateway), :mod:`~actors.risk.governor` (the actor). See ``docs/risk.md``.
"""
