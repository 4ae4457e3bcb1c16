"""``supervisord.conf`` for a run, rendered from the templates shipped in ``launch/templates`` (package data, so an
installed Khazad has them): the global sections and the FATAL listener from ``supervisord.conf.tmpl``, one
``[program:<name>]`` section per program of the plan from ``program.conf.tmpl``."""

from __future__ import annotations

import shlex
import string
import sys
from importlib import resources
from typing import Any

from launch.plan import Plan, Program

TEMPLATE = "supervisord.conf.tmpl"
PROGRAM_TEMPLATE = "program.conf.tmpl"


def read_template(name: str = TEMPLATE) -> str:
    """A template from the package (works from a checkout, an editable install and a wheel)."""
    return resources.files("launch").joinpath("templates", name).read_text()


def sections(text: str) -> dict[str, str]:
    """INI text split into its sections (name -> text including the header), comments kept with the section they
    precede."""
    out: dict[str, str] = {}
    current = ""
    buf: list[str] = []
    pending: list[str] = []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            out[current] = "".join(buf)
            current, buf = stripped[1:-1], pending + [line]
            pending = []
        elif stripped.startswith(";") or not stripped:
            pending.append(line)
        else:
            buf += pending + [line]
            pending = []
    out[current] = "".join(buf + pending)
    return out


def sim_args(cfg: Any) -> str:
    s = cfg.sim
    argv = [
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--control-port",
        str(s.control_port),
        "--seed",
        str(s.seed),
        "--account",
        s.account,
        "--currency",
        s.base_currency,
        "--starting-cash",
        repr(s.starting_cash),
        "--clock",
        "realtime",
        "--market-hours",
        s.market_hours,
        "--tick-interval",
        repr(s.tick_interval_s),
        "--pacing-limit",
        str(s.pacing_limit),
        "--latency",
        s.latency,
    ]
    if s.trace:
        argv += ["--trace", str(cfg.path(s.trace))]
    if s.replay:
        argv += ["--replay", str(cfg.path(s.replay)), "--replay-speed", repr(s.replay_speed)]
    return " ".join(shlex.quote(a) for a in argv)


def _q(value: str) -> str:
    """A shell-quoted value; supervisord interpolates %(...)s, so a literal % is doubled."""
    return shlex.quote(value).replace("%", "%%")


def _pct(value: str) -> str:
    return value.replace("%", "%%")


def program_section(plan: Plan, program: Program, template: str) -> str:
    python, config = _q(sys.executable), _q(str(plan.config_path))
    if program.config_env:
        command = f"{python} -m {program.module} --config {config}"
        environment = f'KHAZAD_CONFIG="{config}",PYTHONUNBUFFERED="1"'
    else:  # the simulator takes its own flags and never reads khazad.toml
        command = f"{python} -m {program.module} {_pct(sim_args(plan.cfg))}"
        environment = 'PYTHONUNBUFFERED="1"'
    return string.Template(template).substitute(
        name=program.name,
        summary=program.summary,
        command=command,
        priority=program.priority,
        workdir=_pct(str(plan.workdir)),
        environment=environment,
        log_dir=_pct(str(plan.log_dir)),
    )


def render(plan: Plan, template: str | None = None, program_template: str | None = None) -> str:
    """The whole supervisord.conf of ``plan``: paths filled in, one section per wanted program."""
    program_template = program_template if program_template is not None else read_template(PROGRAM_TEMPLATE)
    programs = "".join(program_section(plan, p, program_template) for p in plan.program_specs)
    return string.Template(template if template is not None else read_template()).substitute(
        run_dir=_pct(str(plan.run_dir)),
        log_dir=_pct(str(plan.log_dir)),
        workdir=_pct(str(plan.workdir)),
        python=_q(sys.executable),
        config=_q(str(plan.config_path)),
        programs=programs.rstrip("\n") + "\n",
    )
