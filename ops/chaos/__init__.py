"""The chaos, two-replica and soak harnesses (OWN-02, OWN-05), run against the daemon
as subprocesses on embedded services of their own.

``python -m ops.chaos`` (``ops.chaos.cli``) runs them; the harness itself (replicas,
driver, model, checks) is ``ops.chaos.harness``. docs/reliability.md describes them.
"""
