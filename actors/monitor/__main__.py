"""``python -m actors.monitor --config khazad.toml``"""

import sys

from actors.monitor.actor import MonitorActor
from bus.runtime import main

if __name__ == "__main__":
    sys.exit(main(MonitorActor, "monitor"))
