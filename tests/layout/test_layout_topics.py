"""Shared names have one home (docs/architecture.md, "How to extend it"): no module outside ``bus/topics.py`` spells
a topic, and no actor package imports another actor's (actors talk over the bus only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bus import topics
from tests.support.config import REPO

#: where topics are used (bus/topics.py itself excepted)
TOPIC_USERS = ("actors", "bus", "cli", "examples", "launch", "sdk")
TOPICS_MODULE = "bus/topics.py"
#: every fixed topic and prefix bus/topics.py defines
TOPIC_PREFIXES = tuple(v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str))


def topic_literals(path: Path) -> list[str]:
    """String literals (and the constant head of f-strings) in ``path`` that start like a topic; docstrings and
    other bare expression strings are prose and do not count."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            text = head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else ""
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if isinstance(parents.get(node), (ast.Expr, ast.JoinedStr)):
                continue  # a docstring, or part of an f-string judged as a whole
            text = node.value
        else:
            continue
        if text.startswith(TOPIC_PREFIXES):
            found.append(f"{path.name}:{node.lineno}: {text!r}")
    return found


@pytest.mark.parametrize("package", TOPIC_USERS)
def test_no_module_spells_a_topic_outside_bus_topics(package: str) -> None:
    found = [f"{path.parent.relative_to(REPO).as_posix()}/{hit}" for path in sorted((REPO / package).rglob("*.py"))
             if path.relative_to(REPO).as_posix() != TOPICS_MODULE for hit in topic_literals(path)]
    assert found == [], "spell these topics through bus/topics.py"


def test_the_topic_check_sees_plain_and_formatted_literals(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""state.trading in prose is fine."""\nA = "state.trading"\nB = f"order.{A}"\nC = "ordinary"\n')
    assert [hit.split(": ", 1)[1] for hit in topic_literals(probe)] == ["'state.trading'", "'order.'"]


@pytest.mark.parametrize("actor", sorted(p.name for p in (REPO / "actors").iterdir() if (p / "actor.py").exists()))
def test_an_actor_package_imports_no_other_actor(actor: str) -> None:
    found = []
    for path in sorted((REPO / "actors" / actor).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "actors" and len(parts) > 1 and parts[1] != actor:
                    found.append(f"{path.relative_to(REPO).as_posix()} imports {name}")
    assert found == []
