"""The OpenAPI schema at /openapi.json, as FastAPI builds it plus what it
cannot know: how callers authenticate, and which paths need no key.

FastAPI adds a 422 "validation error" to every route with parameters; this
server answers those as 400 in the dialect's error shape, which every route
declares instead (`schemas.error_responses`), so no 422 is left.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from overnight.api.auth import PUBLIC_PATHS

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "OpenAI and Together SDKs."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}


def install_schema(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    if PUBLIC_PATHS.match(path.replace("{token}", "t")):
                        operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
