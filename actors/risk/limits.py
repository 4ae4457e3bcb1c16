"""Effective pre-trade limits: ``[risk.limits]`` merged with a strategy's ``[risk.strategies.<id>]`` overrides."""

from __future__ import annotations

import msgspec

from bus.config import RiskConfig, RiskLimits, StrategyLimits


def merge_limits(base: RiskLimits, override: StrategyLimits | None) -> RiskLimits:
    """``base`` with every field the override sets replaced.

    ``restricted_symbols`` is the exception: a strategy's list is added to the global one, never replaces it (a
    per-strategy table must not be able to lift a firm-wide restriction)."""
    if override is None:
        return base
    changes = {}
    for field in StrategyLimits.__struct_fields__:
        value = getattr(override, field)
        if value is None:
            continue
        if field == "restricted_symbols":
            value = sorted({*base.restricted_symbols, *value})
        changes[field] = value
    return msgspec.structs.replace(base, **changes) if changes else base


class LimitTable:
    """Effective limits per strategy, computed once (the config is immutable) and looked up per check."""

    def __init__(self, risk: RiskConfig) -> None:
        self.risk = risk
        self.account = risk.limits
        self._cache: dict[str, RiskLimits] = {}
        self._restricted: dict[str, frozenset[str]] = {}

    def for_strategy(self, strategy_id: str) -> RiskLimits:
        hit = self._cache.get(strategy_id)
        if hit is None:
            hit = merge_limits(self.risk.limits, self.risk.strategies.get(strategy_id))
            self._cache[strategy_id] = hit
            self._restricted[strategy_id] = frozenset(s.upper() for s in hit.restricted_symbols)
        return hit

    def restricted(self, strategy_id: str) -> frozenset[str]:
        """Upper-cased restricted symbols for a strategy (global ones included)."""
        self.for_strategy(strategy_id)
        return self._restricted[strategy_id]

    def describe(self) -> dict[str, str]:
        """Flat ``key -> value`` strings for status replies (global, then each configured strategy)."""
        out = {f"limits.{k}": _fmt(getattr(self.risk.limits, k)) for k in RiskLimits.__struct_fields__}
        for sid in sorted(self.risk.strategies):
            eff = self.for_strategy(sid)
            for k in RiskLimits.__struct_fields__:
                if getattr(self.risk.strategies[sid], k) is not None:
                    out[f"strategies.{sid}.{k}"] = _fmt(getattr(eff, k))
        return out


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
