"""The OpenAPI 3.1 document, built from the route table and the request structs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from daemon.http.acting import CRM_USER_HEADER
from daemon.http.routes import Route

_PARAMETER = re.compile(r"\{(\w+):[^}]*\}")  # aiohttp's {name:regex} is {name} here


def document(routes: Iterable[Route[Any]]) -> dict[str, Any]:
    routes = list(routes)
    bodies = list(dict.fromkeys(r.body for r in routes if r.body is not None))
    _, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}")
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "responses": {"200": {"description": "ok"}, "400": error, "401": error,
                          "403": error, "404": error, "409": error},
        }
        if route.role == "signature":
            op["parameters"] = [
                {"name": "X-Syncd-Timestamp", "in": "header", "required": True,
                 "schema": {"type": "integer"}},
                {"name": "X-Syncd-Signature", "in": "header", "required": True,
                 "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"}}]
        elif route.role != "public":
            op["security"] = [{"bearer": []}]
            op["x-required-role"] = route.role
        if route.crm_user is not None:
            op["parameters"] = [{
                "name": CRM_USER_HEADER, "in": "header",
                "required": route.crm_user == "required", "schema": {"type": "string"},
                "description": "The CRM user (id or e-mail) the call acts for: their role"
                               " and ticket visibility apply"}]
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
        paths.setdefault(_PARAMETER.sub(r"{\1}", route.path), {})[route.method] = op
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
