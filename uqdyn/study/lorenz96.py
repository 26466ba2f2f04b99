"""Lorenz-96 study: forecast the chaotic Lorenz-96 system with an uncertain forcing."""

from __future__ import annotations

import torch

from uqdyn.physics import Lorenz96

from ._ode_study import OdeSystem, run_ode_study
from .base import StudyData
from .config import StudyConfig

__all__ = ["run_lorenz96"]


def run_lorenz96(cfg: StudyConfig, device: torch.device) -> StudyData:
    """Run the Lorenz-96 study's data and models (see :mod:`uqdyn.study._ode_study`)."""
    d = cfg.section("data")
    spec = OdeSystem(
        system="lorenz96",
        build=Lorenz96,
        ranges={"forcing": (float(d["forcing_range"][0]), float(d["forcing_range"][1]))},
        system_kwargs={"dim": int(d["dim"])},
        title="Lorenz-96: chaotic state forecast",
        variable="x",
        long_name="observed Lorenz-96 state",
    )
    return run_ode_study(cfg, device, spec)
