"""What the IB client library logs, and what it costs: its stdlib logging goes to loguru at WARNING and above
(:func:`bridge_library_logging`), and its hot objects get short reprs (:func:`compact_reprs`). Works on the module
:mod:`actors.gateway.ib` loaded; imports no client library itself."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from loguru import logger

#: The library's own log records at or above this level are forwarded to loguru.
LIBRARY_LOG_LEVEL = logging.WARNING

#: Names of the client libraries whose reprs were already replaced (once per process).
_COMPACTED: set[str] = set()


def compact_reprs(lib: ModuleType) -> None:
    """Give the library's hot objects short reprs. Both libraries log every placeOrder/openOrder/orderStatus with
    an f-string (``f'orderStatus: {trade}'``) that is formatted even when the log level drops the line; the
    dataclass repr of a Trade walks ~150 fields (about 0.1 ms each time, several times per order)."""
    if lib.__name__ in _COMPACTED:
        return

    def order_repr(o: Any) -> str:
        return (
            f"{type(o).__name__}(orderId={o.orderId}, permId={o.permId}, orderRef={o.orderRef!r}, "
            f"{o.action} {o.totalQuantity} {o.orderType})"
        )

    def contract_repr(c: Any) -> str:
        return f"{type(c).__name__}({c.symbol!r}, conId={c.conId}, {c.secType} {c.exchange} {c.currency})"

    def trade_repr(t: Any) -> str:
        return f"Trade({contract_repr(t.contract)}, {order_repr(t.order)}, status={t.orderStatus.status!r})"

    lib.Order.__repr__ = order_repr
    lib.Contract.__repr__ = contract_repr
    lib.Trade.__repr__ = trade_repr
    _COMPACTED.add(lib.__name__)


class ToLoguru(logging.Handler):
    """A stdlib logging handler that hands each record to loguru at its own level."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.log(level, "{}: {}", record.name, record.getMessage())


def bridge_library_logging(name: str) -> None:
    """Send the library's log records (``name``'s logger) to loguru, at :data:`LIBRARY_LOG_LEVEL` and above."""
    lib_logger = logging.getLogger(name)
    if not any(isinstance(h, ToLoguru) for h in lib_logger.handlers):
        lib_logger.addHandler(ToLoguru())
    lib_logger.setLevel(LIBRARY_LOG_LEVEL)
    lib_logger.propagate = False
