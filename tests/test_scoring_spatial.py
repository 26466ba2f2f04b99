"""Fractions skill score against scores.spatial.fss_2d and a dense float64 reference."""

import numpy as np
import pytest
import torch
import xarray as xr
from scores.spatial import fss_2d, fss_2d_single_field

from uqdyn.scoring.spatial import fss


def _fields(seed=0, shape=(3, 20, 24)):
    rng = np.random.default_rng(seed)
    obs = rng.gamma(0.6, 2.0, size=shape)
    fc = np.roll(obs, 2, axis=-1) * rng.uniform(0.7, 1.3, size=shape)
    return obs, fc


def _dense_fss(o, f, thr, h, w, pad):
    """Loop over every window of the (zero-padded) event fields, fractions in float64."""
    eo, ef = (o > thr).astype(float), (f > thr).astype(float)
    if pad:
        spec = ((h // 2, h - 1 - h // 2), (w // 2, w - 1 - w // 2))
        eo, ef = np.pad(eo, spec), np.pad(ef, spec)
    fo, ff = [], []
    for i in range(eo.shape[0] - h + 1):
        for j in range(eo.shape[1] - w + 1):
            fo.append(eo[i : i + h, j : j + w].mean())
            ff.append(ef[i : i + h, j : j + w].mean())
    fo, ff = np.array(fo), np.array(ff)
    return 1 - ((ff - fo) ** 2).sum() / ((ff**2).sum() + (fo**2).sum())


@pytest.mark.parametrize("window", [(1, 1), (3, 5), (7, 7), (20, 24)])
def test_fss_matches_scores_fss_2d(window):
    obs, fc = _fields()
    od = xr.DataArray(obs, dims=("time", "lat", "lon"))
    fd = xr.DataArray(fc, dims=("time", "lat", "lon"))
    kw = {"event_threshold": 1.0, "window_size": window, "spatial_dims": ("lat", "lon")}
    ref = fss_2d(fd, od, preserve_dims=["time"], **kw)
    got = fss(od, fd, 1.0, window, spatial_dims=("lat", "lon"))
    assert got.dims == ("time",)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-12, atol=1e-12)
    pooled = fss_2d(fd, od, **kw)  # scores pools every non-spatial dim by default
    np.testing.assert_allclose(float(fss(od, fd, 1.0, window, dim="time")), float(pooled))
    np.testing.assert_allclose(float(fss(od, fd, 1.0, window, reduction="mean")), float(pooled))


def test_fss_dense_reference_both_paddings_and_layouts():
    obs, fc = _fields(1, shape=(2, 11, 13))
    for pad in (False, True):
        expected = [_dense_fss(obs[k], fc[k], 0.8, 4, 3, pad) for k in range(2)]
        got = fss(torch.tensor(obs), torch.tensor(fc), 0.8, (4, 3), zero_padding=pad)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
        moved = fss(
            obs.transpose(1, 0, 2),
            fc.transpose(1, 0, 2),
            0.8,
            (4, 3),
            spatial_dims=(0, 2),
            zero_padding=pad,
        )
        np.testing.assert_allclose(moved, expected, rtol=1e-12)
    single = fss_2d_single_field(fc[0], obs[0], event_threshold=0.8, window_size=(4, 3))
    np.testing.assert_allclose(float(fss(obs[0], fc[0], 0.8, (4, 3))), single, rtol=1e-12)


def test_fss_weights_nan_and_errors():
    obs, fc = _fields(2, shape=(4, 10, 10))
    per = fss(obs, fc, 1.0, 3)
    assert per.shape == (4,) and np.all((per >= 0) & (per <= 1))
    obs[1, 2, 3] = np.nan
    assert np.isnan(fss(obs, fc, 1.0, 3)[1])
    assert np.isnan(fss(obs, fc, 1.0, 3, dim=0))
    w = np.array([1.0, 1.0, 0.0, 2.0])
    keep = [0, 2, 3]
    np.testing.assert_allclose(
        fss(obs, fc, 1.0, 3, dim=0, weights=w, nan_policy="omit"),
        fss(obs[keep], fc[keep], 1.0, 3, dim=0, weights=w[keep]),
    )
    with pytest.raises(ValueError, match="does not fit"):
        fss(obs, fc, 1.0, 11)
    with pytest.raises(ValueError, match="reduction='sum'"):
        fss(obs, fc, 1.0, 3, reduction="sum")
    assert np.isnan(fss(np.zeros((5, 5)), np.zeros((5, 5)), 1.0, 3))  # no events: undefined


def test_fss_follows_the_device(device):
    obs, fc = _fields(3, shape=(2, 12, 12))
    ref = fss(torch.tensor(obs), torch.tensor(fc), 1.0, 5, zero_padding=True)
    out = fss(
        torch.tensor(obs, device=device), torch.tensor(fc, device=device), 1.0, 5, zero_padding=True
    )
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.cpu(), ref)
