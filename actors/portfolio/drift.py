"""Drift against IB told per strategy: the :class:`~bus.messages.ReconciliationReport` of a comparison and, once
per change, the ``portfolio_drift`` alert (or ``portfolio_drift_resolved``), each naming what every strategy's
books hold in the drifting instruments (``AAPL -6 (IB 0; books: alpha 6)``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

from actors.portfolio.books import QTY_EPSILON, Book, display_name
from actors.portfolio.positions_check import Comparison
from bus.messages import MAX_TEXT_LENGTH, Alert, Position, ReconciliationReport, bounded_detail, clip


class DriftReporter:
    """Builds reports and alerts for one actor; ``publish(body)`` sends an alert on the actor's alert topic."""

    def __init__(self, actor: str, publish: Callable[[Alert], Any]) -> None:
        self.actor = actor
        self._publish = publish

    @staticmethod
    def names(ib_positions: Mapping[str, Position], books: Mapping[str, Mapping[str, Book]]) -> dict[str, str]:
        names = {k: display_name(p.instrument) for k, p in ib_positions.items()}
        for per in books.values():
            for key, book in per.items():
                names.setdefault(key, display_name(book.instrument))
        return names

    def report(
        self,
        outcome: Comparison,
        replayed: int,
        ib_positions: Mapping[str, Position],
        books: Mapping[str, Mapping[str, Book]],
    ) -> ReconciliationReport:
        names = self.names(ib_positions, books)
        drift = {names.get(k, k): v for k, v in outcome.drift.items()}
        per_strategy: dict[str, dict[str, float]] = {}
        for strategy, per in books.items():
            for key, book in per.items():
                if key in outcome.drift and abs(book.quantity) > QTY_EPSILON:
                    per_strategy.setdefault(strategy, {})[names.get(key, key)] = book.quantity
        text = self.text(outcome.drift, names, per_strategy, ib_positions)
        if outcome.drift_changed:
            self._announce(outcome.drift, names, per_strategy, text)
        ok = not drift
        return ReconciliationReport(
            actor=self.actor,
            replayed_fills=replayed,
            position_drift=drift,
            strategy_positions=per_strategy,
            ok=ok,
            detail="positions match IB" if ok else "positions differ from IB: " + text,
        )

    @staticmethod
    def text(
        drift: Mapping[str, float],
        names: Mapping[str, str],
        per: Mapping[str, Mapping[str, float]],
        ib_positions: Mapping[str, Position],
    ) -> str:
        parts = []
        for key, diff in sorted(drift.items(), key=lambda kv: names.get(kv[0], kv[0])):
            name = names.get(key, key)
            pos = ib_positions.get(key)
            held = ", ".join(f"{s} {b[name]:g}" for s, b in sorted(per.items()) if name in b) or "none"
            parts.append(f"{name} {diff:+g} (IB {pos.quantity if pos else 0:g}; books: {held})")
        return "; ".join(parts)

    def _announce(
        self, drift: Mapping[str, float], names: Mapping[str, str], per: Mapping[str, Mapping[str, float]], text: str
    ) -> None:
        if not drift:
            logger.info("portfolio: position drift resolved")
            self._publish(
                Alert(
                    kind="portfolio_drift_resolved",
                    severity="info",
                    source=self.actor,
                    message="positions match IB again",
                )
            )
            return
        logger.error("portfolio: position drift against IB: {}", text)
        detail = {names.get(k, k): f"{v:g}" for k, v in drift.items()}
        for strategy, held in per.items():
            detail[f"books.{strategy}"] = ", ".join(f"{n} {q:g}" for n, q in sorted(held.items()))
        self._publish(
            Alert(
                kind="portfolio_drift",
                severity="critical",
                source=self.actor,
                message=clip(f"positions differ from IB (IB minus books): {text}", MAX_TEXT_LENGTH),
                detail=bounded_detail(detail),
            )
        )
