"""The simulator's modules import each other without a circle (issue 19 item 7).

Every import counts, including the ones under ``TYPE_CHECKING`` and the ones
made inside functions: a circle hidden behind a lazy import is still a circle
a newcomer has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sim

SIM_DIR = Path(sim.__file__).parent


def _imports_of(path: Path) -> set[str]:
    """The sim modules ``path`` imports (relative or ``sim.x``), anywhere in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("sim."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sim."))
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in SIM_DIR.glob("*.py") if p.stem != "__init__"}
    return {name: _imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a path (first module repeated at the end), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_find_cycle_reports_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_sim_modules_have_no_import_circle():
    graph = import_graph()
    assert {"server", "handlers", "session"} <= set(graph)
    assert find_cycle(graph) == [], "import circle in sim/"


def test_handlers_and_session_do_not_import_the_server():
    graph = import_graph()
    assert "server" not in graph["handlers"]
    assert "server" not in graph["session"]
