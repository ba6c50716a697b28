"""``python -m ops.bench``: run the benchmark (see ``ops/bench/README.md``)."""

from ops.bench.cli import main

main()
