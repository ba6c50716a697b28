"""The HTTP layer: one route table (``routes.py``) from which both the aiohttp
application (``server.py``) and the OpenAPI document (``openapi.py``) are built;
authorisation (``auth.py``) and the error body (``errors.py``) written once; the
handlers (``api.py``, ``board.py``) parse, authorise, call ``daemon.service`` and
shape the answer, and hold no SQL.

The paths are here, importable without aiohttp, so that the CLI's client
(``daemon.cli.client``) names the same ones.
"""

API_PREFIX = "/api/v1"
"""Every admin API path starts here; bearer tokens are read on these paths only."""

BOARD_PREFIX = f"{API_PREFIX}/handshake"
"""The handshake board's paths (HS-04 … HS-07)."""
