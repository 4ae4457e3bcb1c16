"""``python -m actors.risk --config khazad.toml``: the risk governor process."""

from __future__ import annotations

import sys

from actors.risk.actor import RiskGovernor
from bus.runtime import main

if __name__ == "__main__":
    sys.exit(main(RiskGovernor, "risk"))
