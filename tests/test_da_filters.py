"""uqdyn.da with filters: vectorised and timed filterpy predicts, LETKF with the localizer,
nonlinear observation operators and correlated observation errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor

from uqdyn.da import (
    ForecastOperator,
    LinearObservation,
    NonlinearObservation,
    check_covariance,
    realize_observation,
    to_dapper,
    to_filterpy,
)
from uqdyn.observe import Compose, GaussianNoise, StationSubsample
from uqdyn.physics import Dynamics, Lorenz96

pytestmark = pytest.mark.filterwarnings("ignore:.* declares no step limit:UserWarning")


class Counting(Lorenz96):
    """Lorenz-96 that counts its forward calls (one call evaluates a whole batch)."""

    def __init__(self, dim: int = 40) -> None:
        super().__init__(dim)
        self.calls = 0

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        self.calls += 1
        return super().forward(t, state)


class Forced(Dynamics):
    """dx/dt = cos(t): explicitly time dependent, x(t1) = x(t0) + sin(t1) - sin(t0)."""

    state_shape = (3,)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        return torch.cos(t).to(state) * torch.ones_like(state)


def l96_numpy(x: np.ndarray, dt: float, steps: int = 1) -> np.ndarray:
    """Classical RK4 of Lorenz-96 (F = 8) in numpy float64."""

    def f(y: np.ndarray) -> np.ndarray:
        return (np.roll(y, -1, -1) - np.roll(y, 2, -1)) * np.roll(y, 1, -1) - y + 8.0

    h = dt / steps
    for _ in range(steps):
        k1 = f(x)
        k2 = f(x + h / 2 * k1)
        k3 = f(x + h / 2 * k2)
        k4 = f(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def on_attractor(seed: int = 2, nx: int = 40) -> np.ndarray:
    x = 8.0 + np.random.default_rng(seed).standard_normal(nx)
    return l96_numpy(x, 10.0, 1000)


def periodic_correlation(indices: np.ndarray, nx: int, rho: float, sigma: float = 1.0):
    """``sigma^2 rho^d`` with ``d`` the periodic distance between observed sites, in units
    of the station spacing (a symmetric positive-definite matrix for 0 <= rho < 1)."""
    distance = np.abs(indices[:, None] - indices[None, :])
    distance = np.minimum(distance, nx - distance) / (indices[1] - indices[0])
    return sigma**2 * rho**distance


# ---------------------------------------------------------------------------- observations


def test_correlated_noise_has_the_covariance_r() -> None:
    idx = np.arange(0, 40, 8)
    R = periodic_correlation(idx, 40, 0.7, sigma=0.5)
    obs = LinearObservation(H=np.eye(40)[idx], R=R, indices=idx)
    assert not obs.diagonal
    np.testing.assert_allclose(obs.cholesky @ obs.cholesky.T, R, rtol=1e-12)
    n = 200_000
    draws = obs.sample(np.zeros((n, 40)), np.random.default_rng(0))
    sample = np.cov(draws, rowvar=False)
    # standard error of a sample covariance entry: sqrt((R_ii R_jj + R_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(R), np.diag(R)) + R**2) / n)
    assert np.abs(sample - R).max() < 4.5 * se.max()
    assert np.abs(draws.mean(axis=0)).max() < 4.5 * 0.5 / math.sqrt(n)
    # the same through the filterpy pair and a realized uqdyn.observe operator
    hx, R_fp = obs.to_filterpy()
    np.testing.assert_array_equal(R_fp, R)
    realized = realize_observation(
        StationSubsample(locations=torch.as_tensor(idx)), 40, noise_cov=R
    )
    np.testing.assert_array_equal(realized.covariance, R)
    np.testing.assert_array_equal(realized.indices, idx)


def test_covariances_are_validated() -> None:
    ny = 3
    good = np.array([[1.0, 0.2, 0.0], [0.2, 1.0, 0.1], [0.0, 0.1, 1.0]])
    R, L = check_covariance(good, ny)
    np.testing.assert_allclose(L @ L.T, good, rtol=1e-14)
    R, L = check_covariance(np.array([1.0, 4.0, 9.0]), ny)
    np.testing.assert_array_equal(np.diag(L), [1.0, 2.0, 3.0])
    asymmetric = good.copy()
    asymmetric[0, 1] = 0.3
    with pytest.raises(ValueError, match=r"R is not symmetric"):
        check_covariance(asymmetric, ny)
    indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r"not positive definite \(smallest eigenvalue -1"):
        check_covariance(indefinite, ny)
    with pytest.raises(ValueError, match=r"R has shape \(2, 2\); expected \(3,\)"):
        check_covariance(np.eye(2), ny)
    with pytest.raises(ValueError, match="non-positive variances at observations \\[1\\]"):
        check_covariance(np.array([1.0, 0.0, 1.0]), ny)
    with pytest.raises(ValueError, match="non-finite"):
        check_covariance(np.array([1.0, np.nan, 1.0]), ny)
    with pytest.raises(TypeError, match="R is a str"):
        check_covariance("big", ny)
    with pytest.raises(ValueError, match="R is not positive definite"):
        LinearObservation(H=np.eye(3), R=indefinite)
    with pytest.raises(ValueError, match="noise_std and noise_cov"):
        realize_observation(
            StationSubsample(locations=torch.arange(3)), 40, noise_std=1.0, noise_cov=good
        )


def test_nonlinear_operator_is_vectorised_and_matches_direct_evaluation() -> None:
    idx = np.arange(1, 40, 3)
    calls: list[tuple[int, ...]] = []

    def h(E: np.ndarray) -> np.ndarray:
        calls.append(E.shape)
        return E[:, idx] ** 2

    obs = NonlinearObservation(h, R=np.full(idx.size, 0.25), state_dim=40, indices=idx)
    E = 8.0 + np.random.default_rng(0).standard_normal((25, 40))
    np.testing.assert_array_equal(obs(E), E[:, idx] ** 2)
    assert calls == [(25, 40)]  # one call for the whole ensemble
    np.testing.assert_array_equal(obs.hx(E[3]), E[3, idx] ** 2)
    absolute = NonlinearObservation(
        lambda E: np.abs(E), R=np.eye(40), state_dim=40, indices=np.arange(40)
    )
    np.testing.assert_array_equal(absolute(-E), np.abs(E))
    residual = obs.sample(np.repeat(E[:1], 20_000, axis=0), np.random.default_rng(1)) - obs(E[0])
    assert abs(residual.std() - 0.5) < 0.01
    torch_h = NonlinearObservation(lambda E: torch.as_tensor(E).sin(), R=np.ones(40), state_dim=40)
    np.testing.assert_allclose(torch_h(E), np.sin(E), rtol=1e-15)
    wrong = NonlinearObservation(lambda E: E[:, :3], R=np.ones(4), state_dim=40)
    with pytest.raises(ValueError, match=r"h returned shape \(25, 3\).*expected \(25, 4\)"):
        wrong(E)
    with pytest.raises(ValueError, match="h returned non-finite"):
        NonlinearObservation(lambda E: np.where(E > 100, E, np.nan), R=np.ones(40), state_dim=40)(E)
    with pytest.raises(TypeError, match="h is a int"):
        NonlinearObservation(3, R=np.ones(2), state_dim=40)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="indices has 2 entries; expected Ny = 3"):
        NonlinearObservation(h, R=np.ones(3), state_dim=40, indices=np.arange(2))
    with pytest.raises(ValueError, match=r"x has shape \(39,\)"):
        obs(np.zeros(39))


# ---------------------------------------------------------------------------- filterpy


def _enkf(kalman, fx, obs: LinearObservation, start: np.ndarray, q: float, seed: int = 5):
    np.random.seed(seed)  # noqa: NPY002 - filterpy draws from numpy's global RNG
    hx, R = obs.to_filterpy()
    kf = kalman.EnsembleKalmanFilter(
        x=start, P=np.eye(start.size), dim_z=obs.Ny, dt=0.05, N=30, hx=hx, fx=fx
    )
    kf.R = R
    kf.Q = np.eye(start.size) * q
    return kf


def test_filterpy_predict_is_one_batched_forecast_equal_to_the_loop() -> None:
    kalman = pytest.importorskip("filterpy.kalman")
    obs = realize_observation(
        Compose(StationSubsample(locations=torch.arange(0, 40, 2)), GaussianNoise(sigma=1.0)), 40
    )
    rng = np.random.default_rng(1)
    truth = on_attractor()
    zs = []
    for _ in range(10):
        truth = l96_numpy(truth, 0.05, 5)
        zs.append(obs.sample(truth, rng))
    start = on_attractor() + rng.standard_normal(40)

    op_batched = ForecastOperator(Counting(40), device="cpu")  # 5 rk4 steps of 0.01 per call
    op_loop = ForecastOperator(Counting(40), device="cpu")
    fx_batched, fx_loop = to_filterpy(op_batched), to_filterpy(op_loop)
    batched = _enkf(kalman, fx_batched, obs, start, 1e-4)
    loop = _enkf(kalman, fx_loop, obs, start, 1e-4)
    for z in zs:
        np.random.seed(11)  # noqa: NPY002 - the same process-noise draws in both filters
        fx_batched.predict(batched)
        np.random.seed(11)  # noqa: NPY002
        loop.predict()  # filterpy's own loop: fx once per member
        for kf in (batched, loop):
            np.random.seed(12)  # noqa: NPY002 - the same perturbed observations
            kf.update(z)
    np.testing.assert_allclose(batched.sigmas, loop.sigmas, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(batched.x, loop.x, rtol=1e-12, atol=1e-12)
    # one forward per RK4 stage for all 30 members, against one per member in the loop
    assert op_batched.dynamics.calls == 10 * 5 * 4
    assert op_loop.dynamics.calls == 10 * 30 * 5 * 4
    assert math.isclose(fx_batched.t, 0.5) and fx_loop.t == 0.0

    # the unscented filter: sigma points in one batch, the same as filterpy's loop
    points = kalman.MerweScaledSigmaPoints(40, alpha=0.1, beta=2.0, kappa=0.0)
    hx, R = obs.to_filterpy()
    ukfs = []
    for fx in (fx_batched, fx_loop):
        ukf = kalman.UnscentedKalmanFilter(
            dim_x=40, dim_z=obs.Ny, dt=0.05, hx=hx, fx=fx, points=points
        )
        ukf.x, ukf.P, ukf.R, ukf.Q = start.copy(), np.eye(40), R, np.eye(40) * 1e-4
        ukfs.append(ukf)
    before = op_batched.dynamics.calls
    for z in zs[:3]:
        fx_batched.predict(ukfs[0])
        ukfs[1].predict()
        for ukf in ukfs:
            ukf.update(z)
    np.testing.assert_allclose(ukfs[0].x, ukfs[1].x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ukfs[0].P, ukfs[1].P, rtol=1e-8, atol=1e-10)
    assert op_batched.dynamics.calls - before == 3 * 5 * 4  # 81 sigma points per batch
    with pytest.raises(TypeError, match="kf is a str"):
        fx_batched.predict("filter")
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        fx_batched(start, 0.05, time=1.0)


def test_filterpy_passes_the_time_of_non_autonomous_dynamics() -> None:
    kalman = pytest.importorskip("filterpy.kalman")
    operator = ForecastOperator(Forced(), max_step=0.01, device="cpu")
    x0 = np.array([1.0, -0.5, 2.0])
    t0, dt, cycles = 0.3, 0.25, 8
    exact = x0 + math.sin(t0 + cycles * dt) - math.sin(t0)

    fx = to_filterpy(operator, t0=t0)
    assert fx(x0, dt).shape == (3,) and fx(np.stack([x0, x0]), dt).shape == (2, 3)
    np.testing.assert_allclose(fx(x0, dt, t=1.0), x0 + math.sin(1.25) - math.sin(1.0), rtol=1e-9)
    np.random.seed(0)  # noqa: NPY002 - filterpy's global RNG
    enkf = kalman.EnsembleKalmanFilter(
        x=x0, P=np.eye(3) * 0.1, dim_z=1, dt=dt, N=20, hx=lambda x: x[:1], fx=fx
    )
    enkf.Q = np.zeros((3, 3))
    members = enkf.sigmas.copy()
    for _ in range(cycles):
        fx.predict(enkf)  # one batched forecast from the tracked time
    assert math.isclose(fx.t, t0 + cycles * dt)
    shift = math.sin(t0 + cycles * dt) - math.sin(t0)
    np.testing.assert_allclose(enkf.sigmas, members + shift, rtol=1e-9, atol=1e-9)

    # filterpy's own EnKF loop passes no time: every forecast starts at the same t, wrong here
    stuck = to_filterpy(operator, t0=t0)
    np.random.seed(0)  # noqa: NPY002
    loop = kalman.EnsembleKalmanFilter(
        x=x0, P=np.eye(3) * 0.1, dim_z=1, dt=dt, N=20, hx=lambda x: x[:1], fx=stuck
    )
    loop.Q = np.zeros((3, 3))
    for _ in range(cycles):
        loop.predict()
    frozen = cycles * (math.sin(t0 + dt) - math.sin(t0))
    np.testing.assert_allclose(loop.sigmas, members + frozen, rtol=1e-9, atol=1e-9)
    assert abs(frozen - shift) > 1.0  # passing t matters

    # the unscented filter passes t through predict(t=...), per point or batched
    points = kalman.MerweScaledSigmaPoints(3, alpha=0.5, beta=2.0, kappa=0.0)
    ukfs = []
    for _ in range(2):
        ukf = kalman.UnscentedKalmanFilter(
            dim_x=3, dim_z=1, dt=dt, hx=lambda x: x[:1], fx=fx, points=points
        )
        ukf.x, ukf.P, ukf.Q = x0.copy(), np.eye(3) * 0.1, np.zeros((3, 3))
        ukfs.append(ukf)
    for k in range(cycles):
        t = t0 + k * dt
        ukfs[0].predict(t=t)  # filterpy's loop, fx(x, dt, t=t) per sigma point
        fx.predict(ukfs[1], t=t)  # one batch
    for ukf in ukfs:
        np.testing.assert_allclose(ukf.x, exact, rtol=1e-9)
        np.testing.assert_allclose(ukf.P, np.eye(3) * 0.1, rtol=1e-8, atol=1e-12)


def test_filterpy_enkf_with_correlated_r_beats_the_free_forecast() -> None:
    kalman = pytest.importorskip("filterpy.kalman")
    idx = np.arange(0, 40, 2)
    R = periodic_correlation(idx, 40, 0.8)
    obs = LinearObservation(H=np.eye(40)[idx], R=R, indices=idx)
    rng = np.random.default_rng(3)
    truth = on_attractor(seed=3)
    start = truth + rng.standard_normal(40)
    fx = to_filterpy(ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1))
    # filterpy's EnKF (perturbed observations, no inflation): Q = 0.05 I inflates additively
    kf = _enkf(kalman, fx, obs, start, 0.05)
    free = start.copy()
    errors, free_errors = [], []
    for k in range(80):
        truth = l96_numpy(truth, 0.05)
        free = l96_numpy(free, 0.05)
        fx.predict(kf)
        kf.update(obs.sample(truth, rng))
        if k >= 20:  # after a spin-up of the filter
            errors.append(np.sqrt(np.mean((kf.x - truth) ** 2)))
            free_errors.append(np.sqrt(np.mean((free - truth) ** 2)))
    rmse, rmse_free = float(np.mean(errors)), float(np.mean(free_errors))
    print("FILTERPY_CORRELATED_RMSE", rmse, rmse_free)
    # below the observation-error std (1) and far below the free forecast
    assert rmse < 0.8 and rmse < 0.25 * rmse_free


# ---------------------------------------------------------------------------- DAPPER


def _dapper_hmm(cycles: int):
    modelling = pytest.importorskip("dapper.mods")
    pytest.importorskip("dapper.da_methods")
    import dapper.tools.progressbar as progressbar
    from dapper.mods.Lorenz96.sakov2008 import HMM

    progressbar.disable_progbar = True
    hmm = HMM.copy()
    hmm.tseq = modelling.Chronology(0.05, dko=1, Ko=cycles, BurnIn=2.5)
    return hmm, modelling


def _rmse(xp, hmm, xx, yy, seed: int = 4) -> tuple[float, float]:
    from dapper.tools.seeding import set_seed

    set_seed(seed)
    xp.assimilate(hmm, xx, yy, liveplots=False)
    xp.stats.average_in_time()
    return float(xp.avrgs.err.rms.a.val), float(xp.avrgs.spread.rms.a.val)


def test_letkf_with_the_uqdyn_operator_and_localizer_matches_dapper() -> None:
    hmm, modelling = _dapper_hmm(200)
    from dapper.da_methods import LETKF
    from dapper.tools.seeding import set_seed

    def letkf():
        return LETKF(N=7, rot=True, infl=1.04, loc_rad=4)

    set_seed(3)
    xx, yy = hmm.simulate()
    reference = _rmse(letkf(), hmm, xx, yy)
    # DAPPER documents rmse.a ~ 0.22 for this LETKF on this HMM (long runs)
    assert 0.15 < reference[0] < 0.3

    obs = realize_observation(
        Compose(StationSubsample(locations=torch.arange(40)), GaussianNoise(sigma=1.0)), 40
    )
    ours = hmm.copy()
    ours.Dyn = modelling.Operator(
        **to_dapper(ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1))
    )
    # DAPPER's HMM updates the state in batches of 2; the same localizer, built by uqdyn
    ours.Obs = modelling.TimeDependentOperator(**obs.to_dapper(localization_batch=2))
    np.testing.assert_allclose(_rmse(letkf(), ours, xx, yy), reference, rtol=1e-8)

    # defaults: the resolved flow (rk4 steps of 0.01) and one local analysis per component
    default = hmm.copy()
    default.Dyn = modelling.Operator(**to_dapper(ForecastOperator(Lorenz96(40))))
    default.Obs = modelling.TimeDependentOperator(**obs.to_dapper())
    assert default.Obs(0).localizer is not None
    rmse, spread = _rmse(letkf(), default, xx, yy)
    print("LETKF_RMSE", reference, (rmse, spread))
    assert abs(rmse / reference[0] - 1) < 0.1 and 0.5 < spread / rmse < 2
    without = hmm.copy()
    without.Obs = modelling.TimeDependentOperator(**obs.to_dapper(localization_batch=None))
    with pytest.raises(AttributeError, match="localizer"):
        _rmse(letkf(), without, xx, yy)


def test_dapper_enkf_with_correlated_r_uses_the_correlations() -> None:
    hmm, modelling = _dapper_hmm(300)
    from dapper.da_methods import EnKF
    from dapper.tools.seeding import set_seed

    idx = np.arange(0, 40, 2)
    R = periodic_correlation(idx, 40, 0.8)
    correlated = LinearObservation(H=np.eye(40)[idx], R=R, indices=idx)
    assumed_independent = LinearObservation(H=np.eye(40)[idx], R=np.ones(idx.size), indices=idx)
    hmm.Dyn = modelling.Operator(
        **to_dapper(ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1))
    )
    hmm.Obs = modelling.TimeDependentOperator(**correlated.to_dapper())
    set_seed(3)
    xx, yy = hmm.simulate()
    errors = np.stack(list(yy)) - xx[1:, idx]
    # 300 draws: the lag-one correlation 0.8 within about 4 standard errors (0.02)
    assert abs(np.corrcoef(errors[:, 0], errors[:, 1])[0, 1] - 0.8) < 0.08

    def enkf():
        return EnKF("Sqrt", N=24, infl=1.02, rot=True)

    ours = _rmse(enkf(), hmm, xx, yy)
    # DAPPER's own construction of the same observation: identical filter
    theirs = hmm.copy()
    obs = modelling.partial_Id_Obs(40, idx)
    obs["noise"] = modelling.GaussRV(C=R)
    theirs.Obs = modelling.TimeDependentOperator(**obs)
    np.testing.assert_allclose(ours, _rmse(enkf(), theirs, xx, yy), rtol=1e-8)
    wrong = hmm.copy()
    wrong.Obs = modelling.TimeDependentOperator(**assumed_independent.to_dapper())
    ignoring = _rmse(enkf(), wrong, xx, yy)
    print("CORRELATED_R_RMSE", ours, ignoring)
    assert ours[0] < 0.6 * ignoring[0]


def test_dapper_nonlinear_observation_matches_direct_evaluation() -> None:
    hmm, modelling = _dapper_hmm(50)
    idx = np.arange(0, 40, 4)
    calls: list[int] = []

    def h(E: np.ndarray) -> np.ndarray:
        calls.append(E.shape[0])
        return np.abs(E[:, idx])

    obs = NonlinearObservation(
        h,
        R=np.full(idx.size, 0.09),
        state_dim=40,
        indices=idx,
        jacobian=lambda x: np.eye(40)[idx] * np.sign(x[idx])[:, None],
    )
    mapping = obs.to_dapper()
    assert "localizer" in mapping and mapping["noise"].C.diag.shape == (idx.size,)
    hmm.Obs = modelling.TimeDependentOperator(**mapping)
    E = 8.0 + np.random.default_rng(0).standard_normal((24, 40)) * 4
    np.testing.assert_array_equal(hmm.Obs(0)(E), np.abs(E[:, idx]))
    assert calls == [24]
    x = E[0]
    np.testing.assert_array_equal(
        hmm.Obs(0).linear(x, 0.0), np.eye(40)[idx] * np.sign(x[idx])[:, None]
    )
    from dapper.tools.seeding import set_seed

    set_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xx, yy = hmm.simulate()
    errors = np.stack(list(yy)) - np.abs(xx[1:, idx])
    assert abs(errors.std() - 0.3) < 0.03 and abs(errors.mean()) < 0.03
