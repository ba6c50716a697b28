"""Operating and measuring syncd from a checkout: the benchmark (``ops.bench``) and the
chaos, two-replica and soak harnesses (``ops.chaos``), beside the deployment files.

Not part of the installed daemon (``[tool.setuptools] packages`` leaves ``ops`` out):
run from the repository root, ``python -m ops.bench …`` and ``python -m ops.chaos …``.
The product never imports it (an import-linter contract in ``pyproject.toml``); the
tools drive the product only through the hooks its composition root takes
(``daemon.bootstrap.Overrides(on_batch=…, on_sent=…)``) and from outside (signals,
service restarts).
"""
