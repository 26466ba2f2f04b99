"""Every pointwise score is lazy on dask-backed DataArrays: nothing is computed until asked
(a scheduler that raises proves it) and the computed result equals the eager one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
dask = pytest.importorskip("dask")

from uqdyn import scoring  # noqa: E402
from uqdyn.scoring._lazy import is_dask_backed  # noqa: E402

RNG = np.random.default_rng(7)
TIME, LAT, MEMBER, VAR, QUANT = 6, 4, 9, 3, 5


def _da(values: np.ndarray, dims: tuple[str, ...]) -> Any:
    coords = {"time": np.arange(TIME), "lat": np.linspace(-60.0, 60.0, LAT)}
    return xr.DataArray(values, dims=dims, coords={d: coords[d] for d in dims if d in coords})


OBS = _da(RNG.normal(size=(TIME, LAT)), ("time", "lat"))
MU = _da(RNG.normal(size=(TIME, LAT)), ("time", "lat"))
SIGMA = _da(RNG.uniform(0.5, 2.0, size=(TIME, LAT)), ("time", "lat"))
POS_OBS = _da(RNG.gamma(2.0, size=(TIME, LAT)), ("time", "lat"))
ENS = _da(RNG.normal(size=(TIME, LAT, MEMBER)), ("time", "lat", "member"))
MEMBER_W = xr.DataArray(RNG.uniform(0.5, 1.5, size=MEMBER), dims=("member",))
EVENT = _da(RNG.normal(size=(TIME, LAT, VAR)), ("time", "lat", "var"))
ENS_MV = _da(RNG.normal(size=(TIME, LAT, MEMBER, VAR)), ("time", "lat", "member", "var"))
LEVELS = np.linspace(0.1, 0.9, QUANT)
QUANTILES = _da(np.sort(RNG.normal(size=(TIME, LAT, QUANT)), axis=-1), ("time", "lat", "quantile"))
ALPHAS = np.array([0.2, 0.5])
HALF = _da(RNG.uniform(0.5, 2.0, size=(TIME, LAT, 2)), ("time", "lat", "interval"))
COMPONENT_W = _da(RNG.dirichlet(np.ones(3), size=(TIME, LAT)), ("time", "lat", "component"))
COMPONENT_MU = _da(RNG.normal(size=(TIME, LAT, 3)), ("time", "lat", "component"))
COMPONENT_SIGMA = _da(RNG.uniform(0.5, 2.0, size=(TIME, LAT, 3)), ("time", "lat", "component"))
EVENT_OBS = _da((RNG.uniform(size=(TIME, LAT)) < 0.4).astype(float), ("time", "lat"))
PROB = _da(RNG.uniform(size=(TIME, LAT)), ("time", "lat"))

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "crps_normal": ("crps_normal", {"obs": OBS, "mu": MU, "sigma": SIGMA}),
    "crps_mixture": (
        "crps_mixture",
        {
            "obs": OBS,
            "component_weights": COMPONENT_W,
            "mu": COMPONENT_MU,
            "sigma": COMPONENT_SIGMA,
            "component_dim": "component",
        },
    ),
    "crps_logistic": ("crps_logistic", {"obs": OBS, "mu": MU, "s": SIGMA}),
    "crps_lognormal": ("crps_lognormal", {"obs": POS_OBS, "mulog": MU, "sigmalog": SIGMA}),
    "crps_gamma": ("crps_gamma", {"obs": POS_OBS, "shape": SIGMA + 1.0, "rate": SIGMA}),
    "crps_censored_normal": (
        "crps_censored_normal",
        {"obs": POS_OBS, "mu": MU, "sigma": SIGMA, "lower": 0.0},
    ),
    "crps_truncated_normal": (
        "crps_truncated_normal",
        {"obs": POS_OBS, "mu": MU, "sigma": SIGMA, "lower": 0.0},
    ),
    "crps_ensemble": ("crps_ensemble", {"obs": OBS, "forecasts": ENS}),
    "crps_ensemble_weighted": (
        "crps_ensemble",
        {"obs": OBS, "forecasts": ENS, "member_weights": MEMBER_W},
    ),
    "twcrps_ensemble": ("twcrps_ensemble", {"obs": OBS, "forecasts": ENS, "threshold": 0.5}),
    "owcrps_ensemble": ("owcrps_ensemble", {"obs": OBS, "forecasts": ENS, "threshold": -0.5}),
    "vrcrps_ensemble": ("vrcrps_ensemble", {"obs": OBS, "forecasts": ENS, "threshold": 0.0}),
    "twcrps_normal": ("twcrps_normal", {"obs": OBS, "mu": MU, "sigma": SIGMA, "threshold": 0.5}),
    "log_score_normal": ("log_score_normal", {"obs": OBS, "mu": MU, "sigma": SIGMA}),
    "dss": ("dss", {"obs": OBS, "mean": MU, "var": SIGMA}),
    "dss_ensemble": ("dss_ensemble", {"obs": OBS, "forecasts": ENS}),
    "dss_ensemble_multivariate": (
        "dss_ensemble_multivariate",
        {"obs": EVENT, "forecasts": ENS_MV, "member_dim": "member", "event_dim": "var"},
    ),
    "energy_score": (
        "energy_score",
        {
            "obs": EVENT,
            "forecasts": ENS_MV,
            "member_dim": "member",
            "event_dim": "var",
            "member_weights": MEMBER_W,
        },
    ),
    "variogram_score": (
        "variogram_score",
        {"obs": EVENT, "forecasts": ENS_MV, "member_dim": "member", "event_dim": "var"},
    ),
    "quantile_score": ("quantile_score", {"obs": OBS, "forecast_quantile": MU, "level": 0.3}),
    "interval_score": (
        "interval_score",
        {"obs": OBS, "lower": MU - SIGMA, "upper": MU + SIGMA, "level": 0.8},
    ),
    "crps_quantile": ("crps_quantile", {"obs": OBS, "quantiles": QUANTILES, "levels": LEVELS}),
    "weighted_interval_score": (
        "weighted_interval_score",
        {"obs": OBS, "median": MU, "lower": MU - HALF, "upper": MU + HALF, "alpha": ALPHAS},
    ),
    "brier_score": ("brier_score", {"obs_event": EVENT_OBS, "prob": PROB}),
    "fair_brier_score": ("fair_brier_score", {"obs": OBS, "forecasts": ENS, "threshold": 0.2}),
    "rps": ("rps", {"obs": OBS, "forecasts": ENS, "thresholds": [-0.5, 0.0, 0.5]}),
}


def _raising_scheduler(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the lazy score computed before it was asked to")


def _chunked(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The DataArrays of a case chunked along time (the member weights stay in memory)."""
    return {
        k: v.chunk({"time": 2}) if isinstance(v, xr.DataArray) and "time" in v.dims else v
        for k, v in kwargs.items()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_score_is_lazy_and_equals_eager(case: str) -> None:
    name, kwargs = CASES[case]
    fn = getattr(scoring, name)
    eager = fn(**kwargs)
    weights = np.cos(np.deg2rad(OBS.lat))
    eager_reduced = fn(**kwargs, dim="lat", weights=weights)
    with dask.config.set(scheduler=_raising_scheduler):
        lazy = fn(**_chunked(kwargs))
        lazy_reduced = fn(**_chunked(kwargs), dim="lat", weights=weights)
    assert is_dask_backed(lazy) and is_dask_backed(lazy_reduced)
    assert lazy.dims == eager.dims and lazy.dtype == eager.dtype
    np.testing.assert_allclose(lazy.compute().values, np.asarray(eager.values), rtol=1e-12)
    np.testing.assert_allclose(
        lazy_reduced.compute().values, np.asarray(eager_reduced.values), rtol=1e-12
    )


def test_two_output_score_is_lazy_and_equals_eager() -> None:
    eager = scoring.crps_ensemble_components(OBS, ENS, dim="lat")
    with dask.config.set(scheduler=_raising_scheduler):
        lazy = scoring.crps_ensemble_components(OBS.chunk({"time": 2}), ENS, dim="lat")
    assert isinstance(lazy, tuple) and len(lazy) == 2
    for a, b in zip(lazy, eager, strict=True):
        assert is_dask_backed(a)
        np.testing.assert_allclose(a.compute().values, b.values, rtol=1e-12)


def test_every_pointwise_score_in_the_public_api_is_covered() -> None:
    """A new pointwise score added to uqdyn.scoring without a laziness case fails here."""
    not_pointwise = {
        "crps",  # dispatches on a Predictive object (not an array)
        "log_score",  # the same
        "crps_decomposition",  # a reduction over points, not a pointwise score
        "hersbach_bins",
        "rps_probabilities",  # obs one-hot along the category dim or not: no single core spec
        "threshold_brier_score",  # one output per threshold (an extra output dim)
        "roc_curve",
        "roc_auc",
        "fss",
        "contingency_scores",  # reductions over points / windows
    }
    public = {
        n
        for n in scoring.__all__
        if callable(getattr(scoring, n))
        and not isinstance(getattr(scoring, n), type)
        and n[0].islower()
    }
    covered = {name for name, _ in CASES.values()} | {"crps_ensemble_components"}
    missing = sorted(public - covered - not_pointwise)
    assert not missing or all(not _is_score(n) for n in missing), (
        f"pointwise scores without a laziness case: {missing}"
    )


def _is_score(name: str) -> bool:
    import inspect

    params = inspect.signature(getattr(scoring, name)).parameters
    return "reduction" in params and "dim" in params
