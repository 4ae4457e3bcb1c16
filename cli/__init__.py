"""``khazad``: the operator command line (kill, resume, status, orders, positions, account, keys, top, doctor, sim,
run). :mod:`cli.main` assembles the subcommands; each lives in its own small module with a ``register(subparsers)``
function. The CLI talks to the system over the bus like any client; it is the one layer (with :mod:`launch`) that
may import the simulator and the actors' packages."""
