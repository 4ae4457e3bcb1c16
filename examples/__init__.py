"""Example strategies built on the Khazad SDK (``bus/client.py``); see ``docs/sdk.md``."""
