"""A minimal actor for the security tests: serves ``bus.monitor`` and answers Kill with the caller's identity."""

from __future__ import annotations

import sys

from bus.actor import Actor
from bus.messages import Ack, Kill
from bus.runtime import main


class EchoActor(Actor):
    """Answers Kill (operator-only by policy) with Ack(detail=<authenticated user id>)."""

    name = "monitor"
    service = "monitor"

    async def on_request(self, ctx, body):
        if isinstance(body, Kill):
            return Ack(detail=ctx.user_id)
        return await super().on_request(ctx, body)


if __name__ == "__main__":
    sys.exit(main(EchoActor, "monitor"))
