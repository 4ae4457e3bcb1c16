"""Example strategies built on the Khazad SDK (:mod:`sdk`); see ``docs/sdk.md``."""
