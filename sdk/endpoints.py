"""Where the SDK connects and how it reads its configuration; local validation of what it sends."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec

from bus.config import BusConfig, KhazadConfig, load_config
from bus.messages import Instrument

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the SDK connects. Normally taken from the configuration (``[bus]``); explicit for tests/tools."""

    proxy_frontend: str
    proxy_backend: str
    orders: str
    portfolio: str
    gateway: str
    #: the risk governor (trading states); "" = the configuration's ``bus.risk``
    risk: str = ""

    @classmethod
    def from_bus(cls, bus: BusConfig) -> Endpoints:
        return cls(
            proxy_frontend=bus.proxy_frontend,
            proxy_backend=bus.proxy_backend,
            orders=bus.orders,
            portfolio=bus.portfolio,
            gateway=bus.gateway,
            risk=bus.risk,
        )


def resolve_config(config: KhazadConfig | str | os.PathLike[str] | None) -> KhazadConfig:
    """A loaded config as is; a path is loaded; None means ``$KHAZAD_CONFIG``, ``./khazad.toml`` or defaults."""
    if isinstance(config, KhazadConfig):
        return config
    return load_config(Path(config) if config is not None else None)


def validated(body: T) -> T:
    """Check a request against the wire schema locally (constraints only run on decode): a malformed id or
    quantity raises ``ValueError`` here instead of a ``bad_request`` from the service."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(body), type=type(body))


def instrument(symbol: str | Instrument) -> Instrument:
    """An :class:`~bus.messages.Instrument` as given, or a ticker as a (validated) US stock."""
    return symbol if isinstance(symbol, Instrument) else validated(Instrument(symbol=symbol))
