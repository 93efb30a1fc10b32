"""The OpenAPI description says what the server does: the API keys as security schemes (so /docs has an Authorize
button and schema fuzzers test auth) with the scope each operation needs (service.auth; OpenAPI 3.1 lets a bearer or
API-key requirement name roles), the 401 / 403 / 429 a key can meet, and the limits the settings put on parameters."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from s2d.service.auth import SCOPES, declared_scopes
from s2d.service.errors import error_responses
from s2d.service.middleware import PUBLIC_PATHS
from s2d.service.settings import Settings

_KEYS = f"a named key needs the operation's scope ({', '.join(SCOPES)}); the api_key setting's key has all"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": f"Authorization: Bearer KEY; {_KEYS}"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": f"X-API-Key: KEY; {_KEYS}"},
}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace `app.openapi` with the generated description completed from the settings (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if settings.api_key is not None or settings.api_keys_file is not None:
                _secure(spec, _operation_scopes(app))
            _limit_hop(spec, settings.min_hop_seconds)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi


def _operation_scopes(app: FastAPI) -> dict[tuple[str, str], str]:
    """(path, method) -> the scope its route declares."""
    return {(route.path, method.lower()): scope for route, scope in declared_scopes(app)
            for method in getattr(route, "methods", None) or ()}  # fmt: skip


def _secure(spec: dict[str, Any], scopes: dict[tuple[str, str], str]) -> None:
    spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    refusals = {str(status): answer for status, answer in error_responses(401, 403, 429).items()}
    schemas = spec["components"].setdefault("schemas", {})
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path in PUBLIC_PATHS:
                operation["security"] = []
                continue
            # Either scheme is enough; the roles: the scope the operation needs (none: any known key).
            roles = [scopes[(path, method)]] if (path, method) in scopes else []
            operation["security"] = [{"bearer": roles}, {"apiKey": roles}]
            responses = operation.setdefault("responses", {})
            for status, answer in refusals.items():
                if status not in responses:
                    responses[status] = _described(answer, schemas)


def _described(answer: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """An `error_responses` entry as an OpenAPI response object (ErrorBody is in the components: every protected
    route declares its 401 with it)."""
    name = answer["model"].__name__
    assert name in schemas, f"{name} is not in the OpenAPI components"
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"description": answer["description"], "content": {"application/json": {"schema": ref}}}


def _limit_hop(spec: dict[str, Any], min_hop_seconds: float) -> None:
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "hop_seconds":
                    for schema in parameter["schema"].get("anyOf", [parameter["schema"]]):
                        if schema.get("type") == "number":
                            schema.pop("exclusiveMinimum", None)
                            schema["minimum"] = min_hop_seconds
