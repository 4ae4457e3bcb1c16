"""Khazad without the repository: a wheel built from this checkout, installed into a fresh virtual environment, runs
the whole system with ``khazad run`` from a directory outside the checkout (the supervisord templates are package
data, every program is imported from the installed packages).

The install takes Khazad's dependencies from the package index pip is configured with (CI has the registries), so
this test is slower than the others: it states its own timeout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import venv
from fnmatch import fnmatch
from pathlib import Path

import pytest
import zmq

from bus import registry
from launch.health import check_health
from launch.plan import SIM, STRATEGY
from launch.supervisord import sections
from tests.support.config import REPO
from tests.support.system import running_system

#: wheel build (~6 s), fresh venv with the dependencies (~25 s), start (~5 s), stop (~5 s) on an idle 2-core
#: machine; generous for a loaded one
pytestmark = pytest.mark.timeout(420)
BUILD_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 240.0


def _packages(pyproject: dict) -> list[str]:
    """The top-level packages pyproject ships (``[tool.setuptools.packages.find] include``)."""
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(p.name for p in REPO.iterdir()
                  if (p / "__init__.py").exists() and any(fnmatch(p.name, pat) for pat in patterns))


def _source_copy(dest: Path) -> Path:
    """What an sdist holds, copied out of the checkout, so the build writes nothing into it."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for pkg in _packages(pyproject):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _run(argv: list[str], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, (f"{' '.join(argv)} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no access to the checkout or the test venv) with Khazad installed from its wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)], BUILD_TIMEOUT_S)
    (wheel,) = (tmp / "dist").glob("khazad-*.whl")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], INSTALL_TIMEOUT_S)
    return tmp / "venv"


def test_the_wheel_holds_every_package_and_the_templates(installed: Path) -> None:
    probe = ("import launch, sdk, cli, bus, actors, sim, examples; from launch.supervisord import read_template; "
             "print(launch.__file__); print(len(read_template()) > 0)")
    out = _run([str(installed / "bin" / "python"), "-c", probe], 60, cwd=installed).stdout.split()
    assert Path(out[0]).is_relative_to(installed) and not Path(out[0]).is_relative_to(REPO), out
    assert out[1] == "True"


def test_khazad_run_from_the_wheel_starts_the_whole_system_outside_the_checkout(installed: Path,
                                                                                tmp_path: Path) -> None:
    site = tmp_path / "site"  # an operator's directory: no checkout, no khazad.toml but the one passed
    site.mkdir()
    with running_system(site, command=[str(installed / "bin" / "khazad"), "run"]) as system:
        # launch's own health check passed ("Khazad is up"); ask it again from here, with the same check
        zctx = zmq.Context()
        try:
            programs = [*registry.ACTOR_NAMES, SIM.name, STRATEGY.name]
            health = check_health(system.cfg, programs, system.rpc, zctx)
        finally:
            zctx.destroy(linger=0)
        assert health.ok, health
        assert "[khazad run] Khazad is up" in system.output()
        # every program runs the installed interpreter, in the run directory (not the checkout)
        conf = sections((system.cfg.run_path / "supervisord.conf").read_text())
        for name in programs:
            section = conf[f"program:{name}"]
            assert f"command = {installed / 'bin' / 'python'} -m " in section, section
            assert f"directory = {system.cfg.run_path}" in section, section
        infos = system.infos()
        assert {n: infos[n]["statename"] for n in programs} == {n: "RUNNING" for n in programs}
