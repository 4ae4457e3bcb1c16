"""run_all.py before anything starts: the rendered supervisord.conf carries the restart policy for every program,
modes pick the right programs, and configuration errors stop it with exit 78 before supervisord is launched."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus import registry
from tests.support.config import REPO, write_config

ACTORS = registry.ACTOR_NAMES


def run_all(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KHAZAD")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "run_all.py"), "--run-dir", str(tmp_path / "run"),
                           "--free-ports", *args], capture_output=True, text=True, timeout=60, env=full_env,
                          cwd=tmp_path)


def rendered(tmp_path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(tmp_path / "run" / "supervisord.conf")
    return parser


def programs(conf: configparser.RawConfigParser) -> set[str]:
    return {s.split(":", 1)[1] for s in conf.sections() if s.startswith("program:")}


def test_sim_mode_renders_every_program_with_the_restart_policy(tmp_path):
    proc = run_all(tmp_path, "--render-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = rendered(tmp_path)
    assert programs(conf) == {*ACTORS, "sim", "strategy"}
    for name in programs(conf):
        p = conf[f"program:{name}"]
        assert p["command"].startswith(sys.executable)
        assert (p["autorestart"], p["exitcodes"], p["startretries"]) == ("unexpected", "0,78", "3")
        assert int(p["startsecs"]) >= 2 and int(p["stopwaitsecs"]) >= 5  # graceful stop is < 2 s
        assert p["stopasgroup"] == p["killasgroup"] == "true"
        assert p["stdout_logfile"].endswith("/%(program_name)s.log")
    for name in (*ACTORS, "strategy"):
        assert str(tmp_path / "run" / "khazad.toml") in conf[f"program:{name}"]["command"]
    listener = conf["eventlistener:fatal_listener"]
    assert listener["events"] == "PROCESS_STATE_FATAL,PROCESS_STATE_EXITED" and listener["stdout_logfile"] == "NONE"
    assert conf["supervisord"]["nodaemon"] == "true"
    priorities = {n: int(conf[f"program:{n}"]["priority"]) for n in programs(conf)}
    assert priorities["proxy"] < priorities["sim"] < priorities["gateway"] < priorities["monitor"] < priorities["strategy"]
    assert (tmp_path / "run" / "secrets" / "approval.key").stat().st_mode & 0o077 == 0


def test_paper_mode_leaves_out_the_simulator_and_the_example_strategy(tmp_path):
    proc = run_all(tmp_path, "--render-only", "--mode", "paper", "--account", "DU7654321", "--ib-port", "4002")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert programs(rendered(tmp_path)) == set(ACTORS)
    toml = (tmp_path / "run" / "khazad.toml").read_text()
    assert 'mode = "paper"' in toml and 'account = "DU7654321"' in toml and "port = 4002" in toml
    proc = run_all(tmp_path, "--render-only", "--mode", "paper", "--account", "DU7654321", "--with-strategy")
    assert "strategy" in programs(rendered(tmp_path))


def test_live_mode_never_starts_the_example_strategy(tmp_path):
    proc = run_all(tmp_path, "--render-only", "--mode", "live", "--account", "U7654321", "--with-strategy",
                   env={"KHAZAD_LIVE_CONFIRM": "U7654321"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert programs(rendered(tmp_path)) == set(ACTORS)


@pytest.mark.parametrize("args,env,message", [
    (("--mode", "paper"), {}, "gateway.account is required in paper mode"),
    (("--mode", "live", "--account", "U7654321"), {}, "KHAZAD_LIVE_CONFIRM"),
    (("--mode", "paper", "--account", "DU7654321", "--ib-port", "4001"), {}, "live TWS/IB Gateway port"),
])
def test_configuration_errors_exit_78_before_anything_starts(tmp_path, args, env, message):
    proc = run_all(tmp_path, *args, env=env)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert message in proc.stdout
    assert not (tmp_path / "run" / "supervisord.conf").exists()
    assert not (tmp_path / "run" / "supervisor.sock").exists()


def khazad_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHAZAD")}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path)


def test_khazad_run_renders_what_run_all_renders(tmp_path):
    flags = ("--render-only", "--mode", "paper", "--account", "DU7654321", "--ports-from", "31000", "--with-strategy")
    old = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--run-dir", str(tmp_path / "a"), *flags],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    new = khazad_run(tmp_path, "run", "--run-dir", str(tmp_path / "b"), *flags)
    assert old.returncode == new.returncode == 0, old.stdout + old.stderr + new.stdout + new.stderr
    assert "[run_all] wrote" in old.stdout and "[khazad run] wrote" in new.stdout
    # both made the run's CURVE keys and allow-list on first start (the example strategy's key included)
    assert "[run_all] created CURVE keys" in old.stdout and "strategy:example" in new.stdout
    a, b = (tmp_path / "a" / "supervisord.conf").read_text(), (tmp_path / "b" / "supervisord.conf").read_text()
    assert a.replace(str(tmp_path / "a"), "RUN") == b.replace(str(tmp_path / "b"), "RUN")
    ta, tb = (tmp_path / "a" / "khazad.toml").read_text(), (tmp_path / "b" / "khazad.toml").read_text()
    assert ta.replace(str(tmp_path / "a"), "RUN").replace("run_all.py", "?") == \
        tb.replace(str(tmp_path / "b"), "RUN").replace("khazad run", "?")


@pytest.mark.parametrize("before", [True, False])
def test_khazad_run_takes_config_before_or_after_the_subcommand(tmp_path, before):
    path = write_config(tmp_path)
    args = ["--config", str(path), "run", "--render-only"] if before else ["run", "--config", str(path), "--render-only"]
    proc = khazad_run(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(path) in rendered_at(tmp_path / "run")["program:gateway"]["command"]


def rendered_at(run_dir: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(run_dir / "supervisord.conf")
    return parser


def test_every_program_has_its_own_start_priority():
    # supervisord starts by priority and stops in reverse: two programs with one priority have no defined order
    from launch.plan import SIM, STRATEGY, actor_programs

    programs = [*actor_programs(), SIM, STRATEGY]
    priorities = [p.priority for p in programs]
    assert len(set(priorities)) == len(priorities), priorities
    assert min(programs, key=lambda p: p.priority).name == registry.PROXY.name


def test_simulator_latency_and_replay_reach_the_simulator_and_the_banner(tmp_path):
    replay = tmp_path / "day.csv"
    replay.write_text("time,symbol,bid,ask,last,size\n")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[sim]\n", f'[sim]\nlatency = "ib"\nreplay = "{replay}"\nreplay_speed = 10.0\n'))
    proc = khazad_run(tmp_path, "--config", str(path), "run", "--render-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    command = rendered_at(tmp_path / "run")["program:sim"]["command"]
    assert "--latency ib" in command and f"--replay {replay}" in command and "--replay-speed 10.0" in command
    from bus.config import load_config
    from launch.runner import simulator_summary

    assert simulator_summary(load_config(path)) == f"latency ib, market hours always, replay {replay} at 10x"


def test_default_simulator_is_fast_and_random_in_the_banner(tmp_path):
    from bus.config import load_config
    from launch.runner import simulator_summary

    assert simulator_summary(load_config(write_config(tmp_path))) == \
        "latency fast, market hours always, random walk (seed 1)"
