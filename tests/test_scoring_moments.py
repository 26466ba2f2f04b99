"""Dawid-Sebastiani scores against scoringrules and the Gaussian log score."""

import numpy as np
import pytest
import scoringrules as sr
import torch
from scipy.stats import norm

from uqdyn.scoring.moments import dss, dss_ensemble


def test_dss_is_twice_gaussian_log_score_minus_log_2pi():
    rng = np.random.default_rng(0)
    y, mu, sd = rng.normal(size=30), rng.normal(size=30), rng.uniform(0.3, 3, size=30)
    expected = -2 * norm.logpdf(y, mu, sd) - np.log(2 * np.pi)
    np.testing.assert_allclose(dss(y, mu, sd**2), expected, rtol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
def test_dss_ensemble_matches_scoringrules(bias):
    rng = np.random.default_rng(1)
    y, x = rng.normal(size=40), rng.normal(size=(40, 9)) * 2 + 0.5
    ref = sr.dssuv_ensemble(y, x, bias=bias, backend="numpy")
    np.testing.assert_allclose(dss_ensemble(y, x, bias=bias), ref, rtol=1e-12)
    ref_m0 = sr.dssuv_ensemble(y, x.T, m_axis=0, bias=bias, backend="numpy")
    np.testing.assert_allclose(dss_ensemble(y, x.T, member_dim=0, bias=bias), ref_m0, rtol=1e-12)


def test_dss_nan_policy_weights_and_errors():
    rng = np.random.default_rng(2)
    y, x = torch.tensor(rng.normal(size=6)), torch.tensor(rng.normal(size=(6, 5)))
    x[0, 2] = torch.nan
    s = dss_ensemble(y, x)
    assert torch.isnan(s[0]) and not torch.isnan(s[1:]).any()
    omitted = dss_ensemble(y, x, nan_policy="omit")
    torch.testing.assert_close(omitted[0], dss_ensemble(y[:1], x[:1, [0, 1, 3, 4]])[0])
    w = torch.tensor([0.0, 1.0, 2.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(
        dss_ensemble(y, x, dim=0, weights=w), (w[1:] * s[1:]).sum() / w.sum()
    )
    with pytest.raises(ValueError, match="forecasts has 1 NaN"):
        dss_ensemble(y, x, nan_policy="raise")
    with pytest.raises(ValueError, match="non-positive"):
        dss(y, y, torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="M >= 2"):
        dss_ensemble(y, x[:, :1])


def test_dss_follows_the_device(device):
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(6, generator=gen, dtype=torch.float64)
    out = dss_ensemble(y.to(device), x.to(device))
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.cpu(), dss_ensemble(y, x))


@pytest.mark.parametrize("bias", [False, True])
def test_multivariate_dss_matches_scoringrules_and_univariate(bias):
    from uqdyn.scoring.moments import dss_ensemble_multivariate

    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 3))
    y, x = rng.normal(size=(15, 3)), rng.normal(size=(15, 8, 3)) @ a.T
    ref = sr.dssmv_ensemble(y, x, bias=bias, backend="numpy")
    np.testing.assert_allclose(dss_ensemble_multivariate(y, x, bias=bias), ref, rtol=1e-10)
    # one variable: the univariate DSS
    np.testing.assert_allclose(
        dss_ensemble_multivariate(y[:, :1], x[:, :, :1], bias=bias),
        dss_ensemble(y[:, 0], x[:, :, 0], bias=bias),
        rtol=1e-12,
    )
    # fewer members than variables: singular covariance, infinite score
    assert np.isinf(dss_ensemble_multivariate(y[:2], x[:2, :3], bias=bias)).all()
