"""Shared fixtures: the devices every device-aware test runs on."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def device_params() -> list:
    """``cpu`` always; ``cuda`` marked ``gpu`` when present (skipped otherwise, never passed)."""
    params = [pytest.param("cpu", id="cpu")]
    params.append(
        pytest.param(
            "cuda",
            id="cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
            ],
        )
    )
    return params


@pytest.fixture(params=device_params())
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each test using this fixture runs on the CPU and, where present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread (small models train faster without thread contention)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
