"""Launching the whole system under supervisord (``khazad run``, ``python run_all.py``, ``make run``).

* :mod:`launch.options`    the command-line flags (the same for ``khazad run`` and ``run_all.py``);
* :mod:`launch.plan`       the run directory, the generated ``khazad.toml``, the programs to run (from
                           :mod:`bus.registry`) and the gateway's pre-flight check;
* :mod:`launch.supervisord` ``supervisord.conf`` rendered from the template shipped in ``launch/templates``;
* :mod:`launch.xmlrpc`     supervisord's XML-RPC interface over its unix socket;
* :mod:`launch.health`     "every actor healthy": supervisord's programs and the monitor's view;
* :mod:`launch.runner`     one run: start, wait healthy, supervise, stop cleanly.

Everything needed at run time ships inside the package (the templates are package data), so a Khazad installed
from a wheel starts the whole system from any directory.
"""
