from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.service_helpers import build_store


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """The model store of the service tests: the tiny exported test model (tests.service_helpers.build_store), built
    once per run. A test module that needs another store defines its own `store`."""
    return build_store(str(tmp_path_factory.getbasetemp() / "service-store"))
