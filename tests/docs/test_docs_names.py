"""The documentation names only what exists, and docs/sdk.md describes what a strategy really receives.

* every risk code the docs name is one the code gives (``actors/risk/codes.py``, or the order manager's fail-closed
  codes in ``actors/orders/peers.py``), and every code of ``codes.py`` is in docs/risk.md;
* every ``khazad <command>`` the docs show is a command of ``cli/main.py``;
* every repository path the docs name exists, and the bare module names of an actor's doc are in its package;
* docs/sdk.md lists every field of every struct the SDK hands a strategy (found from the SDK's own signatures),
  every ``OrderUpdate.change`` value the order manager publishes, and the config path ``make run`` generates.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import typing
from pathlib import Path

import msgspec
import pytest

from actors.orders.peers import FAIL_CLOSED_CODES
from actors.risk import breakers, codes
from actors.risk.trading_state import RECOVERY_ORIGIN
from bus import topics
from bus.config import RiskConfig
from cli.main import build_parser
from launch.options import DEFAULT_RUN_DIR
from sdk import AsyncKhazadClient
from tests.support.config import REPO

DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
SDK_DOC = REPO / "docs" / "sdk.md"

# -- risk codes ------------------------------------------------------------------------------------------------------

RISK_NAME = re.compile(r"(?<![\w./-])risk\.([a-z_]+)")
#: ``risk.<x>`` that is not a code: a config key (``risk.limits``, ``risk.state_file``...), the decision topic, a
#: breaker's or the recovery's origin, a file (``risk.json``, ``risk.key``, ``risk.md``)
NOT_CODES = (
    {f.name for f in msgspec.structs.fields(RiskConfig)}
    | {topics.RISK_DECISION_PREFIX.split(".")[1]}
    | {v.split(".", 1)[1] for k, v in vars(breakers).items() if k.startswith("ORIGIN_") and v.startswith("risk.")}
    | {RECOVERY_ORIGIN.split(".", 1)[1]}
    | {"json", "key", "md"}
)
KNOWN_CODES = set(codes.ALL_CODES) | set(FAIL_CLOSED_CODES)


def unknown_risk_codes(text: str) -> list[str]:
    """The ``risk.<x>`` names in ``text`` that read as codes but are not codes the system gives."""
    named = {f"risk.{m.group(1)}" for m in RISK_NAME.finditer(text) if m.group(1) not in NOT_CODES}
    return sorted(named - KNOWN_CODES)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_risk_code_the_docs_name_exists(doc: Path) -> None:
    assert unknown_risk_codes(doc.read_text()) == []


def test_the_risk_code_check_catches_a_misspelt_code() -> None:
    text = "rejected with `risk.max_order_quantity`; see `risk.max_quantity`, `[risk.limits]`, `risk.decision.<s>`"
    assert unknown_risk_codes(text) == ["risk.max_order_quantity"]


def test_every_risk_code_is_documented_in_risk_md() -> None:
    text = (REPO / "docs" / "risk.md").read_text()
    assert [c for c in codes.ALL_CODES if f"`{c}`" not in text] == []


# -- khazad commands -----------------------------------------------------------------------------------------------

COMMAND = re.compile(r"(?:^|[\s`(])(?:[\w./-]*/)?khazad(?: --config \S+)? ([a-z][a-z-]*)", re.MULTILINE)


def khazad_commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_khazad_command_the_docs_show_exists(doc: Path) -> None:
    shown = {m.group(1) for m in COMMAND.finditer(doc.read_text())}
    assert shown - khazad_commands() == set()


def test_the_command_check_reads_commands_after_the_config_flag() -> None:
    text = "run `khazad --config run/khazad.toml top`, then `.venv/bin/khazad kill --reason x` or khazad frobnicate"
    assert {m.group(1) for m in COMMAND.finditer(text)} == {"top", "kill", "frobnicate"}


# -- paths and module names ------------------------------------------------------------------------------------------

REPO_PATH = re.compile(r"(?<![\w/])((?:actors|bench|bus|cli|examples|launch|sdk|sim|tests)/[\w./-]*\.(?:py|tmpl|toml))")
BARE_MODULE = re.compile(r"`([a-z_]+\.py)`")
#: an actor's doc -> its package: a bare ``name.py`` there is one of that package's modules
ACTOR_DOCS = {"gateway.md": "actors/gateway", "orders.md": "actors/orders", "risk.md": "actors/risk"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_the_docs_name_exists(doc: Path) -> None:
    named = {m.group(1) for m in REPO_PATH.finditer(doc.read_text())}
    assert sorted(p for p in named if not (REPO / p).exists()) == []


@pytest.mark.parametrize("doc", sorted(ACTOR_DOCS))
def test_module_names_in_an_actors_doc_are_its_modules(doc: str) -> None:
    package = REPO / ACTOR_DOCS[doc]
    named = {m.group(1) for m in BARE_MODULE.finditer((REPO / "docs" / doc).read_text())}
    assert sorted(n for n in named if not (package / n).exists()) == []


# -- what docs/sdk.md says a strategy receives -----------------------------------------------------------------------


def _structs_in(tp: object, found: set[type]) -> None:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if tp not in found:
            found.add(tp)
            for field in msgspec.structs.fields(tp):
                _structs_in(field.type, found)
        return
    if isinstance(tp, list | tuple):
        for item in tp:
            _structs_in(item, found)
        return
    for arg in typing.get_args(tp):
        _structs_in(arg, found)


def structs_a_strategy_receives() -> set[type]:
    """Every struct the SDK's public methods return or pass to callbacks, and every struct nested in those."""
    found: set[type] = set()
    for name, member in inspect.getmembers(AsyncKhazadClient, inspect.isfunction):
        if name.startswith("_"):
            continue
        hints = typing.get_type_hints(member)
        _structs_in(hints.get("return"), found)
        for param, hint in hints.items():
            if param != "return" and typing.get_origin(hint) is not None and "Callable" in str(typing.get_origin(hint)):
                _structs_in(hint, found)
    return found


def documented_fields(text: str) -> dict[str, set[str]]:
    """``### `Name` `` sections of docs/sdk.md -> the field names in the first column of their first table."""
    sections: dict[str, set[str]] = {}
    current: str | None = None
    in_table = False
    for line in text.splitlines():
        heading = re.match(r"### `(\w+)`", line)
        if heading:
            current, in_table = heading.group(1), False
            sections[current] = set()
        elif current is None:
            continue
        elif line.startswith("|"):
            in_table = True
            if row := re.match(r"\| `(\w+)` \|", line):
                sections[current].add(row.group(1))
        elif in_table or line.startswith("#"):
            current = None  # the first table ended: later tables of the section describe something else
    return sections


def test_sdk_doc_lists_every_field_of_every_struct_a_strategy_receives() -> None:
    received = structs_a_strategy_receives()
    assert {"OrderUpdate", "TickEvent", "TradingStateEvent", "OrderView", "PortfolioSnapshot"} <= {
        s.__name__ for s in received}  # the walk sees callbacks, streams, returns and what they nest
    sections = documented_fields(SDK_DOC.read_text())
    missing = {s.__name__: sorted({f.name for f in msgspec.structs.fields(s)} - sections.get(s.__name__, set()))
               for s in received}
    assert {name: fields for name, fields in missing.items() if fields} == {}
    extra = {s.__name__: sorted(sections[s.__name__] - {f.name for f in msgspec.structs.fields(s)})
             for s in received if s.__name__ in sections}
    assert {name: fields for name, fields in extra.items() if fields} == {}


def published_changes() -> set[str]:
    """Every ``OrderUpdate.change`` value the order manager's code can publish (keyword ``change=`` of a call that
    does not say ``publish=False``, and the defaults of ``change`` parameters)."""
    values: set[str] = set()

    def constants(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return constants(node.body) | constants(node.orelse)
        return set()

    for path in sorted((REPO / "actors" / "orders").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                kw = {k.arg: k.value for k in node.keywords if k.arg}
                quiet = isinstance(kw.get("publish"), ast.Constant) and kw["publish"].value is False
                if "change" in kw and not quiet:
                    values |= constants(kw["change"])
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + \
                    node.args.kw_defaults
                for arg, default in zip(args, defaults, strict=True):
                    if arg.arg == "change" and default is not None:
                        values |= constants(default)
    return values


def documented_changes(text: str) -> set[str]:
    table = text.split("`change` values:", 1)[1].split("\n\n", 2)[1]
    return {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", table, re.MULTILINE)}


def test_sdk_doc_lists_exactly_the_change_values_the_order_manager_publishes() -> None:
    published = published_changes()
    assert {"received", "status", "fill", "rejected"} <= published  # the walk finds the pipeline's updates
    assert documented_changes(SDK_DOC.read_text()) == published


def test_sdk_doc_reads_the_config_make_run_generates() -> None:
    text = SDK_DOC.read_text()
    paths = set(re.findall(r'config="([^"]+)"', text)) | set(re.findall(r"--config (\S+?)`", text))
    assert paths == {f"{DEFAULT_RUN_DIR}/khazad.toml"}
