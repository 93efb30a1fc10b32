"""What routes take by `Depends`: the application state built in the lifespan (service.state), and its parts. A
route takes the narrowest of these it needs; the upload and stream endpoints use most of the state and take it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from s2d.service.registry import ModelRegistry
from s2d.service.settings import Settings
from s2d.service.shutdown import Shutdown
from s2d.service.sources import SourceManager
from s2d.service.state import AppState


def get_state(connection: HTTPConnection) -> AppState:
    """The state of the application serving this request or WebSocket (set by the lifespan)."""
    return connection.app.state.s2d


def get_registry(state: Annotated[AppState, Depends(get_state)]) -> ModelRegistry:
    return state.registry


def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


def get_shutdown(state: Annotated[AppState, Depends(get_state)]) -> Shutdown:
    return state.shutdown


def get_source_manager(state: Annotated[AppState, Depends(get_state)]) -> SourceManager:
    return state.sources


def get_sources(manager: Annotated[SourceManager, Depends(get_source_manager)]) -> SourceManager:
    """The source manager; 403 sources_disabled for every source route while sources are off."""
    manager.check_enabled()
    return manager


StateDep = Annotated[AppState, Depends(get_state)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ShutdownDep = Annotated[Shutdown, Depends(get_shutdown)]
SourceManagerDep = Annotated[SourceManager, Depends(get_source_manager)]  # whether or not sources are on
SourcesDep = Annotated[SourceManager, Depends(get_sources)]  # 403 while sources are off
