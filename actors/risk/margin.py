"""IB's what-if margin preview for the pre-trade margin check (``risk.margin_check_notional``).

For an order the check covers, the governor asks the gateway for IB's preview (``WhatIfOrder``: placed with
whatIf, worked by nobody) and reads the post-trade excess liquidity (equity with loan after minus maintenance margin
after). Answers are cached per order terms for ``risk.margin_cache_s``; the wait is bounded by
``risk.margin_wait_s``. No answer, a refusal or a preview without the values is a problem the check turns into a
rejection: the check fails closed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from loguru import logger

from actors.risk.ports import GatewayLink
from bus.messages import OrderSpec, Rejected, WhatIfOrder, WhatIfReply

#: Previews kept at most (oldest dropped first).
MAX_CACHED = 512

Terms = tuple[int, str, float, str, float | None, float | None]


@dataclass(frozen=True, slots=True)
class MarginAnswer:
    """IB's post-trade excess liquidity, or why it is not known."""

    excess_after: float | None
    problem: str | None = None


class MarginPreview:
    """What-if previews through the gateway, cached and bounded (see module docstring)."""

    def __init__(self, gateway: GatewayLink, *, wait_s: float, cache_s: float) -> None:
        self._gateway = gateway
        self.wait_s = wait_s
        self.cache_s = cache_s
        self._cache: OrderedDict[Terms, tuple[float, MarginAnswer]] = OrderedDict()
        self.asked = 0

    async def preview(self, order: OrderSpec, con_id: int) -> MarginAnswer:
        terms: Terms = (con_id, order.side, order.quantity, order.order_type, order.limit_price, order.stop_price)
        now = time.monotonic()
        hit = self._cache.get(terms)
        if hit is not None and now < hit[0]:
            return hit[1]
        self.asked += 1
        reply = await self._gateway.call(WhatIfOrder(order=order), self.wait_s)
        if reply is None:
            answer = MarginAnswer(None, f"the gateway did not answer within {self.wait_s:g} s")
        elif isinstance(reply, Rejected):
            answer = MarginAnswer(None, f"{reply.code}: {reply.reason}")
        elif not isinstance(reply, WhatIfReply):
            answer = MarginAnswer(None, f"unexpected reply {type(reply).__name__}")
        elif reply.excess_liquidity_after is None:
            answer = MarginAnswer(None, "IB's preview has no equity with loan / maintenance margin after the trade")
        else:
            answer = MarginAnswer(reply.excess_liquidity_after)
        logger.info(
            "risk: what-if {}: excess liquidity after {} {}", order.order_ref, answer.excess_after, answer.problem or ""
        )
        if answer.problem is None:  # a problem is asked again next time (the gateway may be back)
            self._cache[terms] = (now + self.cache_s, answer)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return answer
