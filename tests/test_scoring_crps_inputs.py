"""crps_ensemble on awkward inputs: dtypes, float32 far from zero, infinities, NaN policies,
reductions by dim with weights, and lazy dask input."""

from __future__ import annotations

import numpy as np
import properscoring as ps
import pytest
import torch
import xarray as xr

from uqdyn.scoring import crps_ensemble, crps_ensemble_components
from uqdyn.scoring._lazy import is_dask_backed

ESTIMATORS = ("nrg", "fair", "afair", "pwm")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _float32_case(loc: float, scale: float, n: int = 20_000, m: int = 50):
    rng = np.random.default_rng(int(loc))
    y = rng.normal(loc, scale, n).astype(np.float32)
    x = (y[:, None] + rng.normal(0.0, scale, (n, m))).astype(np.float32)
    return y, x


def _max_rel(got, ref) -> float:
    got = np.asarray(got, dtype=np.float64)
    return float(np.max(np.abs(got - ref) / np.abs(ref)))


def test_integer_list_and_scalar_inputs_are_float64():
    got = crps_ensemble(np.array([100000001]), np.array([[100000000, 100000003]]))
    assert got.dtype == np.float64
    assert got[0] == 0.75  # float32 would round both numbers to 100000000 and give 0
    assert crps_ensemble(100000001, [[100000000, 100000003]])[0] == 0.75
    t = crps_ensemble(torch.tensor([100000001]), torch.tensor([[100000000, 100000003]]))
    assert t.dtype == torch.float64 and t.item() == 0.75


def test_float16_is_computed_in_float32():
    y = torch.tensor([0.5], dtype=torch.float16)
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float16)
    out = crps_ensemble(y, x)
    assert out.dtype == torch.float32 and out.item() == 0.25


@pytest.mark.parametrize(("loc", "scale"), [(280.0, 1.0), (5e4, 100.0)])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float32_far_from_zero_matches_float64(loc, scale, estimator):
    y, x = _float32_case(loc, scale)
    # reference: the same float32 numbers scored in float64
    ref = crps_ensemble(y.astype(np.float64), x.astype(np.float64), estimator=estimator)
    assert _max_rel(crps_ensemble(y, x, estimator=estimator), ref) <= 1e-6
    # the autograd path (sorted in torch) and the member-weighted path
    yt = torch.tensor(y, requires_grad=True)
    grad_path = crps_ensemble(yt, torch.tensor(x), estimator=estimator).detach().numpy()
    assert _max_rel(grad_path, ref) <= 1e-6
    if estimator != "pwm":
        w = np.full(x.shape[-1], 1.0, np.float32)
        weighted = crps_ensemble(y, x, estimator=estimator, member_weights=w)
        assert _max_rel(weighted, ref) <= 1e-6
    skill, spread = crps_ensemble_components(y, x, estimator=estimator)
    assert skill.dtype == np.float32
    ref_skill = np.abs(x.astype(np.float64) - y[:, None]).mean(-1)
    assert _max_rel(skill, ref_skill) <= 1e-6


@CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("members", [20, 100])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float32_far_from_zero_on_cuda(members, estimator):
    y, x = _float32_case(5e4, 100.0, n=4096, m=members)
    ref = crps_ensemble(y.astype(np.float64), x.astype(np.float64), estimator=estimator)
    got = crps_ensemble(
        torch.tensor(y, device="cuda"), torch.tensor(x, device="cuda"), estimator=estimator
    )
    assert _max_rel(got.cpu().numpy(), ref) <= 1e-6


def test_infinite_members_and_observations():
    out = crps_ensemble(
        np.array([1.0, 1.0, np.inf, np.inf, 1.0, np.nan]),
        np.array(
            [
                [0.0, np.inf],
                [-np.inf, np.inf],
                [0.0, 2.0],
                [np.inf, np.inf],
                [np.nan, np.inf],
                [0.0, 1.0],
            ]
        ),
    )
    np.testing.assert_array_equal(out[:4], [np.inf, np.inf, np.inf, 0.0])
    assert np.isnan(out[4]) and np.isnan(out[5])
    for est in ("fair", "pwm"):
        assert crps_ensemble(1.0, [[0.0, 3.0, np.inf]], estimator=est)[0] == np.inf


def test_member_weights_with_nan_are_an_error():
    with pytest.raises(ValueError, match="member_weights has .* NaN"):
        crps_ensemble(np.zeros(2), np.zeros((2, 3)), member_weights=np.array([1.0, np.nan, 1.0]))


def test_weights_are_reduction_weights_and_need_a_reduction():
    with pytest.raises(ValueError, match="member_weights="):
        crps_ensemble(np.zeros(2), np.zeros((2, 3)), weights=np.ones(2))


def _with_nan_members(seed: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=200)
    x = rng.normal(size=(200, 8))
    x[rng.uniform(size=x.shape) < 0.2] = np.nan
    x[0] = np.nan  # a point without members
    x[1, 1:] = np.nan  # a point with one member
    return y, x


def test_nan_policy_omit_drops_nan_members_as_properscoring():
    y, x = _with_nan_members()
    got = crps_ensemble(y, x, nan_policy="omit")
    ref = ps.crps_ensemble(y, x)  # properscoring drops NaN members
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], ref[1:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("estimator", ["fair", "pwm", "afair"])
def test_nan_policy_omit_fair_estimators_use_the_members_left(estimator):
    y, x = _with_nan_members()
    got = crps_ensemble(y, x, estimator=estimator, nan_policy="omit")
    assert np.isnan(got[0]) and (estimator == "afair" or np.isnan(got[1]))
    for i in range(2, 40):
        keep = x[i][~np.isnan(x[i])]
        if keep.size < 2:
            continue
        ref = crps_ensemble(y[i : i + 1], keep[None], estimator=estimator)[0]
        assert got[i] == pytest.approx(ref, rel=1e-12)


def test_nan_policy_omit_with_member_weights_and_in_reductions():
    y, x = _with_nan_members()
    w = np.linspace(1.0, 2.0, 8)
    got = crps_ensemble(y, x, member_weights=w, nan_policy="omit")
    for i in range(2, 30):
        keep = ~np.isnan(x[i])
        ref = ps.crps_ensemble(y[i], x[i][keep], weights=w[keep])
        assert got[i] == pytest.approx(ref, rel=1e-12)
    mean = crps_ensemble(y, x, member_weights=w, dim=0, nan_policy="omit")
    assert mean == pytest.approx(np.nanmean(got), rel=1e-12)
    assert np.isnan(crps_ensemble(y, x, dim=0))  # propagate: NaN members, NaN mean


def test_nan_policy_raise_and_bad_policy():
    y, x = _with_nan_members()
    with pytest.raises(ValueError, match="forecasts has .* NaN entries and nan_policy='raise'"):
        crps_ensemble(y, x, nan_policy="raise")
    with pytest.raises(ValueError, match="nan_policy='drop'"):
        crps_ensemble(y, x, nan_policy="drop")


def _field(seed: int = 0):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-60.0, 60.0, 5)
    obs = xr.DataArray(rng.normal(size=(4, 5, 6)), dims=("time", "lat", "lon"))
    obs = obs.assign_coords(lat=lat)
    fc = xr.DataArray(
        rng.normal(size=(4, 5, 6, 10)), dims=("time", "lat", "lon", "member")
    ).assign_coords(lat=lat)
    return obs, fc, np.cos(np.deg2rad(lat))


def test_dim_and_coslat_weights_by_name():
    obs, fc, coslat = _field()
    point = crps_ensemble(obs, fc).values
    weights = xr.DataArray(coslat, dims="lat", coords={"lat": obs.lat})
    got = crps_ensemble(obs, fc, dim=["lat", "lon"], weights=weights)
    assert got.dims == ("time",)
    ref = (point * coslat[None, :, None]).sum((1, 2)) / (coslat.sum() * 6)
    np.testing.assert_allclose(got.values, ref, rtol=1e-12)
    total = crps_ensemble(obs, fc, dim=["time", "lat", "lon"], weights=weights, reduction="sum")
    assert float(total) == pytest.approx((point * coslat[None, :, None]).sum(), rel=1e-12)
    # arrays: int axes, weights broadcast as numpy does
    arr = crps_ensemble(obs.values, fc.values, dim=(1, 2), weights=coslat[:, None])
    np.testing.assert_allclose(arr, ref, rtol=1e-12)
    assert crps_ensemble(obs.values, fc.values, dim=np.array(0)).shape == (5, 6)
    with pytest.raises(ValueError, match="dim='height' is not a dim"):
        crps_ensemble(obs, fc, dim="height")


def test_dask_input_gives_a_lazy_result():
    dask = pytest.importorskip("dask")
    obs, fc, coslat = _field()
    weights = xr.DataArray(coslat, dims="lat", coords={"lat": obs.lat})

    def refuse(*args, **kwargs):
        raise AssertionError("computed before .compute()")

    with dask.config.set(scheduler=refuse):
        lazy = crps_ensemble(obs.chunk({"time": 2}), fc.chunk({"time": 2}), dim="lon")
        lazy_w = crps_ensemble(obs.chunk({"time": 1}), fc, dim=["lat", "lon"], weights=weights)
        parts = crps_ensemble_components(obs.chunk({"time": 2}), fc)
    assert is_dask_backed(lazy) and is_dask_backed(lazy_w)
    assert all(is_dask_backed(p) for p in parts)
    np.testing.assert_allclose(lazy.compute().values, crps_ensemble(obs, fc, dim="lon").values)
    eager_w = crps_ensemble(obs, fc, dim=["lat", "lon"], weights=weights)
    np.testing.assert_allclose(lazy_w.compute().values, eager_w.values, rtol=1e-12)
