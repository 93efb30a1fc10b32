"""The loaded models and their cards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from s2d.service.auth import require_scope
from s2d.service.deps import RegistryDep
from s2d.service.errors import error_responses
from s2d.service.schemas import ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_scope("models:read"))])


@router.get(
    "/models", response_model=ModelsResponse, responses=error_responses(401, 503), summary="Loaded models and cards"
)
async def list_models(registry: RegistryDep) -> ModelsResponse:
    registry.get(None)  # 503 until ready
    return ModelsResponse(default=registry.default_name, models=[m.describe() for m in registry.models.values()])


@router.get("/models/{name}", responses=error_responses(401, 404, 503), summary="One loaded model and its card")
async def get_model(name: str, registry: RegistryDep) -> dict[str, Any]:
    return registry.get(name).describe()
