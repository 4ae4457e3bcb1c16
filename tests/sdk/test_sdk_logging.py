"""The SDK's log level (docs/sdk.md, "Logging"): INFO by default instead of loguru's DEBUG, set by ``log_level=`` or
the configuration's ``[logging] level``, and an application's own loguru configuration left alone.

Each case runs in a fresh interpreter: loguru's handlers are process-wide, and this test process has its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.config import REPO

SCRIPT = """
import sys
from loguru import logger
{before}
from sdk import AsyncKhazadClient
AsyncKhazadClient("logs", config=sys.argv[1]{kwargs})
logger.debug("probe-debug")
logger.info("probe-info")
"""
APP_CONFIGURED = "logger.remove()\nlogger.add(sys.stderr, level='DEBUG', format='{message}')"


def strategy_stderr(config_path: Path, *, before: str = "", kwargs: str = "") -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(before=before, kwargs=kwargs), str(config_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.fixture
def info_config(tmp_path: Path, config_path: Path) -> Path:
    """The test config with its DEBUG logging line taken out: ``[logging] level`` at its default."""
    path = tmp_path / "info.toml"
    path.write_text(config_path.read_text().replace('level = "DEBUG"', ""))
    return path


def test_sdk_logs_at_info_by_default(info_config: Path) -> None:
    out = strategy_stderr(info_config)
    assert "probe-info" in out and "probe-debug" not in out


@pytest.mark.parametrize("how", ["argument", "config"])
def test_sdk_log_level_follows_the_argument_or_the_config(how: str, info_config: Path, config_path: Path) -> None:
    out = strategy_stderr(info_config, kwargs=", log_level='DEBUG'") if how == "argument" else \
        strategy_stderr(config_path)  # the test config says level = "DEBUG"
    assert "probe-info" in out and "probe-debug" in out


def test_an_application_that_configured_loguru_keeps_its_own_levels(info_config: Path) -> None:
    out = strategy_stderr(info_config, before=APP_CONFIGURED, kwargs=", log_level='WARNING'")
    assert "probe-info" in out and "probe-debug" in out
