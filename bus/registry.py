"""The one registry of Khazad's actors: name, module, service endpoint, role and start priority.

Config (endpoints, expected actors), security (keys), the CLI (status), launch (supervisord programs, health),
the monitor, tests and benchmarks all read :data:`ACTORS`. Adding an actor is one entry here plus its package.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the CURVE roles a key can have (bus.security); an actor's role is always ACTOR_ROLE
ACTOR_ROLE = "actor"
STRATEGY_ROLE = "strategy"
OPERATOR_ROLE = "operator"
ROLES = (ACTOR_ROLE, STRATEGY_ROLE, OPERATOR_ROLE)


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """One actor process.

    ``endpoint`` names the ``[bus]`` config field of the ROUTER it binds (None: it serves no requests; the proxy
    binds the two ``proxy_*`` fields). ``priority`` orders supervisord's start-up (lower starts first) and
    the restart order after a full stop.
    """

    name: str
    module: str
    endpoint: str | None
    priority: int
    role: str = ACTOR_ROLE
    #: one line for `khazad status`, docs and the supervisord comment
    summary: str = ""


PROXY = ActorSpec(name="proxy", module="bus.proxy", endpoint=None, priority=10, summary="ZeroMQ event bus (XSUB/XPUB)")
GATEWAY = ActorSpec(
    name="gateway",
    module="actors.gateway",
    endpoint="gateway",
    priority=30,
    summary="the only IB connection (ib_insync)",
)
RISK = ActorSpec(
    name="risk",
    module="actors.risk",
    endpoint="risk",
    priority=40,
    summary="pre-trade checks, approvals, breakers, trading states",
)
ORDERS = ActorSpec(
    name="orders",
    module="actors.orders",
    endpoint="orders",
    priority=50,
    summary="order journal (SQLite, WAL) and lifecycle",
)
PORTFOLIO = ActorSpec(
    name="portfolio",
    module="actors.portfolio",
    endpoint="portfolio",
    priority=60,
    summary="account, positions, per-strategy P&L, reconciliation",
)
MONITOR = ActorSpec(
    name="monitor",
    module="actors.monitor",
    endpoint="monitor",
    priority=70,
    summary="heartbeats, alerts, audit trail, metrics",
)

#: every actor, in start-up order
ACTORS: tuple[ActorSpec, ...] = (PROXY, GATEWAY, RISK, ORDERS, PORTFOLIO, MONITOR)
ACTOR_NAMES: tuple[str, ...] = tuple(a.name for a in ACTORS)
BY_NAME: dict[str, ActorSpec] = {a.name: a for a in ACTORS}
#: the actors that serve requests (ROUTER), in start-up order
SERVICES: tuple[ActorSpec, ...] = tuple(a for a in ACTORS if a.endpoint is not None)
SERVICE_NAMES: tuple[str, ...] = tuple(a.name for a in SERVICES)
#: every ``[bus]`` endpoint field: the proxy's two sockets, then each service
PROXY_ENDPOINTS: tuple[str, ...] = ("proxy_frontend", "proxy_backend")
ENDPOINT_FIELDS: tuple[str, ...] = PROXY_ENDPOINTS + tuple(a.endpoint for a in SERVICES if a.endpoint)

#: the name a strategy's orders carry when Khazad did not place them (other clients, TWS by hand)
EXTERNAL_STRATEGY = "external"


def spec(name: str) -> ActorSpec:
    """The registry entry of actor ``name`` (KeyError names the known actors)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown actor {name!r}; known: {', '.join(ACTOR_NAMES)}") from None
