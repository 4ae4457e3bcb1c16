"""The risk governor as the SDK sees it when it connects: a scripted handler for a
:class:`~tests.support.doubles.services.FakeService` answering ``GetTradingState`` from what the test sets."""

from __future__ import annotations

from typing import Any

from bus.messages import GetTradingState, Rejected, TradingStateEvent, TradingStateReply, tag_of


class TradingStatesDouble:
    """Answers ``GetTradingState`` with ``scopes`` (the scopes that are not ACTIVE) at ``epoch``; ``answer`` False
    plays a governor that does not answer (the caller times out)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.scopes: list[TradingStateEvent] = []
        self.answer = True

    def set(self, *scopes: TradingStateEvent, epoch: int | None = None) -> None:
        self.scopes = list(scopes)
        self.epoch = epoch if epoch is not None else max([s.epoch for s in scopes] + [self.epoch])

    def __call__(self, body: Any) -> Any:
        if not isinstance(body, GetTradingState):
            return Rejected(code="unknown_command", reason="trading states double", request_type=tag_of(type(body)))
        if not self.answer:
            return None  # FakeService: never answer
        global_state = next((s.state for s in self.scopes if s.scope == "all"), "ACTIVE")
        return TradingStateReply(epoch=self.epoch, global_state=global_state, scopes=list(self.scopes))
