"""Cross-tool conformance: every score uqdyn shares with properscoring, scoringrules,
xskillscore and the ``scores`` package, on the same seeded float64 data.

Each comparison is one test id ``<tool>-<score>[-<variant>]``. uqdyn modules are imported
lazily inside the test, so that a score that is not there yet skips its own comparison only.
Tolerances are tight (``rtol=1e-12`` unless the reference itself approximates).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

N, M, D = 40, 9, 4
RTOL = 1e-12
_CASES: dict[str, Callable[[], tuple[Any, Any] | tuple[Any, Any, float, float]]] = {}


def case(name: str):
    def register(fn):
        _CASES[name] = fn
        return fn

    return register


def uq(module: str, name: str) -> Any:
    """``uqdyn.<module>.<name>``, skipping the test while it does not exist."""
    try:
        mod = importlib.import_module(f"uqdyn.{module}")
    except ModuleNotFoundError:
        pytest.skip(f"uqdyn.{module} not available")
    if not hasattr(mod, name):
        pytest.skip(f"uqdyn.{module}.{name} not available")
    return getattr(mod, name)


def tool(name: str) -> Any:
    return pytest.importorskip(name)


def data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=N)
    x = rng.normal(0.3, 1.2, size=(N, M))
    return {
        "y": y,
        "x": x,
        "mu": rng.normal(size=N),
        "sigma": rng.uniform(0.3, 2.0, size=N),
        "yv": rng.normal(size=(N, D)),
        "xv": rng.normal(size=(N, M, D)),
        "ypos": rng.gamma(2.0, 1.0, size=N),
        "shape": rng.uniform(0.5, 3.0, size=N),
        "rate": rng.uniform(0.5, 2.0, size=N),
        "prob": rng.uniform(0, 1, size=N),
        "event": (rng.uniform(size=N) < 0.4).astype(float),
        "w": rng.uniform(0.2, 1.0, size=N),
        "mw": rng.uniform(0.1, 1.0, size=M),
    }


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if hasattr(a, "values") and not isinstance(a, np.ndarray):
        return np.asarray(a.values)
    return np.asarray(a)


def _xr(a: np.ndarray, *dims: str):
    xr = tool("xarray")
    return xr.DataArray(a, dims=dims[: a.ndim])


# --------------------------------------------------------------------------- properscoring


@case("properscoring-crps_ensemble")
def _():
    ps = tool("properscoring")
    d = data()
    crps_ensemble = uq("scoring.crps_ensemble", "crps_ensemble")
    return crps_ensemble(d["y"], d["x"]), ps.crps_ensemble(d["y"], d["x"])


@case("properscoring-crps_ensemble-member_weights")
def _():
    ps = tool("properscoring")
    d = data()
    crps_ensemble = uq("scoring.crps_ensemble", "crps_ensemble")
    mw = np.tile(d["mw"], (N, 1))
    ref = ps.crps_ensemble(d["y"], d["x"], weights=mw)
    return crps_ensemble(d["y"], d["x"], member_weights=mw), ref


@case("properscoring-crps_gaussian")
def _():
    ps = tool("properscoring")
    d = data()
    crps_normal = uq("scoring.crps_closed", "crps_normal")
    return crps_normal(d["y"], d["mu"], d["sigma"]), ps.crps_gaussian(d["y"], d["mu"], d["sigma"])


@case("properscoring-threshold_brier_score")
def _():
    ps = tool("properscoring")
    d = data()
    tbs = uq("scoring.threshold", "threshold_brier_score")
    t = np.array([-1.0, 0.0, 0.5, 1.5])
    return tbs(d["y"], d["x"], t), ps.threshold_brier_score(d["y"], d["x"], t)


# --------------------------------------------------------------------------- scoringrules


def _sr():
    return tool("scoringrules")


for _est, _sr_est in [("nrg", "nrg"), ("nrg", "qd"), ("fair", "fair"), ("pwm", "pwm")]:

    def _make(est=_est, sr_est=_sr_est):
        def fn():
            sr = _sr()
            d = data()
            crps_ensemble = uq("scoring.crps_ensemble", "crps_ensemble")
            got = crps_ensemble(d["y"], d["x"], estimator=est)
            return got, sr.crps_ensemble(d["y"], d["x"], estimator=sr_est, backend="numpy")

        return fn

    case(f"scoringrules-crps_ensemble-{_est}-vs-{_sr_est}")(_make())


@case("scoringrules-crps_ensemble-ens_w")
def _():
    d = data()
    crps_ensemble = uq("scoring.crps_ensemble", "crps_ensemble")
    mw = np.tile(d["mw"], (N, 1))
    got = crps_ensemble(d["y"], d["x"], member_weights=mw)
    return got, _sr().crps_ensemble(d["y"], d["x"], ens_w=mw, estimator="nrg", backend="numpy")


@case("scoringrules-crps_normal")
def _():
    d = data()
    f = uq("scoring.crps_closed", "crps_normal")
    return f(d["y"], d["mu"], d["sigma"]), _sr().crps_normal(
        d["y"], d["mu"], d["sigma"], backend="numpy"
    )


@case("scoringrules-crps_mixnorm")
def _():
    d = data()
    f = uq("scoring.crps_closed", "crps_mixture")
    rng = np.random.default_rng(3)
    m, s, w = rng.normal(size=(N, 3)), rng.uniform(0.3, 2, (N, 3)), rng.uniform(0.1, 1, (N, 3))
    w = w / w.sum(-1, keepdims=True)
    return f(d["y"], w, m, s), _sr().crps_mixnorm(d["y"], m, s, w, backend="numpy")


@case("scoringrules-crps_logistic")
def _():
    d = data()
    f = uq("scoring.crps_parametric", "crps_logistic")
    return f(d["y"], d["mu"], d["sigma"]), _sr().crps_logistic(
        d["y"], d["mu"], d["sigma"], backend="numpy"
    )


@case("scoringrules-crps_lognormal")
def _():
    d = data()
    f = uq("scoring.crps_parametric", "crps_lognormal")
    return f(d["ypos"], d["mu"], d["sigma"]), _sr().crps_lognormal(
        d["ypos"], d["mu"], d["sigma"], backend="numpy"
    )


@case("scoringrules-crps_gamma-rate")
def _():
    d = data()
    f = uq("scoring.crps_parametric", "crps_gamma")
    return f(d["ypos"], d["shape"], d["rate"]), _sr().crps_gamma(
        d["ypos"], d["shape"], d["rate"], backend="numpy"
    )


@case("scoringrules-crps_gamma-scale")
def _():
    d = data()
    f = uq("scoring.crps_parametric", "crps_gamma")
    got = f(d["ypos"], d["shape"], scale=1 / d["rate"])
    return got, _sr().crps_gamma(d["ypos"], d["shape"], scale=1 / d["rate"], backend="numpy")


@case("scoringrules-crps_cnormal")
def _():
    d = data()
    f = uq("scoring.crps_parametric", "crps_censored_normal")
    args = (d["y"], d["mu"], d["sigma"], -0.5, 1.0)
    return f(*args), _sr().crps_cnormal(*args, backend="numpy")


@case("scoringrules-crps_tnormal")
def _():
    d = data()
    f = uq("scoring.crps_parametric", "crps_truncated_normal")
    y = np.clip(d["y"], -0.5, 1.0)
    args = (y, d["mu"], d["sigma"], -0.5, 1.0)
    # scoringrules differs by up to 1.1e-11 relative at one point (index 24), where adaptive
    # float64 quadrature (scipy quad, epsrel 1e-14) agrees with uqdyn to 6e-14.
    return f(*args), _sr().crps_tnormal(*args, backend="numpy"), 5e-11, 1e-13


@case("scoringrules-twcrps_ensemble")
def _():
    d = data()
    f = uq("scoring.weighted", "twcrps_ensemble")
    got = f(d["y"], d["x"], threshold=0.2)
    return got, _sr().twcrps_ensemble(d["y"], d["x"], 0.2, backend="numpy")


@case("scoringrules-twcrps_normal-vs-crps_cnormal")
def _():
    # the indicator-weighted twCRPS of N(mu, sigma^2) above t is the CRPS of the Normal
    # censored below at t, at max(y, t) (Allen et al. 2023); scoringrules has the latter
    d = data()
    f = uq("scoring.weighted", "twcrps_normal")
    got = f(d["y"], d["mu"], d["sigma"], threshold=0.2)
    ref = _sr().crps_cnormal(np.maximum(d["y"], 0.2), d["mu"], d["sigma"], 0.2, backend="numpy")
    return got, ref


@case("scoringrules-twcrps_ensemble-interval")
def _():
    d = data()
    f = uq("scoring.weighted", "twcrps_ensemble")
    got = f(d["y"], d["x"], threshold=(-0.5, 1.0))
    return got, _sr().twcrps_ensemble(d["y"], d["x"], -0.5, 1.0, backend="numpy")


@case("scoringrules-owcrps_ensemble")
def _():
    d = data()
    f = uq("scoring.weighted", "owcrps_ensemble")
    got = f(d["y"], d["x"], threshold=-0.3)
    return got, _sr().owcrps_ensemble(d["y"], d["x"], -0.3, backend="numpy")


@case("scoringrules-vrcrps_ensemble")
def _():
    d = data()
    f = uq("scoring.weighted", "vrcrps_ensemble")
    got = f(d["y"], d["x"], threshold=-0.3)
    return got, _sr().vrcrps_ensemble(d["y"], d["x"], -0.3, backend="numpy")


@case("scoringrules-es_ensemble-nrg")
def _():
    d = data()
    f = uq("scoring.multivariate", "energy_score")
    return f(d["yv"], d["xv"]), _sr().es_ensemble(d["yv"], d["xv"], backend="numpy")


@case("scoringrules-es_ensemble-fair")
def _():
    d = data()
    f = uq("scoring.multivariate", "energy_score")
    got = f(d["yv"], d["xv"], estimator="fair")
    return got, _sr().es_ensemble(d["yv"], d["xv"], estimator="fair", backend="numpy")


@case("scoringrules-es_ensemble-ens_w")
def _():
    d = data()
    f = uq("scoring.multivariate", "energy_score")
    mw = np.tile(d["mw"], (N, 1))
    got = f(d["yv"], d["xv"], member_weights=mw)
    return got, _sr().es_ensemble(d["yv"], d["xv"], ens_w=mw, backend="numpy")


@case("scoringrules-vs_ensemble-p0.5")
def _():
    d = data()
    f = uq("scoring.multivariate", "variogram_score")
    return f(d["yv"], d["xv"], p=0.5), _sr().vs_ensemble(d["yv"], d["xv"], p=0.5, backend="numpy")


@case("scoringrules-vs_ensemble-p1")
def _():
    d = data()
    f = uq("scoring.multivariate", "variogram_score")
    return f(d["yv"], d["xv"], p=1.0), _sr().vs_ensemble(d["yv"], d["xv"], p=1.0, backend="numpy")


@case("scoringrules-interval_score")
def _():
    d = data()
    f = uq("scoring.quantile", "interval_score")
    lo, hi = d["mu"] - d["sigma"], d["mu"] + d["sigma"]
    got = f(d["y"], lo, hi, 0.8)
    return got, _sr().interval_score(d["y"], lo, hi, 0.2, backend="numpy")


@case("scoringrules-quantile_score")
def _():
    d = data()
    f = uq("scoring.quantile", "quantile_score")
    return f(d["y"], d["mu"], 0.3), _sr().quantile_score(d["y"], d["mu"], 0.3, backend="numpy")


@case("scoringrules-crps_quantile")
def _():
    d = data()
    f = uq("scoring.quantile", "crps_quantile")
    levels = (np.arange(M) + 0.5) / M
    q = np.sort(d["x"], axis=-1)
    return f(d["y"], q, levels), _sr().crps_quantile(d["y"], q, levels, backend="numpy")


@case("scoringrules-logs_normal")
def _():
    d = data()
    f = uq("scoring.logscore", "log_score_normal")
    return f(d["y"], d["mu"], d["sigma"]), _sr().logs_normal(
        d["y"], d["mu"], d["sigma"], backend="numpy"
    )


@case("scoringrules-logs_mixnorm")
def _():
    d = data()
    mixture = uq("predictive", "GaussianMixture")
    log_score = uq("scoring.logscore", "log_score")
    torch = tool("torch")
    rng = np.random.default_rng(7)
    m, s, w = rng.normal(size=(N, 3)), rng.uniform(0.3, 2, (N, 3)), rng.uniform(0.1, 1, (N, 3))
    w = w / w.sum(-1, keepdims=True)
    pred = mixture(*(torch.tensor(a.T.copy()) for a in (w, m, s)))
    got = log_score(torch.tensor(d["y"]), pred)
    return got, _sr().logs_mixnorm(d["y"], m, s, w, backend="numpy")


@case("scoringrules-dssuv_ensemble")
def _():
    d = data()
    f = uq("scoring.moments", "dss_ensemble")
    return f(d["y"], d["x"]), _sr().dssuv_ensemble(d["y"], d["x"], backend="numpy")


@case("scoringrules-dssuv_ensemble-bias")
def _():
    d = data()
    f = uq("scoring.moments", "dss_ensemble")
    got = f(d["y"], d["x"], bias=True)
    return got, _sr().dssuv_ensemble(d["y"], d["x"], bias=True, backend="numpy")


@case("scoringrules-brier_score")
def _():
    d = data()
    f = uq("scoring.threshold", "brier_score")
    return f(d["event"], d["prob"]), _sr().brier_score(d["event"], d["prob"], backend="numpy")


@case("scoringrules-rps_score")
def _():
    f = uq("scoring.categorical", "rps_probabilities")
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5), size=N)
    k = rng.integers(0, 5, size=N)
    return f(k, p), _sr().rps_score(k + 1, p, backend="numpy")


@case("scoringrules-rps_score-onehot")
def _():
    f = uq("scoring.categorical", "rps_probabilities")
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4), size=N)
    onehot = np.eye(4)[rng.integers(0, 4, size=N)]
    got = f(onehot, p, onehot=True)
    return got, _sr().rps_score(onehot, p, onehot=True, backend="numpy")


# --------------------------------------------------------------------------- xskillscore


def _xs():
    return tool("xskillscore")


def _xr_ens(d):
    return _xr(d["y"], "time"), _xr(d["x"], "time", "member")


@case("xskillscore-crps_ensemble")
def _():
    d = data()
    f = uq("scoring.crps_ensemble", "crps_ensemble")
    obs, fc = _xr_ens(d)
    got = f(obs, fc, member_dim="member")
    return got, _xs().crps_ensemble(obs, fc, dim=[])


@case("xskillscore-crps_ensemble-member_weights")
def _():
    d = data()
    f = uq("scoring.crps_ensemble", "crps_ensemble")
    obs, fc = _xr_ens(d)
    mw = _xr(np.broadcast_to(d["mw"], (N, M)).copy(), "time", "member")
    got = f(obs, fc, member_dim="member", member_weights=mw)
    return got, _xs().crps_ensemble(obs, fc, member_weights=mw, dim=[])


@case("xskillscore-crps_ensemble-weighted_mean")
def _():
    d = data()
    f = uq("scoring.crps_ensemble", "crps_ensemble")
    obs, fc = _xr_ens(d)
    w = _xr(d["w"], "time")
    got = f(obs, fc, member_dim="member", dim="time", weights=w)
    return got, _xs().crps_ensemble(obs, fc, dim="time", weights=w)


@case("xskillscore-crps_gaussian")
def _():
    d = data()
    f = uq("scoring.crps_closed", "crps_normal")
    obs, mu, sig = _xr(d["y"], "time"), _xr(d["mu"], "time"), _xr(d["sigma"], "time")
    return f(obs, mu, sig), _xs().crps_gaussian(obs, mu, sig, dim=[])


@case("xskillscore-crps_gaussian-weighted_mean")
def _():
    d = data()
    f = uq("scoring.crps_closed", "crps_normal")
    obs, mu, sig = _xr(d["y"], "time"), _xr(d["mu"], "time"), _xr(d["sigma"], "time")
    w = _xr(d["w"], "time")
    got = f(obs, mu, sig, dim="time", weights=w)
    return got, _xs().crps_gaussian(obs, mu, sig, dim="time", weights=w)


@case("xskillscore-crps_quadrature-normal")
def _():
    from scipy import stats

    d = data()
    f = uq("scoring.crps_closed", "crps_normal")
    xr = tool("xarray")
    n = 4  # quadrature is slow, and takes one scalar distribution per call
    ref = [
        float(
            _xs().crps_quadrature(
                xr.DataArray(d["y"][i]), stats.norm(d["mu"][i], d["sigma"][i]), dim=[]
            )
        )
        for i in range(n)
    ]
    # xskillscore integrates with scipy.integrate.quad (tol 1e-6; 7e-15 apart here)
    return f(d["y"][:n], d["mu"][:n], d["sigma"][:n]), np.array(ref), 1e-8, 1e-10


@case("xskillscore-threshold_brier_score")
def _():
    d = data()
    f = uq("scoring.threshold", "threshold_brier_score")
    obs, fc = _xr_ens(d)
    t = [-1.0, 0.0, 0.5, 1.5]
    got = f(obs, fc, np.array(t), member_dim="member")
    ref = _xs().threshold_brier_score(obs, fc, t, dim=[])
    return _np(got), _np(ref.transpose("time", "threshold"))


@case("xskillscore-brier_score-probabilities")
def _():
    d = data()
    f = uq("scoring.threshold", "brier_score")
    obs, p = _xr(d["event"], "time"), _xr(d["prob"], "time")
    return f(obs, p), _xs().brier_score(obs, p, dim=[])


@case("xskillscore-brier_score-fair")
def _():
    d = data()
    f = uq("scoring.categorical", "fair_brier_score")
    obs, fc = _xr_ens(d)
    got = f(_np(obs) > 0.1, _np(fc) > 0.1)
    ref = _xs().brier_score(obs > 0.1, fc > 0.1, member_dim="member", fair=True, dim=[])
    return got, ref


@case("xskillscore-rps")
def _():
    d = data()
    f = uq("scoring.categorical", "rps")
    obs, fc = _xr_ens(d)
    edges = np.array([-1.0, 0.0, 0.7, 1.5])
    got = f(d["y"], d["x"], edges, inclusive=False)
    return got, _xs().rps(obs, fc, edges, dim=[], member_dim="member")


@case("xskillscore-rps-fair")
def _():
    d = data()
    f = uq("scoring.categorical", "rps")
    obs, fc = _xr_ens(d)
    edges = np.array([-1.0, 0.0, 0.7, 1.5])
    got = f(d["y"], d["x"], edges, inclusive=False, fair=True)
    return got, _xs().rps(obs, fc, edges, dim=[], fair=True, member_dim="member")


@case("xskillscore-rank_histogram")
def _():
    d = data()  # continuous data: no ties, so both are deterministic
    f = uq("calibration", "rank_histogram")
    obs, fc = _xr_ens(d)
    got = _np(f(d["y"], d["x"])).astype(float)
    ref = _np(_xs().rank_histogram(obs, fc, dim="time")).astype(float)
    return got, ref


@case("xskillscore-roc-continuous")
def _():
    d = data()
    f = uq("scoring.roc", "roc_auc")
    obs, p = _xr(d["event"], "time"), _xr(d["prob"], "time")
    ref = _xs().roc(obs, p, bin_edges="continuous", dim="time")
    return f(d["event"], d["prob"]), ref


@case("xskillscore-roc-binned")
def _():
    d = data()
    f = uq("scoring.roc", "roc_auc")
    obs, p = _xr(d["event"], "time"), _xr(d["prob"], "time")
    edges = np.linspace(0, 1, 6)
    ref = _xs().roc(obs, p, bin_edges=edges, dim="time")
    return f(d["event"], d["prob"], thresholds=edges), ref


@case("xskillscore-reliability")
def _():
    acc_cls = uq("scoring.accumulate", "EventReliabilityAccumulator")
    rng = np.random.default_rng(8)
    p = rng.uniform(0, 1, size=400)
    o = (rng.uniform(size=400) < p).astype(float)
    edges = np.linspace(0, 1, 6)
    out = acc_cls(edges).update(o, p).result()
    ref = _xs().reliability(
        _xr(o > 0.5, "time"), _xr(p, "time"), dim="time", probability_bin_edges=edges
    )
    got = np.stack([_np(out.observed_frequency), _np(out.counts).astype(float)])
    return got, np.stack([_np(ref), _np(ref["samples"]).astype(float)])


# --------------------------------------------------------------------------- scores


def _sc(sub: str):
    tool("scores")
    return importlib.import_module(f"scores.{sub}")


@case("scores-crps_for_ensemble-ecdf")
def _():
    d = data()
    f = uq("scoring.crps_ensemble", "crps_ensemble")
    obs, fc = _xr_ens(d)
    ref = _sc("probability").crps_for_ensemble(
        fc, obs, "member", method="ecdf", preserve_dims="all"
    )
    return f(d["y"], d["x"]), ref


@case("scores-crps_for_ensemble-fair")
def _():
    d = data()
    f = uq("scoring.crps_ensemble", "crps_ensemble")
    obs, fc = _xr_ens(d)
    ref = _sc("probability").crps_for_ensemble(
        fc, obs, "member", method="fair", preserve_dims="all"
    )
    return f(d["y"], d["x"], estimator="fair"), ref


@case("scores-tw_crps_for_ensemble")
def _():
    d = data()
    f = uq("scoring.weighted", "twcrps_ensemble")
    obs, fc = _xr_ens(d)

    def chain(x):
        return np.maximum(x, 0.2)

    ref = _sc("probability").tw_crps_for_ensemble(
        fc, obs, "member", chain, method="ecdf", preserve_dims="all"
    )
    return f(d["y"], d["x"], threshold=0.2), ref


@case("scores-brier_score")
def _():
    d = data()
    f = uq("scoring.threshold", "brier_score")
    obs, p = _xr(d["event"], "time"), _xr(d["prob"], "time")
    return f(d["event"], d["prob"]), _sc("probability").brier_score(p, obs, preserve_dims="all")


@case("scores-brier_score_for_ensemble-fair")
def _():
    d = data()
    f = uq("scoring.categorical", "fair_brier_score")
    obs, fc = _xr_ens(d)
    ref = _sc("probability").brier_score_for_ensemble(
        fc, obs, "member", 0.1, preserve_dims="all", fair_correction=True
    )
    return f(d["y"], d["x"], 0.1), _np(ref).reshape(N)


@case("scores-crps_cdf-normal")
def _():
    from scipy import stats

    xr = tool("xarray")
    d = data()
    f = uq("scoring.crps_closed", "crps_normal")
    n = 8
    grid = np.linspace(-14.0, 14.0, 28001)
    cdf = stats.norm.cdf(grid[None, :], d["mu"][:n, None], d["sigma"][:n, None])
    fc = xr.DataArray(cdf, dims=("time", "threshold"), coords={"threshold": grid})
    ref = _sc("probability").crps_cdf(fc, _xr(d["y"][:n], "time"), preserve_dims=["time"])
    # scores integrates the CDF given on the grid (spacing 1e-3) piecewise linearly: 8e-8
    # relative apart here
    return f(d["y"][:n], d["mu"][:n], d["sigma"][:n]), ref["total"], 1e-6, 1e-7


@case("scores-isotonic_fit-mean")
def _():
    d = data()
    f = uq("calibration.corp", "isotonic_fit")
    fitted, distinct, curve = f(d["y"], d["mu"])
    ref = _sc("continuous").isotonic_fit(d["mu"], d["y"], functional="mean")
    np.testing.assert_allclose(distinct, ref["fcst_sorted"], rtol=0, atol=0)
    return curve, ref["regression_values"]


@case("scores-brier_score_for_ensemble-plain")
def _():
    # {x > t} is the complement of {x <= t}: the same Brier score (no ties in the data)
    d = data()
    f = uq("scoring.threshold", "threshold_brier_score")
    obs, fc = _xr_ens(d)
    ref = _sc("probability").brier_score_for_ensemble(
        fc, obs, "member", 0.1, preserve_dims="all", fair_correction=False
    )
    return f(d["y"], d["x"], np.array([0.1])), _np(ref).reshape(N, 1)


@case("scores-binary_contingency")
def _():
    cat = _sc("categorical")
    f = uq("scoring.threshold", "contingency_scores")
    d = data()
    fc_, ob_ = d["mu"], d["y"]
    got = f(ob_, fc_, 0.2)
    table = cat.BinaryContingencyManager(_xr(1.0 * (fc_ >= 0.2), "t"), _xr(1.0 * (ob_ >= 0.2), "t"))
    table = table.transform()
    ref = [
        table.critical_success_index(),
        table.probability_of_detection(),
        table.false_alarm_ratio(),
        table.heidke_skill_score(),
    ]
    return np.array([_np(got[k]) for k in ("csi", "pod", "far", "hss")]), np.array(
        [float(_np(r)) for r in ref]
    )


@case("scores-interval_score")
def _():
    d = data()
    f = uq("scoring.quantile", "interval_score")
    lo, hi = d["mu"] - d["sigma"], d["mu"] + d["sigma"]
    ref = _sc("continuous").interval_score(
        _xr(lo, "time"), _xr(hi, "time"), _xr(d["y"], "time"), 0.8, preserve_dims="all"
    )
    return f(d["y"], lo, hi, 0.8), ref["total"]


@case("scores-quantile_score")
def _():
    d = data()
    f = uq("scoring.quantile", "quantile_score")
    ref = _sc("continuous").quantile_score(
        _xr(d["mu"], "time"), _xr(d["y"], "time"), 0.3, preserve_dims="all"
    )
    return f(d["y"], d["mu"], 0.3), ref


def _murphy(functional: str, level: float):
    d = data()
    f = uq("calibration.murphy", "murphy_diagram")
    thetas = np.linspace(-2.5, 2.5, 11)
    got = f(d["y"], d["mu"], functional=functional, level=level, thetas=thetas, reduction="mean")
    ref = _sc("continuous").murphy_score(
        _xr(d["mu"], "time"), _xr(d["y"], "time"), thetas, functional=functional, alpha=level
    )
    return _np(got.score), _np(ref["total"])


@case("scores-murphy_score-quantile")
def _():
    return _murphy("quantile", 0.3)


@case("scores-murphy_score-expectile")
def _():
    return _murphy("expectile", 0.7)


@case("scores-fss_2d")
def _():
    f = uq("scoring.spatial", "fss")
    rng = np.random.default_rng(6)
    fc, ob = rng.normal(size=(2, 12, 15))
    ref = _sc("spatial").fss_2d(
        _xr(fc, "y", "x"),
        _xr(ob, "y", "x"),
        event_threshold=0.3,
        window_size=(3, 4),
        spatial_dims=("y", "x"),
    )
    return f(ob, fc, 0.3, (3, 4)), ref


@case("scores-roc_curve_data")
def _():
    d = data()
    f = uq("scoring.roc", "roc_curve")
    t = np.linspace(0, 1, 6)
    ref = _sc("probability").roc_curve_data(_xr(d["prob"], "time"), _xr(d["event"], "time"), t)
    ref = ref.sel(threshold=t)  # scores appends a threshold at +inf
    false_alarm, hit, _ = f(d["event"], d["prob"], thresholds=t)
    got = np.stack([_np(hit), _np(false_alarm)])
    return got, np.stack([_np(ref["POD"]), _np(ref["POFD"])])


@case("scores-roc_auc")
def _():
    d = data()
    f = uq("scoring.roc", "roc_auc")
    t = np.linspace(0, 1, 6)
    ref = _sc("probability").roc_curve_data(_xr(d["prob"], "time"), _xr(d["event"], "time"), t)
    return f(d["event"], d["prob"], thresholds=t), ref["AUC"]


@case("scores-rank_histogram")
def _():
    d = data()
    f = uq("calibration", "rank_histogram")
    obs, fc = _xr_ens(d)
    ref = _sc("probability").rank_histogram(fc, obs, "member")
    got = _np(f(d["y"], d["x"])).astype(float)
    return got / got.sum(), _np(ref)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(_CASES))
def test_conformance(name):
    out = _CASES[name]()
    got, ref = out[0], out[1]
    rtol, atol = (out[2], out[3]) if len(out) == 4 else (RTOL, 1e-13)
    got, ref = _np(got).astype(np.float64), _np(ref).astype(np.float64)
    assert got.shape == ref.shape or got.size == ref.size, (got.shape, ref.shape)
    assert np.isfinite(ref).all() and np.isfinite(got).all()
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=rtol, atol=atol)


def test_every_case_has_a_tool_prefix():
    prefixes = {"properscoring", "scoringrules", "xskillscore", "scores"}
    assert all(name.split("-")[0] in prefixes for name in _CASES)
