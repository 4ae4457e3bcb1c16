"""Order builders for the risk tests."""

from __future__ import annotations

import itertools

from bus.messages import Instrument, OrderSpec

_ids = itertools.count(1)


def order(side: str = "BUY", qty: float = 10, symbol: str = "AAPL", *, strategy: str = "alpha",
          limit: float | None = None, stop: float | None = None, coid: str | None = None,
          multiplier: str = "", sec_type: str = "STK") -> OrderSpec:
    order_type = "STP LMT" if (limit is not None and stop is not None) else "LMT" if limit is not None else \
        "STP" if stop is not None else "MKT"
    return OrderSpec(strategy_id=strategy, client_order_id=coid or f"c{next(_ids)}",
                     instrument=Instrument(symbol=symbol, multiplier=multiplier, sec_type=sec_type),  # type: ignore[arg-type]
                     side=side, quantity=qty, order_type=order_type, limit_price=limit, stop_price=stop)  # type: ignore[arg-type]
