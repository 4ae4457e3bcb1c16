"""Exit codes of the ``khazad`` commands (scripts rely on them: they are part of the CLI's contract).

=====  ========================================================================================
0      done (``kill``: the gateway confirmed: trading halted and no order left working in the scope)
1      ``status``: something is down or unreachable
2      unreachable (``kill``: the gateway did not answer within the timeout)
3      ``kill``: the gateway answered but did not confirm (orders remain working, or it could not verify)
4      refused (``Rejected``: e.g. a malformed scope; a malformed argument of ``fills``/``report``)
5      unavailable: an optional extra is not installed (``fills --format parquet``: pyarrow; ``report``: matplotlib)
78     configuration error (:data:`bus.config.EXIT_CONFIG`)
=====  ========================================================================================
"""

from bus.config import EXIT_CONFIG

EXIT_OK = 0
#: ``status``: something is down or unreachable
EXIT_DEGRADED = 1
EXIT_UNREACHABLE = 2
EXIT_NOT_CONFIRMED = 3
EXIT_REFUSED = 4
#: an optional extra (pyarrow, matplotlib) is not installed
EXIT_UNAVAILABLE = 5

__all__ = [
    "EXIT_OK",
    "EXIT_DEGRADED",
    "EXIT_UNREACHABLE",
    "EXIT_NOT_CONFIRMED",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_CONFIG",
]
