"""The benchmark: the product's performance, measured against the stack's raw limit.

``python -m ops.bench`` (``ops.bench.cli``) parses options and prints; the scenarios
are in ``ops.bench.scenarios``, the workloads and measuring plumbing in
``ops.bench.workloads``. ``ops/bench/README.md`` describes them.
"""
