"""Datasets for uqdyn: simulated parametric trajectories, xarray I/O and task samplers.

* :func:`simulate_dataset` samples parameters and initial states, simulates with
  :mod:`uqdyn.physics` and returns a labelled ``xarray.Dataset``; :func:`observe_dataset`
  adds partial/noisy observations made by :mod:`uqdyn.observe` operators;
* :func:`dataset_to_tensor`, :func:`tensor_to_dataset`, :func:`save_dataset`,
  :func:`load_dataset` convert between xarray, torch and netCDF;
* :class:`TrajectoryWindows` is a ``torch.utils.data.Dataset`` of input/target frames;
* :class:`TaskSampler` draws padded context/target :class:`Task` batches for neural
  processes, in the interpolation and extrapolation settings.
"""

from uqdyn.data.io import dataset_to_tensor, load_dataset, save_dataset, tensor_to_dataset
from uqdyn.data.simulate import SYSTEMS, observe_dataset, simulate_dataset
from uqdyn.data.tasks import Task, TaskSampler
from uqdyn.data.torch_dataset import TrajectoryWindows

__all__ = [
    "SYSTEMS",
    "simulate_dataset",
    "observe_dataset",
    "dataset_to_tensor",
    "tensor_to_dataset",
    "save_dataset",
    "load_dataset",
    "TrajectoryWindows",
    "Task",
    "TaskSampler",
]
from uqdyn.data.user_data import (  # noqa: E402
    dask_available,
    load_task_sampler,
    open_user_dataset,
    split_dataset,
    standardize_dataset,
)

__all__ += [
    "open_user_dataset",
    "standardize_dataset",
    "split_dataset",
    "load_task_sampler",
    "dask_available",
]
from uqdyn.data.motion import (  # noqa: E402
    TransportData,
    divergence_free_velocity,
    physics_rollout,
    random_smooth_field,
    simulate_transport,
)

__all__ += [
    "TransportData",
    "random_smooth_field",
    "divergence_free_velocity",
    "simulate_transport",
    "physics_rollout",
]
