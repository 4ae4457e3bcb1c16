#!/usr/bin/env python3
"""Start the whole Khazad system under supervisord, with one command (``make run``; the same as ``khazad run``).

    python run_all.py                          # sim mode: bundled TWS simulator + example strategy
    python run_all.py --no-strategy            # without the example strategy
    python run_all.py --mode paper --account DU1234567 --with-strategy   # example strategy on the paper account
    python run_all.py --mode paper --account DU1234567 [--ib-host 127.0.0.1 --ib-port 4002]
    KHAZAD_LIVE_CONFIRM=U1234567 python run_all.py --mode live --account U1234567
    python run_all.py --config my.toml         # your own configuration (its run_dir is used)

The work lives in the :mod:`launch` package (planning, supervisord rendering, health, the runner); this file is a
thin entry point that also works from a checkout that was never installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from launch.runner import main

    sys.exit(main(sys.argv[1:]))
