"""Benchmarks (speed and memory targets live here, never as timed assertions in tests).

``python -m bench`` (``make bench``) runs the suite of issue #7 and prints one table, every figure next to its
baseline measured in the same run: :mod:`bench.order_entry`, :mod:`bench.bare_chain`, :mod:`bench.kill_switch`,
:mod:`bench.bus_throughput`, :mod:`bench.memory`; shared helpers in :mod:`bench.harness`, helper processes in
:mod:`bench.roles`, the table in :mod:`bench.report`. JSON results go to ``bench/results/`` (ignored by git).
See ``docs/benchmarks.md``.

The older focused scripts stay runnable on their own (each has ``main(argv) -> int``): ``bench.order_entry_bench``,
``bench.risk_bench``, ``bench.gateway_bench``, ``bench.bus_bench``.
"""
