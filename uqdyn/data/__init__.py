"""Datasets for uqdyn: simulated parametric trajectories, xarray I/O and task samplers.

* :func:`simulate_dataset` samples parameters and initial states, simulates with
  :mod:`uqdyn.physics` and returns a labelled ``xarray.Dataset``; :func:`observe_dataset`
  adds partial/noisy observations made by :mod:`uqdyn.observe` operators;
* :func:`dataset_to_tensor`, :func:`tensor_to_dataset`, :func:`save_dataset`,
  :func:`load_dataset` convert between xarray, torch and netCDF;
* :class:`TrajectoryWindows` is a ``torch.utils.data.Dataset`` of input/target frames;
* :class:`TaskSampler` draws padded context/target :class:`Task` batches for neural
  processes, in the interpolation and extrapolation settings;
* :func:`open_user_dataset` and friends turn users' netCDF/zarr files into checked tasks;
* :func:`simulate_transport` simulates the transported fields of the motion-field
  forecasters, :func:`lorenz96_pairs` the one-step pairs of the DA surrogate;
* :func:`multi_environment` simulates one system under several parameter settings
  (an ``env`` dim); :data:`LOTKA_VOLTERRA_CODA`, :data:`GRAY_SCOTT_CODA` and
  :data:`NAVIER_STOKES_CODA` are the CoDA protocol's settings.
"""

from uqdyn.data.io import dataset_to_tensor, load_dataset, save_dataset, tensor_to_dataset
from uqdyn.data.motion import (
    TransportData,
    divergence_free_velocity,
    physics_rollout,
    random_smooth_field,
    simulate_transport,
)
from uqdyn.data.multi_environment import (
    GRAY_SCOTT_CODA,
    LOTKA_VOLTERRA_CODA,
    NAVIER_STOKES_CODA,
    EnvironmentProtocol,
    coda_protocol_datasets,
    multi_environment,
)
from uqdyn.data.pairs import check_pairs, lorenz96_pairs
from uqdyn.data.simulate import SYSTEMS, observe_dataset, simulate_dataset
from uqdyn.data.streaming import ZarrWindowDataset
from uqdyn.data.tasks import Task, TaskSampler
from uqdyn.data.torch_dataset import TrajectoryWindows
from uqdyn.data.user_data import (
    dask_available,
    load_task_sampler,
    open_user_dataset,
    split_dataset,
    standardize_dataset,
)

__all__ = [
    "SYSTEMS",
    "simulate_dataset",
    "observe_dataset",
    "dataset_to_tensor",
    "tensor_to_dataset",
    "save_dataset",
    "load_dataset",
    "TrajectoryWindows",
    "ZarrWindowDataset",
    "Task",
    "TaskSampler",
    "open_user_dataset",
    "standardize_dataset",
    "split_dataset",
    "load_task_sampler",
    "dask_available",
    "TransportData",
    "random_smooth_field",
    "divergence_free_velocity",
    "simulate_transport",
    "physics_rollout",
    "lorenz96_pairs",
    "check_pairs",
    "multi_environment",
    "EnvironmentProtocol",
    "LOTKA_VOLTERRA_CODA",
    "GRAY_SCOTT_CODA",
    "NAVIER_STOKES_CODA",
    "coda_protocol_datasets",
]
