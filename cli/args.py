"""Argument types and options shared by the commands."""

from __future__ import annotations

import argparse

#: what ``--scope`` accepts (the gateway and the risk governor validate it)
SCOPE_HELP = "all (default) | strategy:<id> | symbol:<symbol> (every contract of it) | conid:<IB conId> (one contract)"


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_common(p: argparse.ArgumentParser, timeout_help: str) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document (stable keys) instead of tables")
    p.add_argument("--timeout", type=positive, default=None, metavar="SECONDS", help=timeout_help)
