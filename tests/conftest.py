"""Fixtures shared by every test package, defined in :mod:`tests.support.fixtures` (helpers live in
``tests/support/``; see its ``__init__`` for the map)."""

from tests.support.fixtures import cfg, config_path, main_thread_event_loop, processes, proxy, zctx

__all__ = ["cfg", "config_path", "main_thread_event_loop", "processes", "proxy", "zctx"]
