"""The OpenAPI 3.1 document of the admin API, built from the request structs."""

from __future__ import annotations

from typing import Any

import msgspec

from daemon import api

_BODIES: dict[tuple[str, str], type[Any]] = {
    ("post", "/api/v1/integration"): api.SetUp,
    ("put", "/api/v1/integration/sync-type"): api.SyncType,
    ("put", "/api/v1/integration/mapping/{module}"): api.Mapping,
    ("put", "/api/v1/integration/matching"): api.Matching,
    ("put", "/api/v1/integration/products-department"): api.ProductsDepartment,
    ("post", "/api/v1/failures/retry"): api.Retry,
    ("post", "/webhooks/{source}"): api.WebhookChange,
}

_OPERATIONS: list[tuple[str, str, str, str]] = [
    ("get", "/api/v1/status", "viewer", "Paused or running, consumer lag, last applied event"),
    ("get", "/api/v1/integration", "viewer", "The integration's configuration"),
    ("post", "/api/v1/integration", "admin", "Set up: one desk portal per CRM organisation"),
    ("put", "/api/v1/integration/sync-type", "admin", "Two-way or one-way CRM → desk"),
    ("post", "/api/v1/integration/legacy-import", "admin", "Start a legacy one-way import"),
    ("post", "/api/v1/integration/switch-to-sync", "admin", "Switch an import to sync (final)"),
    ("put", "/api/v1/integration/mapping/{module}", "admin", "Field mapping of a module"),
    ("put", "/api/v1/integration/matching", "admin", "Matching options"),
    ("put", "/api/v1/integration/products-department", "admin", "Department for products"),
    ("post", "/api/v1/integration/pause", "operator", "Pause sync (capture goes on)"),
    ("post", "/api/v1/integration/resume", "operator", "Resume and apply what accumulated"),
    ("delete", "/api/v1/integration", "admin", "Delete the integration"),
    ("get", "/api/v1/integration/audit", "viewer", "Who changed what, when"),
    ("get", "/api/v1/history", "viewer", "Seven-day history per day (?tz=)"),
    ("get", "/api/v1/failures", "viewer", "Failure log (?status=&reason=&module=&limit=&offset=)"),
    ("post", "/api/v1/failures/retry", "operator", "Retry by ids, by reason, or all"),
    ("post", "/webhooks/{source}", "signature", "Change notification (HMAC-SHA256)"),
    ("get", "/api/v1/handshake/{department}", "viewer",
     "The handshake board: open tickets by the customer's CRM standing (?limit=)"),
    ("get", "/api/v1/handshake/{department}/stream", "viewer",
     "Server-sent events: board, then each move (added, moved, removed) once, in order"),
    ("post", "/api/v1/handshake/{department}/tickets/{ticket}/close", "operator",
     "Close a ticket from the board (a person's edit of the desk store)"),
    ("post", "/api/v1/handshake/{department}/tickets/{ticket}/replies", "operator",
     "Reply to a ticket from the board: {content, author?}"),
]


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        list(_BODIES.values()), ref_template="#/components/schemas/{name}")
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}
    for method, path, role, summary in _OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "ok"}, "400": error, "401": error,
                          "403": error, "404": error, "409": error},
        }
        if role == "signature":
            op["parameters"] = [
                {"name": "X-Syncd-Timestamp", "in": "header", "required": True,
                 "schema": {"type": "integer"}},
                {"name": "X-Syncd-Signature", "in": "header", "required": True,
                 "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"}}]
        else:
            op["security"] = [{"bearer": []}]
            op["x-required-role"] = role
        body = _BODIES.get((method, path))
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}}
        paths.setdefault(path, {})[method] = op
    components["Error"] = {"type": "object", "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "syncd admin API", "version": "1"},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
    }
