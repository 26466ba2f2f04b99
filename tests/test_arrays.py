"""The torch / numpy / xarray conversion layer shared by scores and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from uqdyn._arrays import prepare, reduce_score


def test_numpy_in_numpy_out_keeps_float64():
    (a, b), restore = prepare(np.zeros(3), np.ones((3, 4)), names=["obs", "fc"], core=[None, -1])
    assert a.dtype == torch.float64 and b.shape == (3, 4)
    out = restore(a + b.sum(-1))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64


def test_numpy_scalars_keep_their_dtype():
    (a,), _ = prepare(np.float64(1.5), names=["x"])
    assert a.dtype == torch.float64
    (a, b), _ = prepare(2.0, np.zeros(2, dtype=np.float32), names=["x", "y"])
    assert a.dtype == torch.float32  # python numbers do not promote


def test_core_axis_moves_last_and_broadcasts():
    (obs, fc), restore = prepare(
        torch.zeros(5), torch.zeros(7, 5), names=["obs", "fc"], core=[None, 0]
    )
    assert fc.shape == (5, 7) and obs.shape == (5,)
    assert restore.kind == "torch"


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"'obs' \(3,\).*'fc' \(4,\)"):
        prepare(np.zeros(3), np.zeros((4, 2)), names=["obs", "fc"], core=[None, -1])


def test_devices_must_agree_and_types_are_checked():
    with pytest.raises(TypeError, match="'obs'"):
        prepare("abc", np.zeros(2), names=["obs", "fc"])
    with pytest.raises(TypeError, match="complex"):
        prepare(np.zeros(2, dtype=complex), names=["obs"])


def test_xarray_round_trip_keeps_coords():
    obs = xr.DataArray(np.arange(3.0), dims=["x"], coords={"x": [10, 20, 30]})
    fc = xr.DataArray(np.zeros((4, 3)), dims=["member", "x"])
    (o, f), restore = prepare(obs, fc, names=["obs", "fc"], core=[None, "member"])
    assert f.shape == (3, 4)
    out = restore(o * 2)
    assert isinstance(out, xr.DataArray) and list(out.x.values) == [10, 20, 30]
    np.testing.assert_allclose(out.values, [0.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="'member'"):
        prepare(obs, fc.rename(member="ens"), names=["obs", "fc"], core=[None, "member"])
    with pytest.raises(TypeError, match="DataArray"):
        prepare(obs, np.zeros((4, 3)), names=["obs", "fc"])


def test_reduce_score_nan_policy_and_mask():
    score = torch.tensor([1.0, float("nan"), 3.0, 5.0])
    assert torch.isnan(reduce_score(score, "mean"))
    assert reduce_score(score, "mean", skipna=True) == pytest.approx(3.0)
    mask = torch.tensor([True, False, True, False])
    assert reduce_score(score, "sum", mask=mask) == pytest.approx(4.0)
    assert reduce_score(score, "none") is score
    with pytest.raises(ValueError, match="reduction"):
        reduce_score(score, "median")
    with pytest.raises(TypeError, match="mask"):
        reduce_score(score, "mean", mask=torch.ones(4))
