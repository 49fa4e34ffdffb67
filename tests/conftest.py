"""Shared by every test: the marker of each folder (tests/unit/: ``unit``, tests/workflow/:
``workflow``; ``-m unit`` runs the fast half) and one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FOLDER_MARKERS = {"unit": pytest.mark.unit, "workflow": pytest.mark.workflow}


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: intra-op threads only spin on a busy 2-core machine, and one
    thread keeps CPU results bit-reproducible across runs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
