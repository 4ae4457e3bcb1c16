"""The portfolio's comparison of IB's positions with the books (pure, no I/O).

``expected`` per instrument = what every strategy's books held at the day's start (``external`` included) plus the
executions IB had reported when its positions were read. While the portfolio starts (*baseline pending*), a holding
at IB that nothing carried into the day explains is a candidate for adoption (positions held before Khazad kept
books for them); the same candidate in two consecutive comparisons is adopted into ``external``'s books and the
baseline is fixed. After that, every difference is drift, real once two consecutive comparisons agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.portfolio.books import QTY_EPSILON, Ledger, instrument_key


def expected_positions(ledger: Ledger, in_view: set[str]) -> dict[str, float]:
    """Net quantity per instrument the books explain: the day's openings plus the executions in ``in_view`` (a fill
    that arrived on the bus while IB's positions were being read is not in them yet: it is left out)."""
    expected = ledger.opening_net()
    for fill in ledger.fills.values():
        if fill.exec_key in in_view:
            key = instrument_key(fill.instrument)
            expected[key] = expected.get(key, 0.0) + (fill.quantity if fill.side == "BUY" else -fill.quantity)
    return expected


def carried_keys(ledger: Ledger) -> set[str]:
    """The instruments any strategy carried into the day (a holding there is never adopted)."""
    carried = {k for k, q in ledger.opening_net().items() if abs(q) > QTY_EPSILON}
    for books in ledger.openings.values():
        carried |= {k for k, b in books.items() if abs(b.quantity) > QTY_EPSILON}
    return carried


def same(a: dict[str, float], b: dict[str, float], tol: float) -> bool:
    if set(a) != set(b):
        return False
    return all(abs(a[k] - b[k]) <= max(tol, 1e-9) for k in a)


@dataclass(frozen=True)
class Comparison:
    """One comparison's outcome."""

    #: instrument key -> quantity to adopt into external's books now (the baseline was just fixed)
    adopt: dict[str, float] = field(default_factory=dict)
    #: the drift as confirmed after this comparison (instrument key -> IB minus books)
    drift: dict[str, float] = field(default_factory=dict)
    #: True when ``drift`` changed with this comparison (alert once per change)
    drift_changed: bool = False
    #: "pending" | "fixed" (this comparison fixed it) | "" (fixed earlier)
    baseline: str = ""


class PositionCheck:
    """Adoption at start, then drift confirmed by two consecutive comparisons (see module docstring)."""

    def __init__(self, tolerance: float) -> None:
        self.tol = tolerance
        self.baseline_fixed = False
        self._adopt_candidate: dict[str, float] | None = None
        self._drift_candidate: dict[str, float] | None = None
        self.confirmed_drift: dict[str, float] = {}

    @property
    def settling(self) -> bool:
        """A candidate awaits its confirming comparison (compare again soon)."""
        return not self.baseline_fixed or self._drift_candidate is not None

    def compare(self, ib: dict[str, float], expected: dict[str, float], carried: set[str]) -> Comparison:
        diff = {k: ib.get(k, 0.0) - expected.get(k, 0.0) for k in set(ib) | set(expected)}
        diff = {k: v for k, v in diff.items() if abs(v) > self.tol}
        if not self.baseline_fixed:
            candidate = {k: v for k, v in diff.items() if k not in carried}
            if self._adopt_candidate is not None and same(candidate, self._adopt_candidate, self.tol):
                self.baseline_fixed = True
                self._adopt_candidate = None
                return Comparison(adopt=candidate, baseline="fixed")
            self._adopt_candidate = candidate
            return Comparison(baseline="pending")
        if same(diff, self.confirmed_drift, self.tol):
            self._drift_candidate = None  # nothing new
            return Comparison(drift=dict(self.confirmed_drift))
        if self._drift_candidate is not None and same(diff, self._drift_candidate, self.tol):
            self._drift_candidate = None  # seen twice in a row: real
            self.confirmed_drift = diff
            return Comparison(drift=dict(diff), drift_changed=True)
        self._drift_candidate = diff  # new: confirm with a second comparison before telling anyone
        return Comparison(drift=dict(self.confirmed_drift))
