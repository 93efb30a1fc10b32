"""What routes take by `Depends`: the application state built in the lifespan (service.state), and its parts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from s2d.service.registry import ModelRegistry
from s2d.service.settings import Settings
from s2d.service.state import AppState


def get_state(connection: HTTPConnection) -> AppState:
    """The state of the application serving this request or WebSocket (set by the lifespan)."""
    return connection.app.state.s2d


def get_registry(state: Annotated[AppState, Depends(get_state)]) -> ModelRegistry:
    return state.registry


def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


StateDep = Annotated[AppState, Depends(get_state)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
