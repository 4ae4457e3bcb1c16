"""The configuration's error and exit code, shared by the sections, the checks and the loader (``bus/config.py``)."""

from __future__ import annotations

#: Process exit code for a configuration error (sysexits EX_CONFIG). supervisord gives up after startretries
#: fast exits (FATAL), so a bad config never restart-loops.
EXIT_CONFIG = 78


class ConfigError(Exception):
    """A configuration problem; the message names the key and what to set."""
