"""The package layout is the architecture: these tests read every module's imports (statically, with ``ast``) and
fail when a layer reaches where it must not.

* ``bus/`` is the transport: it imports no other Khazad package (``bus/client.py``, the kept SDK alias, is the one
  module allowed to re-export :mod:`sdk`);
* ``actors/`` never import the simulator, and the simulator never imports the actors;
* the SDK never imports the actors, the CLI, launch or the simulator (a strategy needs only ``bus`` and ``sdk``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.config import REPO

PACKAGES = ("actors", "bench", "bus", "cli", "examples", "launch", "sdk", "sim", "tests")
#: package -> the Khazad packages it must never import
FORBIDDEN = {
    "bus": {"actors", "bench", "cli", "examples", "launch", "sdk", "sim", "tests"},
    "actors": {"bench", "cli", "examples", "launch", "sdk", "sim", "tests"},
    "sim": {"actors", "bench", "cli", "examples", "launch", "sdk", "tests"},
    "sdk": {"actors", "bench", "cli", "examples", "launch", "sim", "tests"},
}
#: the one sanctioned exception: a re-export kept for ``from bus.client import KhazadClient``
ALLOWED = {("bus/client.py", "sdk")}


def imported_packages(path: Path) -> set[str]:
    """The top-level Khazad packages a module imports (at any depth: lazy imports inside functions count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def violations(package: str) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for imported in sorted(imported_packages(path) & FORBIDDEN[package]):
            if (rel, imported) not in ALLOWED:
                out.append(f"{rel} imports {imported}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    assert violations(package) == []


def test_the_layout_check_sees_lazy_imports(tmp_path: Path) -> None:
    # the check must catch the kind of import that used to slip in: inside a function, from a submodule
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from sim.__main__ import main\n    import actors.gateway.settings\n")
    assert imported_packages(probe) == {"sim", "actors"}


def test_bus_client_stays_an_alias_of_the_sdk() -> None:
    import bus.client
    import sdk

    assert bus.client.KhazadClient is sdk.KhazadClient
    assert bus.client.AsyncKhazadClient is sdk.AsyncKhazadClient
    for name in ("OrderRejected", "OrderWaitTimeout", "KhazadClientError", "RequestTimeout", "new_client_order_id",
                 "format_history", "Endpoints"):
        assert getattr(bus.client, name) is getattr(sdk, name)
    assert bus.client.order_topic("s1") == "order.s1" and bus.client.md_topic("AAPL") == "md.AAPL"
