"""Helpers of the operator's-day tests: the ``khazad`` CLI as a subprocess, headless Chromium screenshots, pixel
checks of a screenshot, metric names of PromQL expressions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.config import REPO

CLI_TIMEOUT_S = 60.0
CHROMIUM_TIMEOUT_S = 90.0
#: Debian's package; .ci/run installs it (tests require it: a missing browser is a failure, not a skip).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def khazad(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S, cwd=REPO, env=env)


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("headless Chromium is required for the report test: apt-get install -y chromium "
                         "(.ci/run installs it)")


def screenshot(page: Path, png: Path, width: int, height: int, profile: Path) -> None:
    """Render ``page`` in headless Chromium and write a screenshot of the top ``width`` x ``height`` pixels."""
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
         f"--window-size={width},{height}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S,
    )
    assert png.exists() and png.stat().st_size > 0, f"no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}"


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def pixels_near(region, colour: str, tolerance: int = 40) -> int:
    """How many pixels of an RGB image region are within ``tolerance`` (per channel) of ``colour``."""
    r, g, b = hex_rgb(colour)
    raw = region.convert("RGB").tobytes()
    n = 0
    for i in range(0, len(raw), 3):
        if abs(raw[i] - r) <= tolerance and abs(raw[i + 1] - g) <= tolerance and abs(raw[i + 2] - b) <= tolerance:
            n += 1
    return n


def non_white_fraction(region) -> float:
    raw = region.convert("RGB").tobytes()
    pixels = len(raw) // 3
    return sum(1 for i in range(0, len(raw), 3) if min(raw[i], raw[i + 1], raw[i + 2]) < 235) / max(1, pixels)


_FUNCS = {
    "sum", "rate", "irate", "increase", "max", "min", "avg", "count", "topk", "bottomk", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "time", "abs", "clamp_min",
    "clamp_max", "delta", "deriv", "label_replace", "histogram_quantile", "max_over_time", "min_over_time",
    "avg_over_time", "changes", "resets", "vector", "scalar", "sort", "sort_desc", "count_over_time", "le",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by '(' and not a function, keyword or a
    label name inside {...} or by(...)."""
    text = re.sub(r'"[^"]*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(ms|s|m|h|d|w|y)\b", " ", text)  # durations (offset 5m)
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)  # numbers (1e6 is not a name)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or name in _FUNCS or name.startswith("$"):
            continue
        if text[m.start() - 1: m.start()] == "$":
            continue
        names.add(name)
    return names
