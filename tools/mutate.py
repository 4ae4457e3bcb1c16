"""`make mutate`: mutation testing (mutmut 3) of the safety modules, each against its own fast test subset.

Each target is one safety module (or two that form one table, lifecycle + stages) and the tests that are meant to
catch a bug in it: unit tests first, process tests only where a module has no in-process coverage (mutmut maps
mutants to tests by what runs in the pytest process, so a test that drives the module in a child process cannot kill
its mutants). A target runs in its own scratch copy of the tree (``build/mutate/<target>/``): mutmut reads its
configuration from the copy's ``pyproject.toml``, so each target has its own module list and test selection, and
the work tree is never touched.

    python tools/mutate.py                   # every target, one after the other
    python tools/mutate.py persist           # one target (``make mutate MODULE=persist``)
    python tools/mutate.py --list            # the targets and their tests

A run prints, per target, the mutants killed / survived / without a covering test / timed out and the score
(killed + timeout) / all, writes every survivor's diff to ``build/mutate/<target>/survivors.txt`` and a summary of
the run to ``build/mutate/summary.txt``. docs/testing.md explains each survivor. Exit status: 0 when every target
scores at least ``--fail-under`` (default 0: a report, not a gate), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "build" / "mutate"
#: What a scratch copy holds (the packages, the tests and the project file).
COPY = ("actors", "bus", "sim", "sdk", "cli", "launch", "examples", "tests", "docs", "README.md", "khazad.toml")
PACKAGES = ("actors", "bus", "sim", "sdk", "cli", "launch", "examples")
#: Lines mutmut leaves alone: log lines (one line per event, for people; no behaviour hangs on their text).
DO_NOT_MUTATE_PATTERNS = (r"^\s*logger\.", r"^\s*log\(", r"^\s*\(logger\.")
KILLED = frozenset({"killed", "timeout", "caught by type check"})


@dataclass(frozen=True)
class Target:
    """One mutation target: the module file(s) mutated and the tests run against each mutant."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


GW_UNITS = (
    "tests/gateway/test_gateway_units.py",
    "tests/gateway/test_gateway_guarantees_units.py",
    "tests/gateway/test_gateway_notices.py",
)
ORDER_UNITS = (
    "tests/orders/test_orders_lifecycle.py",
    "tests/orders/test_orders_stages.py",
    "tests/orders/test_orders_journal.py",
    "tests/orders/test_orders_guarantees.py",
)

TARGETS: dict[str, Target] = {
    "killswitch": Target(("actors/gateway/killswitch.py",), GW_UNITS),
    "cancels": Target(("actors/gateway/cancels.py",), GW_UNITS),
    "ordertable": Target(("actors/gateway/ordertable.py",), GW_UNITS),
    "events": Target(("actors/gateway/events.py",), GW_UNITS),
    "persist": Target(("actors/gateway/persist.py",), GW_UNITS),
    "lifecycle": Target(("actors/orders/lifecycle.py", "actors/orders/stages.py"), ORDER_UNITS),
    "journal": Target(("actors/orders/journal.py",), ORDER_UNITS),
    "checks": Target(
        ("actors/risk/checks.py",), ("tests/risk/test_risk_checks.py", "tests/risk/test_risk_guarantees.py")
    ),
    "exposure": Target(
        ("actors/risk/exposure.py",), ("tests/risk/test_risk_books.py", "tests/risk/test_risk_guarantees.py")
    ),
    "trading_state": Target(
        ("actors/risk/trading_state.py",),
        ("tests/risk/test_risk_trading_state.py", "tests/risk/test_risk_guarantees.py"),
    ),
    "approval": Target(("bus/approval.py",), ("tests/bus/test_bus_approval.py",)),
}


def _toml_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str, target: Target) -> Path:
    """A fresh scratch copy of the tree whose pyproject.toml configures mutmut for this target."""
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for entry in COPY:
        src = REPO / entry
        if src.is_dir():
            shutil.copytree(src, work / entry, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, work / entry)
    tests = [t for t in target.tests if (REPO / t).exists()]
    if not tests:
        raise SystemExit(f"{name}: none of its tests exist ({', '.join(target.tests)})")
    project = (REPO / "pyproject.toml").read_text()
    project += (
        "\n[tool.mutmut]\n"
        f"source_paths = {_toml_list(PACKAGES)}\n"
        f"only_mutate = {_toml_list(target.modules)}\n"
        f"do_not_mutate_patterns = {_toml_list(DO_NOT_MUTATE_PATTERNS)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        "use_git_change_detection = false\n"
        # tests read the docs (the notice table in docs/gateway.md) and the README
        'also_copy = ["docs", "README.md", "khazad.toml"]\n'
    )
    (work / "pyproject.toml").write_text(project)
    return work


def statuses(work: Path, target: Target) -> dict[str, str]:
    """mutant name -> status, read from mutmut's per-file result files."""
    from mutmut.stats import status_by_exit_code  # the mutate extra

    out: dict[str, str] = {}
    for module in target.modules:
        meta = work / "mutants" / f"{module}.meta"
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        for key, code in data.get("exit_code_by_key", {}).items():
            out[key] = status_by_exit_code[code]
    return out


def mutmut(work: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mutmut")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    if log is not None:
        with log.open("w") as fh:
            return subprocess.run(
                [str(exe), *args], cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True, check=False
            )
    return subprocess.run([str(exe), *args], cwd=work, env=env, capture_output=True, text=True, check=False)


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
modules, names = json.loads(sys.stdin.read())
out = {}
for name in names:
    path = next(m for m in modules if name.startswith(m.removesuffix(".py").replace("/", ".") + "."))
    out[name] = get_diff_for_mutant(name, path=path)
print(json.dumps(out))
"""

#: SQL keywords: a mutant that only changes the case of a line holding SQL text changes nothing (SQL is
#: case-insensitive) - the one rule by which a survivor is counted as equivalent without being read by a person.
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|WHERE|ORDER BY|BEGIN|COMMIT|ROLLBACK|VALUES|FROM|SET|AND|OR|DESC|LIMIT"
    r"|ALTER|ADD COLUMN|ON CONFLICT|DO NOTHING)\b|clauses\.append\(|_select\("
)


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    lines = diff.splitlines()
    minus = [ln[1:] for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    return minus, plus


def equivalent(diff: str) -> str | None:
    """Why a surviving mutant cannot change behaviour (None when it might): see docs/testing.md."""
    minus, plus = changed_lines(diff)
    if len(minus) == len(plus) == 1 and minus[0] != plus[0] and minus[0].lower() == plus[0].lower():
        if SQL_WORDS.search(minus[0]):
            return "sql-case"
    return None


def survivor_diffs(work: Path, target: Target, survivors: dict[str, str]) -> dict[str, str]:
    """Every survivor's diff (mutmut's own rendering), computed in one process."""
    if not survivors:
        return {}
    proc = subprocess.run(
        [sys.executable, "-c", _DIFFS],
        cwd=work,
        input=json.dumps([target.modules, survivors]),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {name: f"(no diff: {proc.stderr.strip()[-300:]})" for name in survivors}


@dataclass
class Result:
    """One target's run: mutants by status, survivors that are equivalent by rule, the time it took."""

    target: str
    counts: dict[str, int] = field(default_factory=dict)
    equivalent: int = 0
    seconds: float = 0.0
    survivors: list[str] = field(default_factory=list)
    ok: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def killed(self) -> int:
        return sum(n for s, n in self.counts.items() if s in KILLED)

    @property
    def score(self) -> float:
        return percent(self.killed, self.total)

    @property
    def score_without_equivalent(self) -> float:
        return percent(self.killed, self.total - self.equivalent)

    def line(self) -> str:
        survived = self.counts.get("survived", 0) + self.counts.get("suspicious", 0)
        text = (
            f"{self.target:20s} {self.killed:>4d}/{self.total:<5d} {self.score:6.1f}% "
            f"{self.score_without_equivalent:9.1f}%"
            f"  {survived:8d}  {self.counts.get('no tests', 0):8d}  {self.equivalent:6d}  {self.seconds:5.0f} s"
        )
        if not self.ok:
            text += f"  [mutmut failed: see build/mutate/{self.target}/run.log]"
        return text


HEADER = f"{'target':20s} {'killed':>10s} {'score':>7s} {'w/o equiv':>10s}  survived  no tests  equiv.   time"


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def run_target(name: str, target: Target, jobs: int) -> Result:
    start = time.monotonic()
    work = prepare(name, target)
    proc = mutmut(work, "run", "--max-children", str(jobs), log=work / "run.log")
    result = Result(target=name, seconds=time.monotonic() - start)
    found = statuses(work, target)
    for status in found.values():
        result.counts[status] = result.counts.get(status, 0) + 1
    survivors = {k: s for k, s in sorted(found.items()) if s not in KILLED}
    diffs = survivor_diffs(work, target, survivors)
    why = {k: equivalent(diffs.get(k, "")) for k in survivors}
    with (work / "survivors.txt").open("w") as fh:
        for key, status in survivors.items():
            label = f"equivalent ({why[key]})" if why[key] else status
            fh.write(f"# {key}: {label}\n{diffs.get(key, '')}\n\n")
    result.equivalent = sum(1 for w in why.values() if w)
    result.survivors = [k for k in survivors if not why[k]]
    result.ok = proc.returncode == 0 and result.total > 0
    (work / "result.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="print the targets and their tests")
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("MUTATE_JOBS", "2")),
        help="mutants tested at once (default 2, or MUTATE_JOBS)",
    )
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 when a target scores below this %%")
    args = parser.parse_args(argv)
    if args.list:
        for name, t in TARGETS.items():
            print(f"{name}: {', '.join(t.modules)}\n    tests: {' '.join(t.tests)}")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        print(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    names = args.targets or list(TARGETS)
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    lines = [HEADER]
    print(HEADER, flush=True)
    results: list[Result] = []
    for name in names:
        r = run_target(name, TARGETS[name], args.jobs)
        results.append(r)
        lines.append(r.line())
        print(lines[-1], flush=True)
    total = Result(target="all", ok=all(r.ok for r in results), seconds=time.monotonic() - start)
    for r in results:
        for status, n in r.counts.items():
            total.counts[status] = total.counts.get(status, 0) + n
        total.equivalent += r.equivalent
    lines.append(total.line())
    print(lines[-1])
    (WORK / ("summary.txt" if not args.targets else "summary-partial.txt")).write_text("\n".join(lines) + "\n")
    print("survivors and their diffs: build/mutate/<target>/survivors.txt")
    failed = not total.ok or any(r.score_without_equivalent < args.fail_under for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
