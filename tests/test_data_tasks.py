"""Neural-process task samplers and trajectory windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

from uqdyn.data import Task, TaskSampler, TrajectoryWindows

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_params = pytest.mark.parametrize(
    "device",
    [pytest.param(d, marks=[pytest.mark.gpu] if d == "cuda" else [], id=d) for d in DEVICES],
)


def _coded_ode(
    n_traj: int = 6, n_times: int = 40, dim: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """values[n, t, d] = 1000 n + 10 t + d, so every value tells where it came from."""
    n = torch.arange(n_traj, dtype=torch.float64)[:, None, None]
    t = torch.arange(n_times, dtype=torch.float64)[None, :, None]
    d = torch.arange(dim, dtype=torch.float64)[None, None, :]
    times = 0.5 + 0.25 * torch.arange(n_times, dtype=torch.float64)
    return 1000 * n + 10 * t + d, times


def _decode(task: Task, b: int, which: str, times: torch.Tensor):
    x = getattr(task, f"x_{which}")[b]
    y = getattr(task, f"y_{which}")[b]
    m = getattr(task, f"mask_{which}")[b]
    k = int(m.sum())
    assert bool(m[:k].all()) and not bool(m[k:].any())  # real points first
    assert bool((x[k:] == 0).all()) and bool((y[k:] == 0).all())  # zero padding
    traj = torch.div(y[:k, 0], 1000, rounding_mode="floor")
    step = torch.div(y[:k, 0] - 1000 * traj, 10, rounding_mode="floor")
    return x[:k, 0], traj, step.long()


@device_params
def test_interpolation_points_are_consistent_and_counts_in_range(device):
    values, times = _coded_ode()
    sampler = TaskSampler(
        values.to(device),
        times,
        num_context=(3, 8),
        num_target=(5, 10),
        window=20,
        relative_time=False,
    )
    task = sampler.sample(32, generator=0).to("cpu")
    assert task.x_context.shape == (32, 8, 1) and task.y_context.shape == (32, 8, 2)
    assert task.x_target.shape == (32, 18, 1) and task.mask_target.shape == (32, 18)
    nc, nt = task.num_context, task.num_target
    assert bool(((nc >= 3) & (nc <= 8)).all())
    assert bool(((nt - nc >= 5) & (nt - nc <= 10)).all())
    for b in range(32):
        xc, traj_c, step_c = _decode(task, b, "context", times)
        xt, traj_t, step_t = _decode(task, b, "target", times)
        assert len(set(traj_c.tolist()) | set(traj_t.tolist())) == 1  # one trajectory
        torch.testing.assert_close(xc, times[step_c])  # x is the time of y
        torch.testing.assert_close(xt, times[step_t])
        steps = torch.cat([step_c, step_t])
        assert int(steps.max() - steps.min()) < 20  # inside one window
        # targets = the context followed by new, distinct points
        assert torch.equal(step_t[: len(step_c)], step_c)
        assert len(set(step_t.tolist())) == len(step_t)


def test_interpolation_without_context_in_targets_is_disjoint():
    values, times = _coded_ode()
    sampler = TaskSampler(
        values, times, num_context=(2, 6), num_target=4, targets_include_context=False
    )
    assert sampler.max_target == 4
    task = sampler.sample(20, generator=1)
    assert bool((task.num_target == 4).all())
    for b in range(20):
        _, _, step_c = _decode(task, b, "context", times)
        _, _, step_t = _decode(task, b, "target", times)
        assert not set(step_c.tolist()) & set(step_t.tolist())


def test_extrapolation_targets_lie_after_the_last_context_time():
    values, times = _coded_ode(n_times=30)
    sampler = TaskSampler(
        values,
        times,
        setting="extrapolation",
        num_context=(2, 10),
        num_target=(3, 8),
        window=20,
        context_fraction=(0.25, 0.5),
    )
    task = sampler.sample(50, generator=2)
    for b in range(50):
        xc, _, step_c = _decode(task, b, "context", times)
        xt, _, step_t = _decode(task, b, "target", times)
        assert float(xt.min()) > float(xc.max())
        # relative time: window start = 0; context within the first half of the window
        assert float(xc.min()) >= 0 and float(xc.max()) < 0.25 * 10
        assert float(xt.max()) <= 0.25 * 19 + 1e-12
        assert 1 <= len(step_c) <= 10 and 1 <= len(step_t) <= 8


def test_counts_are_uniform_and_tasks_deterministic():
    values, times = _coded_ode()
    sampler = TaskSampler(values, times, num_context=(1, 5), num_target=(1, 3))
    task = sampler.sample(1500, generator=torch.Generator().manual_seed(3))
    counts = np.bincount(task.num_context.numpy(), minlength=6)[1:]
    assert stats.chisquare(counts).pvalue > 1e-3
    again = sampler.sample(1500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(task.y_context, again.y_context)
    assert torch.equal(task.mask_target, again.mask_target)
    other = sampler.sample(1500, generator=4)
    assert not torch.equal(task.y_context, other.y_context)


def test_field_tasks_use_physical_coordinates():
    n, t, c, h, w = 3, 5, 2, 6, 7
    values = torch.randn(n, t, c, h, w, dtype=torch.float64)
    times = torch.linspace(0.0, 1.0, t, dtype=torch.float64)
    gy = 0.1 * torch.arange(h, dtype=torch.float64)
    gx = 2.0 + 0.3 * torch.arange(w, dtype=torch.float64)
    sampler = TaskSampler(
        values, times, grid=(gy, gx), num_context=(5, 30), num_target=(10, 40), window=3
    )
    assert sampler.x_dim == 3 and sampler.y_dim == 2
    task = sampler.sample(6, generator=5)
    assert task.x_context.shape == (6, 30, 3) and task.y_target.shape == (6, 70, 2)
    for b in range(6):
        k = int(task.num_target[b])
        x, y = task.x_target[b, :k], task.y_target[b, :k]
        # relative time in {0, 0.25, 0.5}; find the trajectory and start that match
        iy = torch.round(x[:, 1] / 0.1).long()
        ix = torch.round((x[:, 2] - 2.0) / 0.3).long()
        step = torch.round(x[:, 0] / 0.25).long()
        assert int(step.max()) <= 2
        matches = [
            (nn, s)
            for nn in range(n)
            for s in range(t - 3 + 1)
            if torch.equal(values[nn, s + step, :, iy, ix], y)
        ]
        assert matches, "target values do not match the field at their coordinates"


def test_from_dataset_builds_a_sampler():
    xr = pytest.importorskip("xarray")
    values = np.random.default_rng(0).normal(size=(2, 4, 5, 6))
    ds = xr.Dataset(
        {"u": (("sample", "time", "y", "x"), values)},
        coords={"time": [0.0, 0.1, 0.2, 0.3], "y": np.arange(5) * 0.5, "x": np.arange(6) * 0.2},
    )
    sampler = TaskSampler.from_dataset(ds, ["u"], num_context=3, num_target=4)
    task = sampler.sample(2, generator=0)
    assert task.x_context.shape == (2, 3, 3)
    assert float(task.x_target[..., 1].max()) <= 2.0 + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": torch.zeros(2, 5)}, "values has shape"),
        ({"values": torch.zeros(2, 5, 1, dtype=torch.long)}, "floating"),
        ({"times": torch.zeros(4)}, "times has shape"),
        ({"times": torch.ones(5)}, "strictly increasing"),
        ({"setting": "forecast"}, "setting"),
        ({"window": 9}, "window"),
        ({"num_context": (4, 2)}, "num_context"),
        ({"num_target": 0}, "num_target"),
        ({"num_context": 5, "window": 5}, "no target points"),
        ({"setting": "extrapolation", "targets_include_context": True}, "strictly after"),
        ({"setting": "extrapolation", "context_fraction": (0.8, 0.2)}, "context_fraction"),
    ],
)
def test_task_sampler_bad_input(kwargs, match):
    args = {"values": torch.zeros(2, 5, 1), "times": torch.arange(5.0)}
    args.update(kwargs)
    values, times = args.pop("values"), args.pop("times")
    with pytest.raises((ValueError, TypeError), match=match):
        TaskSampler(values, times, **args)


def test_sample_bad_input():
    sampler = TaskSampler(torch.zeros(2, 5, 1), torch.arange(5.0), num_context=2, num_target=2)
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(0)
    with pytest.raises(TypeError, match="generator"):
        sampler.sample(2, generator="seed")


# ------------------------------------------------------------------- missing values (NaN)
def _gappy_ode(
    fraction: float = 0.3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coded ODE values with NaN at random points (sometimes in one channel only).

    Returns values, times and the ``(N, T)`` boolean mask of observed points.
    """
    values, times = _coded_ode(n_traj=6, n_times=40, dim=2)
    g = torch.Generator().manual_seed(seed)
    gaps = torch.rand(values.shape[:2], generator=g) < fraction
    channel = torch.randint(0, 3, values.shape[:2], generator=g)  # 0, 1: that channel; 2: both
    values = values.clone()
    values[..., 0][gaps & (channel != 1)] = float("nan")
    values[..., 1][gaps & (channel != 0)] = float("nan")
    return values, times, ~gaps


@pytest.mark.parametrize("setting", ["interpolation", "extrapolation"])
def test_sampler_draws_only_observed_points(setting):
    values, times, observed = _gappy_ode()
    kwargs = {"targets_include_context": False} if setting == "interpolation" else {}
    sampler = TaskSampler(
        values,
        times,
        setting=setting,
        num_context=(3, 8),
        num_target=(4, 10),
        window=12,
        relative_time=False,
        **kwargs,
    )
    for seed in range(40):
        task = sampler.sample(16, generator=seed)
        for part in ("x_context", "y_context", "x_target", "y_target"):
            assert bool(torch.isfinite(getattr(task, part)).all()), part
        for b in range(16):
            xc, traj_c, step_c = _decode(task, b, "context", times)
            xt, traj_t, step_t = _decode(task, b, "target", times)
            n = int(traj_c[0])
            assert bool((traj_c == n).all() and (traj_t == n).all())
            assert bool(observed[n, step_c].all() and observed[n, step_t].all())
            assert 3 <= len(step_c) <= 8 and 1 <= len(step_t) <= 10
            assert len(set(step_c.tolist()) | set(step_t.tolist())) == len(step_c) + len(step_t)
            assert int(torch.cat([step_c, step_t]).max() - torch.cat([step_c, step_t]).min()) < 12
            if setting == "extrapolation":
                assert float(xt.min()) > float(xc.max())


def test_observed_points_are_drawn_uniformly_and_gaps_never():
    values, times, observed = _gappy_ode(fraction=0.4, seed=1)
    sampler = TaskSampler(values, times, num_context=3, num_target=1)  # window: all 40 steps
    task = sampler.sample(6000, generator=7)
    counts = torch.zeros(observed.shape, dtype=torch.long)
    for b in range(task.batch_size):
        _, traj, step = _decode(task, b, "context", times)
        counts[traj.long(), step] += 1
    assert int(counts[~observed].sum()) == 0
    for n in range(observed.shape[0]):  # every observed point of a trajectory equally likely
        assert stats.chisquare(counts[n][observed[n]].numpy()).pvalue > 1e-3


def test_nan_aware_draws_reduce_to_the_complete_data_draws():
    values, times = _coded_ode()
    for setting in ("interpolation", "extrapolation"):
        plain = TaskSampler(values, times, setting=setting, num_context=(2, 6), window=15)
        aware = TaskSampler(values, times, setting=setting, num_context=(2, 6), window=15)
        # every point observed, but drawn through the missing-value path
        aware._observed = torch.ones(values.shape[0], values.shape[1], 1, dtype=torch.bool)
        a, b = plain.sample(64, generator=3), aware.sample(64, generator=3)
        for name in ("x_context", "y_context", "mask_context", "x_target", "y_target"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (setting, name)


def test_windows_with_too_few_observed_points_are_skipped():
    values, times = _coded_ode(n_traj=4, n_times=20)
    values = values.clone()
    values[1, 2:] = float("nan")  # trajectory 1: 2 observed points, fewer than 3 + 1
    values[2, :10] = float("nan")  # trajectory 2: windows of 6 steps need a start >= 6
    sampler = TaskSampler(values, times, num_context=(3, 4), num_target=2, window=6)
    task = sampler.sample(400, generator=0)
    traj = torch.div(task.y_context[:, 0, 0], 1000, rounding_mode="floor").long()
    assert set(traj.tolist()) == {0, 2, 3}
    assert bool(torch.isfinite(task.y_target).all()) and bool((task.num_context >= 3).all())
    extrapolate = TaskSampler(
        values, times, setting="extrapolation", num_context=(3, 4), num_target=2, window=6
    )
    task = extrapolate.sample(400, generator=0)
    assert bool(torch.isfinite(task.y_context).all() and torch.isfinite(task.y_target).all())
    traj = torch.div(task.y_context[:, 0, 0], 1000, rounding_mode="floor").long()
    assert set(traj.tolist()) == {0, 2, 3}
    # splits s in [2, 4]: min(3, s) context points at least, as complete data would give
    assert bool((task.num_context >= 2).all() and (task.num_target >= 1).all())


def test_no_usable_window_and_infinite_values_raise():
    values, times = _coded_ode(n_traj=2, n_times=10)
    sparse = values.clone()
    sparse[:, ::2] = float("nan")  # 5 observed points per trajectory, 2 per window of 5
    with pytest.raises(ValueError, match=r"no window with enough observed.*trajectory 0"):
        TaskSampler(sparse, times, num_context=3, num_target=2, window=5)
    TaskSampler(sparse, times, num_context=3, num_target=2)  # the whole series: 5 observed
    infinite = values.clone()
    infinite[1, 4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"1 infinite entries \(first at index \(1, 4, 0\)\)"):
        TaskSampler(infinite, times, num_context=3, num_target=2)


@pytest.mark.parametrize("setting", ["interpolation", "extrapolation"])
def test_field_land_points_are_never_drawn(setting):
    n, t, h, w = 3, 6, 8, 9
    values = torch.randn(n, t, 2, h, w, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    land = (yy + xx) < 6  # a coast along the corner
    values[:, :, :, land] = float("nan")
    values[0, 2, 1, 5, 5] = float("nan")  # and one ocean point missing in one channel
    sampler = TaskSampler(
        values, torch.arange(t, dtype=torch.float64), setting=setting, num_context=(10, 40),
        num_target=(10, 30), window=3,
    )  # fmt: skip
    for seed in range(10):
        task = sampler.sample(8, generator=seed)
        for which in ("context", "target"):
            x, y = getattr(task, f"x_{which}"), getattr(task, f"y_{which}")
            m = getattr(task, f"mask_{which}")
            assert bool(torch.isfinite(y).all())
            iy, ix = x[..., 1][m].long(), x[..., 2][m].long()
            assert not bool(land[iy, ix].any())
        assert bool((task.num_context >= 10).all())


# --------------------------------------------------------------------------- windows
def test_trajectory_windows_match_slicing_and_batch():
    traj = torch.randn(3, 12, 2, 4, 4)
    windows = TrajectoryWindows(traj, input_steps=3, target_steps=2, stride=2)
    assert windows.n_windows == (12 - 5) // 2 + 1 and len(windows) == 3 * windows.n_windows
    k = 0
    for n in range(3):
        for w in range(windows.n_windows):
            inputs, targets = windows[k]
            assert torch.equal(inputs, traj[n, 2 * w : 2 * w + 3])
            assert torch.equal(targets, traj[n, 2 * w + 3 : 2 * w + 5])
            k += 1
    inputs, targets = next(iter(DataLoader(windows, batch_size=4)))
    assert inputs.shape == (4, 3, 2, 4, 4) and targets.shape == (4, 2, 2, 4, 4)
    with pytest.raises(IndexError):
        windows[len(windows)]
    with pytest.raises(ValueError, match="exceeds"):
        TrajectoryWindows(traj, input_steps=10, target_steps=3)
    with pytest.raises(ValueError, match="stride"):
        TrajectoryWindows(traj, input_steps=1, stride=0)
