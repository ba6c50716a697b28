"""Emulators of the hosted services the daemon syncs, for its tests and for
``python3 dev.py run --remote`` (``ops/demo_remote.py``): each speaks the documented
subset of its API on loopback, with in-memory state (see each module's docstring)."""
