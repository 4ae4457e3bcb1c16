"""Khazad's simulator of IB Gateway/TWS: real IB clients connect to it.

Run it with ``python -m sim`` (or ``khazad sim``); embed it in tests with
``sim.testing.running_sim``.  See docs/simulator.md.
"""

from .config import SimConfig

__all__ = ["SimConfig"]
