"""`GET /together/v3/whoami` (and `/v1/whoami`): who the key belongs to, in the shape of
Together's WhoamiResponse.

Together's CLI (`tg`, shipped with SDK 3.x) asks this before every command
to learn the key's project, and stops with a 404 unless `--project` is
given. A tenant is the nearest thing overnight has to a user, an
organisation and a project at once, so it answers as all three
(`user_org_project_jwt`, the variant that carries a user and a project).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from overnight.api import schemas
from overnight.api.auth import caller_of
from overnight.api.responses import JSONBytes, ok

router = APIRouter(
    tags=["together"], default_response_class=JSONBytes, responses=schemas.error_responses()
)

#: What an admin key acting for no tenant is called.
ADMIN_NAME = "admin"


def whoami_object(name: str) -> dict[str, Any]:
    return {
        "type": "user_org_project_jwt",
        "user": {"id": name},
        "organization": {"id": name, "name": name},
        "project": {"id": name, "name": name, "slug": name},
    }


@router.get("/v3/whoami", responses=ok(schemas.Whoami))
@router.get("/v1/whoami", responses=ok(schemas.Whoami))
async def whoami(request: Request) -> JSONBytes:
    tenant = caller_of(request).tenant
    return JSONBytes(whoami_object(tenant if tenant is not None else ADMIN_NAME))
