"""Parametric dataset generation, xarray <-> tensor conversion and netCDF round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats
from scipy.integrate import solve_ivp

from uqdyn.data import (
    dataset_to_tensor,
    load_dataset,
    save_dataset,
    simulate_dataset,
    tensor_to_dataset,
)
from uqdyn.physics import Dynamics

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
device_params = pytest.mark.parametrize(
    "device",
    [pytest.param(d, marks=[pytest.mark.gpu] if d == "cuda" else [], id=d) for d in DEVICES],
)


class _Decay(Dynamics):
    """dx/dt = -rate * x with x0 ~ Uniform(1, 2): x(t) = x0 exp(-rate t)."""

    state_shape = (3,)
    parameter_names = ("rate",)

    def __init__(self, rate=1.0):
        super().__init__()
        self.raw_rate = self._positive_parameter(rate, "rate")

    @property
    def rate(self):
        return self.raw_rate.exp()

    def forward(self, t, state):
        return -self._per_sample(self.rate, state) * state

    def initial_state(self, batch, *, generator=None, device=None, dtype=None):
        return 1.0 + torch.rand(batch, 3, generator=generator, device=device, dtype=dtype)


@device_params
def test_custom_factory_matches_analytic_solution_per_sample(device):
    times = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    ds = simulate_dataset(
        _Decay,
        7,
        times,
        {"rate": (0.5, 2.0)},
        seed=3,
        device=device,
        dtype=torch.float64,
        batch_size=3,
        step_size=0.01,
    )
    assert ds["state"].dims == ("sample", "time", "dim") and ds["state"].dtype == np.float64
    x = ds["state"].values
    rate = ds["rate"].values
    expected = x[:, :1, :] * np.exp(-rate[:, None, None] * ds["time"].values[None, :, None])
    np.testing.assert_allclose(x, expected, rtol=1e-8)  # rk4 at h = 0.01
    assert ((x[:, 0] >= 1.0) & (x[:, 0] <= 2.0)).all()
    assert ds.attrs["system"] == "_Decay" and ds.attrs["step_size"] == 0.01


def test_pendulum_dataset_matches_scipy_and_is_batch_size_independent():
    times = torch.linspace(0.0, 3.0, 16, dtype=torch.float64)
    ranges = {"omega0": (1.0, 2.0), "alpha": (0.1, 0.3)}
    ds = simulate_dataset(
        "damped_pendulum",
        5,
        times,
        ranges,
        seed=1,
        device="cpu",
        dtype=torch.float64,
        step_size=1e-3,
    )
    for i in range(5):
        w0, a = float(ds["omega0"][i]), float(ds["alpha"][i])
        sol = solve_ivp(
            lambda t, s, w0=w0, a=a: [s[1], -(w0**2) * np.sin(s[0]) - a * s[1]],
            (0.0, 3.0),
            ds["state"].values[i, 0],
            t_eval=times.numpy(),
            rtol=1e-11,
            atol=1e-12,
        )
        np.testing.assert_allclose(ds["state"].values[i], sol.y.T, atol=1e-8)
    batched = simulate_dataset(
        "damped_pendulum",
        5,
        times,
        ranges,
        seed=1,
        device="cpu",
        dtype=torch.float64,
        step_size=1e-3,
        batch_size=2,
    )
    xr.testing.assert_allclose(ds, batched, rtol=1e-12, atol=1e-14)
    other = simulate_dataset("damped_pendulum", 5, times, ranges, seed=2, device="cpu")
    assert not np.allclose(other["omega0"], ds["omega0"])


def test_parameters_are_uniform_on_their_ranges():
    ds = simulate_dataset(
        _Decay, 400, torch.tensor([0.0, 0.1]), {"rate": (0.2, 0.7)}, device="cpu", step_size=0.05
    )
    assert stats.kstest(ds["rate"].values, stats.uniform(0.2, 0.5).cdf).pvalue > 1e-3
    np.testing.assert_allclose(ds.attrs["range_rate"], [0.2, 0.7])


def test_gridded_dataset_layout_coordinates_and_mass():
    ds = simulate_dataset(
        "advection_diffusion",
        3,
        torch.linspace(0.0, 0.05, 4),
        {"diffusion": (0.01, 0.03), "velocity": ((0.5, -0.5), (1.0, 0.5))},
        system_kwargs={"size": (12, 16), "length": (1.5, 2.0)},
        device="cpu",
        dtype=torch.float64,
        batch_size=2,
    )
    assert ds["I"].dims == ("sample", "time", "y", "x") and ds["I"].shape == (3, 4, 12, 16)
    np.testing.assert_allclose(ds["y"].values, np.arange(12) * 1.5 / 12)
    np.testing.assert_allclose(ds["x"].values, np.arange(16) * 2.0 / 16)
    assert ds["velocity"].dims == ("sample", "velocity_component")
    lo, hi = np.array([0.5, -0.5]), np.array([1.0, 0.5])
    assert ((ds["velocity"].values >= lo) & (ds["velocity"].values <= hi)).all()
    # the flux-form solver conserves mass; a mix-up of samples or times would not
    mass = ds["I"].sum(("y", "x")).values
    np.testing.assert_allclose(mass, mass[:, :1].repeat(4, axis=1), rtol=1e-10)
    np.testing.assert_array_equal(ds.attrs["setting_size"], [12, 16])


def test_shallow_water_channels_and_tensor_round_trip():
    ds = simulate_dataset(
        "shallow_water",
        2,
        torch.linspace(0.0, 0.2, 3),
        {"coriolis": (0.5, 1.0)},
        system_kwargs={"size": (8, 8)},
        device="cpu",
    )
    assert ds.attrs["state_variables"] == "u,v,h"
    tensor = dataset_to_tensor(ds)
    assert tensor.shape == (2, 3, 3, 8, 8) and tensor.dtype == torch.float32
    for c, name in enumerate(["u", "v", "h"]):
        np.testing.assert_array_equal(tensor[:, :, c].numpy(), ds[name].values)
    back = tensor_to_dataset(
        tensor,
        ds["time"].values,
        variables=["u", "v", "h"],
        coords={"y": ds["y"].values, "x": ds["x"].values},
        parameters={"coriolis": torch.as_tensor(ds["coriolis"].values)},
    )
    for name in ["u", "v", "h", "coriolis"]:
        xr.testing.assert_identical(back[name], ds[name])


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_netcdf_round_trip_is_lossless(tmp_path, engine):
    for module in ["netCDF4"] if engine == "netcdf4" else ["h5netcdf", "h5py"]:
        pytest.importorskip(module)
    ds = simulate_dataset(
        "advection_diffusion",
        2,
        torch.linspace(0.0, 0.02, 3),
        {"diffusion": (0.01, 0.03)},
        system_kwargs={"size": (8, 8), "length": 1.0},
        device="cpu",
    )
    ds["I_mask"] = ds["I"] > float(ds["I"].mean())
    path = tmp_path / "data.nc"
    save_dataset(ds, path, engine=engine)
    loaded = load_dataset(path, engine=engine)
    xr.testing.assert_identical(loaded, ds)
    assert loaded["I"].dtype == np.float32 and loaded["I_mask"].dtype == bool
    assert loaded["diffusion"].dtype == np.float64


def test_dataset_to_tensor_names_missing_and_unexpected_dims():
    good = xr.Dataset({"u": (("sample", "time", "y", "x"), np.zeros((1, 2, 3, 4)))})
    with pytest.raises(ValueError, match=r"missing \['x'\]"):
        dataset_to_tensor(
            xr.Dataset({"u": (("sample", "time", "y", "lon"), np.zeros((1, 2, 3, 4)))})
        )
    with pytest.raises(ValueError, match=r"missing \['time'\]"):
        dataset_to_tensor(
            xr.Dataset({"u": (("sample", "t", "y", "x"), np.zeros((1, 2, 3, 4)))}), ["u"]
        )
    with pytest.raises(ValueError, match=r"unexpected \['level'\]"):
        dataset_to_tensor(
            xr.Dataset({"u": (("sample", "time", "level", "y", "x"), np.zeros((1, 2, 2, 3, 4)))}),
            ["u"],
        )
    with pytest.raises(ValueError, match="'w' is not in the dataset"):
        dataset_to_tensor(good, ["w"])
    with pytest.raises(TypeError, match="xarray.Dataset"):
        dataset_to_tensor(np.zeros(3))
    vec = xr.Dataset(
        {
            "a": (("sample", "time", "dim"), np.ones((2, 3, 1))),
            "b": (("time", "dim", "sample"), np.zeros((3, 1, 2))),
        }
    )
    out = dataset_to_tensor(vec, ["a", "b"], dtype=torch.float64)
    assert (
        out.shape == (2, 3, 2)
        and bool((out[..., 0] == 1).all())
        and bool((out[..., 1:] == 0).all())
    )


def test_save_rejects_attributes_netcdf_cannot_store(tmp_path):
    ds = xr.Dataset({"u": (("sample",), np.zeros(2))}, attrs={"flag": True})
    with pytest.raises(TypeError, match="'flag' is a bool"):
        save_dataset(ds, tmp_path / "bad.nc")
    ds.attrs = {"nested": {"a": 1}}
    with pytest.raises(TypeError, match="'nested'"):
        save_dataset(ds, tmp_path / "bad.nc")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(tmp_path / "missing.nc")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("no_such_system", 2, [0.0, 1.0]), {}, "unknown"),
        ((_Decay, 0, [0.0, 1.0]), {}, "n_samples"),
        ((_Decay, 2, [0.0, 0.0]), {}, "strictly increasing"),
        ((_Decay, 2, [[0.0, 1.0]]), {}, "times has shape"),
        ((_Decay, 2, [0.0, 1.0], {"rate": (2.0, 1.0)}), {}, "low <= high"),
        ((_Decay, 2, [0.0, 1.0], {"rate": 1.0}), {}, "rate"),
        ((_Decay, 2, [0.0, 1.0], {"rate": (1.0, 2.0)}), {"system_kwargs": {"rate": 1.0}}, "both"),
        ((_Decay, 2, [0.0, 1.0]), {"batch_size": 0}, "batch_size"),
        ((_Decay, 2, [0.0, 1.0]), {"dtype": torch.int32}, "dtype"),
        ((_Decay, 2, [0.0, 1.0]), {"system_kwargs": {"rate": object()}}, "netCDF"),
        ((42, 2, [0.0, 1.0]), {}, "system"),
        ((_Decay, 2, [0.0, 1.0], {"speed": (1.0, 2.0)}), {}, "sampled parameters"),
    ],
)
def test_simulate_dataset_bad_input(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        simulate_dataset(*args, device="cpu", **kwargs)


def test_negative_physical_parameter_is_reported_by_the_system():
    with pytest.raises(ValueError, match="diffusion"):
        simulate_dataset(
            "advection_diffusion",
            2,
            [0.0, 0.01],
            {"diffusion": (-0.1, -0.05)},
            system_kwargs={"size": (8, 8)},
            device="cpu",
        )


def test_observe_dataset_masks_noise_and_netcdf(tmp_path):
    from uqdyn.data import observe_dataset
    from uqdyn.observe import Compose, GaussianNoise, RandomPixelMask, StationSubsample

    ds = simulate_dataset(
        "shallow_water",
        3,
        torch.linspace(0.0, 0.2, 4),
        system_kwargs={"size": (8, 8)},
        device="cpu",
        dtype=torch.float64,
    )
    obs = observe_dataset(ds, Compose(RandomPixelMask(0.7), GaussianNoise(0.2)), seed=5)
    n_points = 3 * 4 * 8 * 8
    lo, hi = stats.binom.interval(0.999, n_points, 0.3)
    assert lo <= int(obs["u_mask"].sum()) <= hi
    # one mask per grid point shared by u, v, h; noise only where observed
    np.testing.assert_array_equal(obs["u_mask"].values, obs["h_mask"].values)
    resid = np.concatenate(
        [(obs[f"{v}_obs"] - ds[v]).values[obs[f"{v}_mask"].values] for v in "uvh"]
    )
    chi2 = float((resid**2).sum() / 0.2**2)
    assert stats.chi2.ppf(0.0005, resid.size) < chi2 < stats.chi2.ppf(0.9995, resid.size)
    assert (obs["u_obs"].values[~obs["u_mask"].values] == 0).all()
    np.testing.assert_allclose(obs["v_noise_std"].values, 0.2)
    again = observe_dataset(ds, Compose(RandomPixelMask(0.7), GaussianNoise(0.2)), seed=5)
    xr.testing.assert_identical(obs, again)
    stations = observe_dataset(ds, StationSubsample(n_stations=6), seed=1)
    rows, cols = stations["station_row"].values, stations["station_col"].values
    h = ds["h"].values
    n, t, s = np.indices(rows.shape)
    np.testing.assert_array_equal(stations["h_obs"].values, h[n, t, rows, cols])
    save_dataset(stations, tmp_path / "stations.nc")
    xr.testing.assert_identical(load_dataset(tmp_path / "stations.nc"), stations)
    with pytest.raises(TypeError, match="operator"):
        observe_dataset(ds, torch.nn.Identity())


def test_unstable_step_is_refused_before_simulating():
    with pytest.raises(ValueError, match="step"):
        simulate_dataset(
            "advection_diffusion",
            2,
            [0.0, 1.0],
            {"diffusion": (0.01, 0.02)},
            system_kwargs={"size": (16, 16)},
            device="cpu",
            step_size=0.5,
        )
