"""Every classification test trains tiny models on one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every module here trains tiny models: one torch thread (the root conftest's ``one_torch_thread``)."""
