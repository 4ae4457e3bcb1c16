"""Fixtures of the chaos suite: one supervised system shared by the scenarios of a module (restarted only when a
scenario leaves it broken), and the scenario results, printed as a table at the end of the run and written as
JSON to ``$KHAZAD_CHAOS_RESULTS`` when set (docs/chaos.md is made from it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import Outcome, SystemPool

RESULTS_ENV = "KHAZAD_CHAOS_RESULTS"
_results: list[Outcome] = []


@pytest.fixture(scope="module")
def chaos_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemPool]:
    pool = SystemPool(tmp_path_factory.mktemp("chaos"))
    try:
        yield pool
    finally:
        pool.close()
    assert not pool.teardown_errors, "\n".join(pool.teardown_errors)


@pytest.fixture
def record_outcome() -> Any:
    return _results.append


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _results:
        return
    tr = terminalreporter
    tr.section("chaos scenarios")
    tr.write_line(f"{'scenario':28} {'halt':7} {'ready s':>8} {'conv. s':>8} {'bound':>6}  result")
    for o in _results:
        result = "ok" if o.passed else "FAILED: " + "; ".join(list(o.violations)[:2] + o.failures[:1])[:100]
        tr.write_line(f"{o.scenario:28} {o.halt:7} {_fmt(o.ready_s):>8} {_fmt(o.converged_s):>8} "
                      f"{o.bound_s:>6g}  {result}")
    path = os.environ.get(RESULTS_ENV)
    if path:
        Path(path).write_text(json.dumps([o.to_dict() for o in _results], indent=1))
        tr.write_line(f"results written to {path}")
