"""``python -m cli``: the ``khazad`` command without the console script (tests and benchmarks run it this way)."""

import sys

from cli.main import main

sys.exit(main())
