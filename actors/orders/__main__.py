"""``python -m actors.orders --config khazad.toml``: run the order manager."""

import sys

from actors.orders.actor import OrderManager
from bus.registry import ORDERS
from bus.runtime import main

if __name__ == "__main__":
    sys.exit(main(OrderManager, ORDERS.name))
