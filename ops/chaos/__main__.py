"""``python -m ops.chaos``: the fault-injection run, ``--two-replicas``, or ``soak``."""

from ops.chaos.cli import main

main()
