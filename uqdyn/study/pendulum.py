"""Pendulum study: forecast a damped nonlinear pendulum ``(angle, angular velocity)``."""

from __future__ import annotations

import torch

from uqdyn.physics import DampedPendulum

from ._ode_study import OdeSystem, run_ode_study
from .base import StudyData
from .config import StudyConfig

__all__ = ["run_pendulum"]


def run_pendulum(cfg: StudyConfig, device: torch.device) -> StudyData:
    """Run the pendulum study's data and models (see :mod:`uqdyn.study._ode_study`)."""
    d = cfg.section("data")
    spec = OdeSystem(
        system="damped_pendulum",
        build=DampedPendulum,
        ranges={
            "omega0": (float(d["omega0_range"][0]), float(d["omega0_range"][1])),
            "alpha": (float(d["alpha_range"][0]), float(d["alpha_range"][1])),
        },
        system_kwargs={},
        title="Damped pendulum: 1D state forecast",
        variable="state",
        long_name="observed pendulum state (angle, angular velocity)",
        component_names=("angle", "angular velocity"),
    )
    return run_ode_study(cfg, device, spec)
