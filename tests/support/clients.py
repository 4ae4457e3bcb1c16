"""Bus clients with a key, for tests: the bus is authenticated, so every client, subscriber, publisher and double a
test makes carries the key of the role it plays (the operator's by default: it may do anything a client may; an
actor's to publish that actor's topics; the order manager's to enter orders at risk and the gateway)."""

from __future__ import annotations

from typing import Any

import zmq

from bus import registry
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import tag_of
from bus.pubsub import Publisher, SyncSubscriber
from bus.sync_client import SyncClient
from bus.security import OPERATOR_KEY, Security, client_security
from bus.sockets import connect


def security(cfg: KhazadConfig, key: str = OPERATOR_KEY) -> Security | None:
    """The CURVE identity ``key`` of a test config (None when the config turned CURVE off)."""
    return client_security(cfg, key)


def server_key(sec: Security | None, service: str) -> bytes | None:
    return sec.server_key(service) if sec is not None else None


def sync_client(ctx: zmq.Context, cfg: KhazadConfig, service: str, *, key: str = OPERATOR_KEY,
                stamper: Stamper | None = None, timeout_s: float = 2.0, retries: int = 2,
                endpoint: str | None = None, server: str | None = None) -> SyncClient:
    """A blocking client of ``service`` with the key ``key``; ``server`` names the key the service serves with when
    it is not the actor whose endpoint it is (a test actor standing in for it)."""
    sec = security(cfg, key)
    return SyncClient(ctx, endpoint or cfg.bus.service_endpoint(service), service=service,
                      stamper=stamper or Stamper(f"test-{key}"), timeout_s=timeout_s, retries=retries, security=sec,
                      server_key=server_key(sec, server or service))


def sync_subscriber(ctx: zmq.Context, cfg: KhazadConfig, topic_prefixes: list[str], *, key: str = OPERATOR_KEY,
                    name: str = "test-sub", rcvhwm: int = 100_000, on_gap: Any = None) -> SyncSubscriber:
    """A blocking subscriber to the proxy with the key ``key``."""
    sec = security(cfg, key)
    return SyncSubscriber(ctx, cfg.bus.proxy_backend, topic_prefixes, name=name, rcvhwm=rcvhwm, on_gap=on_gap,
                          security=sec, server_key=server_key(sec, "proxy"))


def publisher(ctx: zmq.Context, cfg: KhazadConfig, stamper: Stamper, *, key: str = OPERATOR_KEY,
              sndhwm: int = 100_000) -> Publisher:
    """A publisher to the proxy with the key ``key`` (publish an actor's topics with that actor's key); its ready
    handshake uses the same key."""
    sec = security(cfg, key)
    return Publisher(ctx, cfg.bus.proxy_frontend, stamper, sndhwm=sndhwm, security=sec,
                     server_key=server_key(sec, "proxy"))


def raw_dealer(ctx: zmq.Context, cfg: KhazadConfig, service: str, *, key: str = OPERATOR_KEY,
               server: str | None = None) -> zmq.Socket:
    """A bare DEALER connected to ``service`` with the key ``key`` (for tests that send hand-made frames)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sec = security(cfg, key)
    connect(sock, cfg.bus.service_endpoint(service), security=sec, server_key=server_key(sec, server or service))
    return sock


def serving_security(ctx: zmq.Context, cfg: KhazadConfig, name: str) -> Security | None:
    """Server-side CURVE for a test double standing in for actor ``name``: its key pair and a running ZAP handler
    on ``ctx`` (stop it with ``.stop_authenticator()``)."""
    sec = security(cfg, name)
    if sec is not None:
        sec.start_authenticator(ctx)
    return sec


class OwnerPublisher:
    """Publishes each topic with the key of the actor that owns it (:data:`bus.topics.PUBLISHERS`), through one
    publisher per key (each ready before its first message): a test playing the gateway, the governor and the order
    manager at once. Topics only operators may publish go with the operator's key."""

    def __init__(self, ctx: zmq.Context, cfg: KhazadConfig, stamper: Stamper) -> None:
        self.ctx, self.cfg, self.stamper = ctx, cfg, stamper
        self._pubs: dict[str, Publisher] = {}

    def for_topic(self, topic: str) -> Publisher:
        from bus.authz import publish_owners

        entry = publish_owners(topic)
        owners = sorted(o for o in entry[1] if not o.startswith("@")) if entry else []
        key = owners[0] if owners else OPERATOR_KEY
        if key not in self._pubs:
            pub = publisher(self.ctx, self.cfg, self.stamper, key=key)
            pub.wait_ready_sync(self.cfg.bus.proxy_backend)
            self._pubs[key] = pub
        return self._pubs[key]

    def publish(self, topic: str, body: Any) -> Any:
        return self.for_topic(topic).publish(topic, body)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.for_topic(topic).publish_raw(topic, payload)

    def wait_ready_sync(self, backend: str, **kw: Any) -> None:
        self.for_topic("_probe.")  # each publisher is made ready when it is made

    def close(self) -> None:
        for pub in self._pubs.values():
            pub.close()


class RoutedClient:
    """Clients of one service with two keys, chosen per request as the real callers are: order entry
    (``CheckOrder``, ``SubmitOrder``, ``AmendOrder``, ``CheckGroup``, ``SubmitGroup``) with the order manager's key
    (the only one allowed to send them), everything else with the operator's. For tests standing in for the order
    manager and an operator."""

    ORDER_ENTRY = ("check_order", "submit_order", "amend_order", "check_group", "submit_group")

    def __init__(self, ctx: zmq.Context, cfg: KhazadConfig, service: str, *, stamper: Stamper | None = None,
                 timeout_s: float = 2.0, retries: int = 2) -> None:
        self.operator = sync_client(ctx, cfg, service, stamper=stamper, timeout_s=timeout_s, retries=retries)
        self.orders = sync_client(ctx, cfg, service, key=registry.ORDERS.name, stamper=stamper, timeout_s=timeout_s,
                                  retries=retries)

    def call(self, body: Any, **kw: Any) -> Any:
        client = self.orders if tag_of(type(body)) in self.ORDER_ENTRY else self.operator
        return client.call(body, **kw)

    def close(self) -> None:
        self.operator.close()
        self.orders.close()
