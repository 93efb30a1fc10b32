"""The OpenAPI description says what the server does: the API key as security schemes (so /docs has an Authorize
button and schema fuzzers test auth), and the limits the settings put on parameters."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from s2d.service.middleware import PUBLIC_PATHS
from s2d.service.settings import Settings

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace `app.openapi` with the generated description completed from the settings (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if settings.api_key is not None:
                _secure(spec)
            _limit_hop(spec, settings.min_hop_seconds)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi


def _secure(spec: dict[str, Any]) -> None:
    spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            # Either scheme is enough; the public routes take none.
            operation["security"] = [] if path in PUBLIC_PATHS else [{"bearer": []}, {"apiKey": []}]


def _limit_hop(spec: dict[str, Any], min_hop_seconds: float) -> None:
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "hop_seconds":
                    for schema in parameter["schema"].get("anyOf", [parameter["schema"]]):
                        if schema.get("type") == "number":
                            schema.pop("exclusiveMinimum", None)
                            schema["minimum"] = min_hop_seconds
