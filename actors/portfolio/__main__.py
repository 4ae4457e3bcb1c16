"""``python -m actors.portfolio --config khazad.toml``"""

import sys

from actors.portfolio.actor import PortfolioActor
from bus.runtime import main

if __name__ == "__main__":
    sys.exit(main(PortfolioActor, "portfolio"))
