"""uqdyn.da: forecast operators, the DAPPER and filterpy adapters, observation operators as H."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor

from uqdyn.da import (
    DEFAULT_MAX_STEP,
    ForecastOperator,
    LinearObservation,
    realize_observation,
    to_dapper,
    to_filterpy,
)
from uqdyn.observe import Blur, Compose, GaussianNoise, RandomPixelMask, StationSubsample
from uqdyn.physics import Dynamics, Lorenz63, Lorenz96
from uqdyn.predictive import Normal

# Lorenz-96 declares no step limit, so operators built without substeps or max_step warn
# once; the test of that warning is test_a_dynamics_without_a_limit_warns_once.
pytestmark = pytest.mark.filterwarnings("ignore:.* declares no step limit:UserWarning")

# ---------------------------------------------------------------------------- references


def l96_rk4_numpy(x: np.ndarray, dt: float, forcing: float = 8.0) -> np.ndarray:
    """Classical RK4 step of Lorenz-96 in numpy float64 (independent of uqdyn and torch)."""

    def f(y: np.ndarray) -> np.ndarray:
        return (np.roll(y, -1, -1) - np.roll(y, 2, -1)) * np.roll(y, 1, -1) - y + forcing

    k1 = f(x)
    k2 = f(x + dt / 2 * k1)
    k3 = f(x + dt / 2 * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


class Decay(Dynamics):
    """dx/dt = -rate x, with the rk4 stability limit 2.785 / rate (real-axis extent)."""

    state_shape = (3,)

    def __init__(self, rate: float = 10.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        return -self.rate * state

    def stable_dt(self, method: str = "rk4") -> float:
        return 2.785 / self.rate


class Blowup(Dynamics):
    """dx/dt = x^2: finite-time blow-up at t = 1 / x0."""

    state_shape = (2,)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        return state.square()


def ensemble(n: int = 24, nx: int = 40, seed: int = 0) -> np.ndarray:
    return 8.0 + np.random.default_rng(seed).standard_normal((n, nx))


# ---------------------------------------------------------------------------- forecast step


@pytest.mark.parametrize("method, rtol", [("rk4_classic", 1e-13), ("rk4", 1e-3)])
def test_step_matches_numpy_rk4_for_state_and_ensemble(method: str, rtol: float) -> None:
    # rk4_classic is the same scheme as the numpy reference (round-off only); torchdiffeq's
    # rk4 is the 3/8 rule: both have local errors O(dt^5), and from these off-attractor
    # states (large tendencies) they differ by up to 1.6e-4 relative in one step.
    op = ForecastOperator(Lorenz96(40), method=method, substeps=1, device="cpu")
    E = ensemble()
    out = op.step(E, 0.0, 0.05)
    assert out.shape == (24, 40) and out.dtype == np.float64
    np.testing.assert_allclose(out, l96_rk4_numpy(E, 0.05), rtol=rtol, atol=0)
    single = op.step(E[3], 1.5, 0.05)
    assert single.shape == (40,) and single.dtype == np.float64
    np.testing.assert_allclose(single, out[3], rtol=1e-14)


def test_step_input_kinds_and_dtypes() -> None:
    op = ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1, device="cpu")
    E = ensemble(5)
    reference = op.step(E, 0.0, 0.05)
    for variant in (E.astype(np.float32), torch.as_tensor(E), E.tolist()):
        out = op.step(variant, 0.0, 0.05)
        assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (5, 40)
    np.testing.assert_allclose(op.step(E.astype(np.float32), 0.0, 0.05), reference, rtol=1e-5)
    float32 = ForecastOperator(
        Lorenz96(40), method="rk4_classic", substeps=1, dtype=torch.float32, device="cpu"
    )
    out32 = float32.step(E, 0.0, 0.05)
    assert out32.dtype == np.float64
    np.testing.assert_allclose(out32, reference, rtol=1e-4)
    assert op.step(E, 0.0, 0.05) is not E  # never in place
    np.testing.assert_array_equal(E, ensemble(5))


def test_substeps_follow_the_stability_limit_and_match_the_exact_solution() -> None:
    decay = Decay(rate=10.0)  # stable_dt = 0.2785
    op = ForecastOperator(decay, device="cpu")
    assert op.solver_steps(1.0) == 4  # fewest steps of size <= 0.2785
    x = np.array([[1.0, -2.0, 0.5]])
    out = op.step(x, 0.0, 1.0)
    # RK4 amplification factor per step of h: 1 - z + z^2/2 - z^3/6 + z^4/24, z = rate h
    z = 10.0 * 0.25
    factor = (1 - z + z**2 / 2 - z**3 / 6 + z**4 / 24) ** 4
    np.testing.assert_allclose(out, x * factor, rtol=1e-12)
    fine = ForecastOperator(decay, max_step=0.01, device="cpu")
    assert fine.solver_steps(1.0) == 100
    z = 10.0 * 0.01
    factor = (1 - z + z**2 / 2 - z**3 / 6 + z**4 / 24) ** 100
    np.testing.assert_allclose(fine.step(x, 0.0, 1.0), x * factor, rtol=1e-12)
    np.testing.assert_allclose(factor, math.exp(-10.0), rtol=2e-5)  # 4th order: ~ t z^4 / 120
    fixed = ForecastOperator(decay, substeps=2, device="cpu")
    with pytest.raises(ValueError, match=r"dt=1 .*stability limit"):
        fixed.step(x, 0.0, 1.0)
    with pytest.raises(ValueError, match="max_step"):
        ForecastOperator(decay, max_step=0.5, device="cpu")


def test_a_long_lorenz96_step_by_default_matches_a_resolved_reference() -> None:
    integrate = pytest.importorskip("scipy.integrate")

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        return (np.roll(y, -1) - np.roll(y, 2)) * np.roll(y, 1) - y + 8.0

    x = integrate.solve_ivp(rhs, (0, 10), ensemble(1)[0], rtol=1e-12, atol=1e-12).y[:, -1]
    E = x + 0.5 * np.random.default_rng(1).standard_normal((8, 40))  # on the attractor
    reference = np.stack(
        [
            integrate.solve_ivp(rhs, (0, 0.5), e, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
            for e in E
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lorenz96 declares its accuracy step: no warning
        default = ForecastOperator(Lorenz96(40), device="cpu")
    assert default.step_limit == Lorenz96(40).accurate_dt("rk4") == 0.01
    assert ForecastOperator(Lorenz63(), device="cpu").step_limit == 0.01
    error = np.abs(default.step(E, 0.0, 0.5) - reference).max()
    assert error < 1e-4  # measured 1.9e-5 with 50 RK4 steps of 0.01
    one_step = ForecastOperator(Lorenz96(40), substeps=1, device="cpu")
    assert np.abs(one_step.step(E, 0.0, 0.5) - reference).max() > 100  # what it used to do


def test_a_dynamics_without_a_limit_warns_once_and_takes_safe_steps() -> None:
    class Drift(Dynamics):
        state_shape = (2,)

        def forward(self, t: Tensor, state: Tensor) -> Tensor:
            return -state

    with pytest.warns(UserWarning, match=r"Drift declares no step limit.*at most 0\.01"):
        op = ForecastOperator(Drift(), device="cpu")
    assert op.step_limit == DEFAULT_MAX_STEP == 0.01 and op.solver_steps(0.5) == 50
    x = np.array([[1.0, -2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning from the steps
        np.testing.assert_allclose(op.step(x, 0.0, 0.5), x * math.exp(-0.5), rtol=1e-9)
        op.step(x, 0.5, 0.5)
        # an explicit choice, a declared limit or an adaptive method: no warning
        assert ForecastOperator(Drift(), max_step=0.1, device="cpu").solver_steps(0.5) == 5
        assert ForecastOperator(Drift(), substeps=2, device="cpu").solver_steps(0.5) == 2
        ForecastOperator(Drift(), method="dopri5", device="cpu")
        ForecastOperator(Decay(), device="cpu")
    plain = torch.nn.Linear(3, 3)  # not even a Dynamics: no stable_dt at all
    with pytest.warns(UserWarning, match=r"stable_dt\('rk4'\) is missing"):
        ForecastOperator(plain, state_dim=3, device="cpu")


def test_adaptive_method_is_accurate() -> None:
    op = ForecastOperator(Decay(rate=1.0), method="dopri5", device="cpu")
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(op.step(x, 0.0, 2.0), x * math.exp(-2.0), rtol=1e-6)


def test_stochastic_step_draws_from_the_model_error_predictive() -> None:
    sigma, bias = 0.3, 0.1

    def model_error(state: Tensor, forecast: Tensor, dt: float) -> Normal:
        return Normal(torch.full_like(forecast, bias), torch.full_like(forecast, sigma))

    deterministic = ForecastOperator(Lorenz96(40), device="cpu")
    stochastic = ForecastOperator(Lorenz96(40), model_error=model_error, seed=1, device="cpu")
    assert stochastic.stochastic and not deterministic.stochastic
    E = ensemble(500)
    errors = stochastic.step(E, 0.0, 0.05) - deterministic.step(E, 0.0, 0.05)
    # 20000 draws: standard errors 0.3 / sqrt(20000) = 0.0021 (mean), 0.0015 (std)
    assert abs(errors.mean() - bias) < 0.01
    assert abs(errors.std() - sigma) < 0.008
    first = ForecastOperator(Lorenz96(40), model_error=model_error, seed=7, device="cpu")
    second = ForecastOperator(Lorenz96(40), model_error=model_error, seed=7, device="cpu")
    np.testing.assert_array_equal(first.step(E, 0.0, 0.05), second.step(E, 0.0, 0.05))


def test_model_error_from_the_dynamics_and_bad_model_errors() -> None:
    class Noisy(Lorenz96):
        def model_error(self, state: Tensor, forecast: Tensor, dt: float) -> Normal:
            return Normal(torch.zeros_like(forecast), torch.full_like(forecast, 0.5))

    op = ForecastOperator(Noisy(40), model_error="dynamics", seed=0, device="cpu")
    spread = op.step(ensemble(200), 0.0, 0.05) - ForecastOperator(Lorenz96(40), device="cpu").step(
        ensemble(200), 0.0, 0.05
    )
    assert abs(spread.std() - 0.5) < 0.02
    with pytest.raises(ValueError, match="model_error='dynamics'"):
        ForecastOperator(Lorenz96(40), model_error="dynamics", device="cpu")
    wrong_shape = ForecastOperator(
        Lorenz96(40),
        model_error=lambda s, f, dt: Normal(torch.zeros(3), torch.ones(3)),
        device="cpu",
    )
    with pytest.raises(ValueError, match="batch_shape"):
        wrong_shape.step(ensemble(4), 0.0, 0.05)
    wrong_type = ForecastOperator(
        Lorenz96(40), model_error=lambda s, f, dt: torch.zeros_like(f), device="cpu"
    )
    with pytest.raises(TypeError, match="Predictive"):
        wrong_type.step(ensemble(4), 0.0, 0.05)


def test_jacobian_matches_finite_differences() -> None:
    op = ForecastOperator(Lorenz96(12), method="rk4_classic", substeps=1, device="cpu")
    x = ensemble(1, 12, seed=3)[0]
    jac = op.jacobian(x, 0.0, 0.05)
    assert jac.shape == (12, 12)
    eps = 1e-6
    columns = [
        (l96_rk4_numpy(x + eps * e, 0.05) - l96_rk4_numpy(x - eps * e, 0.05)) / (2 * eps)
        for e in np.eye(12)
    ]
    np.testing.assert_allclose(jac, np.stack(columns, axis=1), atol=1e-7)


def test_the_callers_module_is_not_changed() -> None:
    system = Lorenz96(40)
    ForecastOperator(system, dtype=torch.float64, device="cpu")
    assert system.forcing.dtype == torch.float32 and system.training


# ---------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def l96_operator() -> ForecastOperator:
    return ForecastOperator(Lorenz96(40), device="cpu")


def test_wrong_state_size_is_rejected(l96_operator: ForecastOperator) -> None:
    with pytest.raises(ValueError, match=r"E has shape \(24, 39\).*Nx = 40"):
        l96_operator.step(ensemble(24, 39), 0.0, 0.05)
    with pytest.raises(ValueError, match=r"E has shape \(2, 3, 40\)"):
        l96_operator.step(np.zeros((2, 3, 40)), 0.0, 0.05)
    with pytest.raises(ValueError, match=r"E has shape \(0, 40\)"):
        l96_operator.step(np.zeros((0, 40)), 0.0, 0.05)
    with pytest.raises(TypeError, match="E has dtype"):
        l96_operator.step(np.array(["a"] * 40), 0.0, 0.05)


def test_non_finite_members_are_named(l96_operator: ForecastOperator) -> None:
    E = ensemble()
    E[5, 3] = np.nan
    E[17, 0] = np.inf
    with pytest.raises(ValueError, match=r"members \[5, 17\] of 24"):
        l96_operator.step(E, 0.0, 0.05)
    with pytest.raises(ValueError, match=r"state components \[3\]"):
        l96_operator.step(E[5], 0.0, 0.05)


@pytest.mark.parametrize("dt", [0.0, -0.05, float("nan"), float("inf")])
def test_bad_time_steps_are_rejected(l96_operator: ForecastOperator, dt: float) -> None:
    with pytest.raises(ValueError, match="dt="):
        l96_operator.step(ensemble(), 0.0, dt)


def test_bad_arguments_are_rejected(l96_operator: ForecastOperator) -> None:
    with pytest.raises(TypeError, match="dt="):
        l96_operator.step(ensemble(), 0.0, "0.05")
    with pytest.raises(ValueError, match="t="):
        l96_operator.step(ensemble(), float("nan"), 0.05)
    with pytest.raises(TypeError, match="dynamics"):
        ForecastOperator(lambda t, x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method="):
        ForecastOperator(Lorenz96(40), method="rk5")
    with pytest.raises(ValueError, match="substeps="):
        ForecastOperator(Lorenz96(40), substeps=0)
    with pytest.raises(ValueError, match="state_dim="):
        ForecastOperator(Lorenz96(40), state_dim=39)
    with pytest.raises(ValueError, match="state_dim=None"):
        ForecastOperator(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="model_error="):
        ForecastOperator(Lorenz96(40), model_error="normal")
    with pytest.raises(ValueError, match="device="):
        ForecastOperator(Lorenz96(40), device="tpu:x")


def test_a_forecast_that_blows_up_raises_instead_of_returning_nan() -> None:
    op = ForecastOperator(Blowup(), method="rk4_classic", substeps=4, device="cpu")
    with pytest.raises(ValueError, match=r"non-finite in members \[0\]"):
        op.step(np.array([[10.0, 0.1], [0.1, 0.1]]), 0.0, 5.0)
    through_simulate = ForecastOperator(Blowup(), method="rk4", substeps=4, device="cpu")
    with pytest.raises(ValueError, match="forecast from t=0 over dt=5 failed"):
        through_simulate.step(np.array([[10.0, 0.1]]), 0.0, 5.0)


# ---------------------------------------------------------------------------- DAPPER


def _sakov_hmm(cycles: int):
    modelling = pytest.importorskip("dapper.mods")
    pytest.importorskip("dapper.da_methods.ensemble")
    import dapper.tools.progressbar as progressbar
    from dapper.mods.Lorenz96.sakov2008 import HMM

    progressbar.disable_progbar = True
    hmm = HMM.copy()
    hmm.tseq = modelling.Chronology(0.05, dko=1, Ko=cycles, BurnIn=0.5)
    return hmm


def _enkf_rmse(hmm, xx, yy, seed: int = 4) -> tuple[float, float]:
    from dapper.da_methods.ensemble import EnKF
    from dapper.tools.seeding import set_seed

    xp = EnKF("Sqrt", N=24, infl=1.013, rot=True)
    set_seed(seed)
    xp.assimilate(hmm, xx, yy, liveplots=False)
    xp.stats.average_in_time()
    return float(xp.avrgs.err.rms.a.val), float(xp.avrgs.spread.rms.a.val)


def test_dapper_enkf_through_uqdyn_matches_dapper_own_model() -> None:
    hmm = _sakov_hmm(60)
    from dapper.mods import Operator
    from dapper.tools.seeding import set_seed

    set_seed(3)
    xx, yy = hmm.simulate()
    reference = _enkf_rmse(hmm, xx, yy)
    assert 0.05 < reference[0] < 0.5  # the filter tracks the truth (documented ~0.18)

    classic = hmm.copy()
    classic.Dyn = Operator(
        **to_dapper(ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1))
    )
    # Same scheme, float64, same random draws: equal up to round-off (amplified by chaos but
    # damped by the analyses over 60 cycles).
    np.testing.assert_allclose(_enkf_rmse(classic, xx, yy), reference, rtol=1e-8)

    three_eighths = hmm.copy()
    three_eighths.Dyn = Operator(
        **to_dapper(ForecastOperator(Lorenz96(40), method="rk4", substeps=1))
    )
    # torchdiffeq's 3/8-rule RK4 differs from classical RK4 by ~1e-6 per step; the filter
    # keeps that difference far below the 0.18 analysis error (measured ~1e-4 relative).
    np.testing.assert_allclose(_enkf_rmse(three_eighths, xx, yy), reference, rtol=2e-3)


def test_to_dapper_mapping_and_hmm_simulation() -> None:
    modelling = pytest.importorskip("dapper.mods")
    op = ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1)
    dyn = to_dapper(op, linear=True)
    assert dyn["M"] == 40 and dyn["noise"] == 0 and callable(dyn["linear"])
    operator = modelling.Operator(**dyn)
    x = ensemble(1)[0]
    np.testing.assert_allclose(operator(x, 0.0, 0.05), l96_rk4_numpy(x, 0.05), rtol=1e-13)
    assert operator.linear(x, 0.0, 0.05).shape == (40, 40)
    dyn = to_dapper(op, noise=np.full(40, 0.01))
    assert modelling.Operator(**dyn).noise.C.diag.shape == (40,)
    with pytest.raises(ValueError, match="noise has shape"):
        to_dapper(op, noise=np.zeros(39))
    with pytest.raises(ValueError, match="noise="):
        to_dapper(op, noise=-1.0)
    with pytest.raises(TypeError, match="noise is a str"):
        to_dapper(op, noise="big")
    with pytest.raises(TypeError, match="ForecastOperator"):
        to_dapper(Lorenz96(40))  # type: ignore[arg-type]


def test_uqdyn_observation_operator_as_dapper_obs_matches_dapper_partial_obs() -> None:
    hmm = _sakov_hmm(40)
    from dapper.mods import TimeDependentOperator, partial_Id_Obs
    from dapper.tools.seeding import set_seed

    stations = torch.arange(0, 40, 2)
    observation = realize_observation(
        Compose(StationSubsample(locations=stations), GaussianNoise(sigma=1.0)), 40
    )
    np.testing.assert_array_equal(observation.indices, stations.numpy())
    np.testing.assert_array_equal(observation.R, np.ones(20))
    ours = hmm.copy()
    ours.Obs = TimeDependentOperator(**observation.to_dapper(localization_batch=2))
    theirs = hmm.copy()
    obs = partial_Id_Obs(40, stations.numpy())
    obs["noise"] = 1
    theirs.Obs = TimeDependentOperator(**obs)
    set_seed(3)
    xx, yy = theirs.simulate()
    set_seed(3)
    xx2, yy2 = ours.simulate()
    np.testing.assert_allclose(np.stack(yy2), np.stack(yy), rtol=1e-12)
    np.testing.assert_allclose(_enkf_rmse(ours, xx, yy), _enkf_rmse(theirs, xx, yy), rtol=1e-10)
    assert ours.Obs(0).localizer is not None


def test_realized_observation_operators() -> None:
    generator = torch.Generator().manual_seed(0)
    masked = realize_observation(
        Compose(RandomPixelMask(drop=0.5), GaussianNoise(sigma=0.5)), 40, generator=generator
    )
    assert 0 < masked.Ny < 40 and masked.indices is not None
    x = ensemble(3)
    np.testing.assert_array_equal(masked(x), x[:, masked.indices])
    np.testing.assert_array_equal(masked.hx(x[0]), x[0, masked.indices])
    np.testing.assert_allclose(masked.R, 0.25)
    noise = masked.sample(np.zeros((4000, 40)), np.random.default_rng(0))
    assert abs(noise.std() - 0.5) < 0.01
    override = realize_observation(StationSubsample(locations=torch.arange(3)), 40, noise_std=0.2)
    np.testing.assert_allclose(override.R, 0.04)
    averaging = LinearObservation(H=np.full((1, 40), 1 / 40), R=np.ones(1), indices=None)
    np.testing.assert_allclose(averaging(x), x.mean(axis=1, keepdims=True))
    with pytest.raises(ValueError, match="adds no noise"):
        realize_observation(StationSubsample(locations=torch.arange(3)), 40)
    with pytest.raises(ValueError, match="localization_batch needs"):
        averaging.to_dapper(localization_batch=2)
    with pytest.raises(ValueError, match=r"x has shape \(39,\)"):
        masked(np.zeros(39))
    with pytest.raises(TypeError, match="ObservationOperator"):
        realize_observation(lambda x: x, 40)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_std="):
        realize_observation(StationSubsample(locations=torch.arange(3)), 40, noise_std=0.0)
    with pytest.raises(ValueError, match="Blur needs gridded"):  # vector states only
        realize_observation(Blur(sigma=1.0), 40, noise_std=0.1)


# ---------------------------------------------------------------------------- filterpy


def test_filterpy_enkf_with_uqdyn_fx_matches_a_numpy_fx() -> None:
    kalman = pytest.importorskip("filterpy.kalman")
    observation = realize_observation(
        Compose(StationSubsample(locations=torch.arange(0, 40, 2)), GaussianNoise(sigma=1.0)), 40
    )
    fx_uqdyn = to_filterpy(
        ForecastOperator(Lorenz96(40), method="rk4_classic", substeps=1, device="cpu")
    )
    assert fx_uqdyn(ensemble(2), 0.05).shape == (2, 40)

    rng = np.random.default_rng(1)
    truth = ensemble(1, seed=2)[0]
    for _ in range(200):  # onto the attractor
        truth = l96_rk4_numpy(truth, 0.05)
    start = truth + rng.standard_normal(40)
    observations = []
    for _ in range(15):
        truth = l96_rk4_numpy(truth, 0.05)
        observations.append(observation.sample(truth, rng))

    def run(fx) -> tuple[np.ndarray, np.ndarray]:
        np.random.seed(5)  # noqa: NPY002 - filterpy draws its perturbations from numpy's global RNG
        kf = kalman.EnsembleKalmanFilter(
            x=start, P=np.eye(40), dim_z=20, dt=0.05, N=30, hx=observation.hx, fx=fx
        )
        kf.R = np.diag(observation.R)
        kf.Q = np.eye(40) * 1e-4
        for z in observations:
            kf.predict()
            kf.update(z)
        return kf.x.copy(), kf.sigmas.copy()

    x_ours, sigmas_ours = run(fx_uqdyn)
    x_ref, sigmas_ref = run(lambda x, dt: l96_rk4_numpy(x, dt))
    np.testing.assert_allclose(sigmas_ours, sigmas_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x_ours, x_ref, rtol=1e-9, atol=1e-9)
    free = start
    for _ in observations:
        free = l96_rk4_numpy(free, 0.05)
    rmse_free = np.sqrt(np.mean((free - truth) ** 2))
    rmse = np.sqrt(np.mean((x_ours - truth) ** 2))
    print("FILTERPY_RMSE", rmse, rmse_free)
    assert rmse < 0.5 * rmse_free  # assimilation beats the free forecast from the same start
    with pytest.raises(ValueError, match="t0="):
        to_filterpy(ForecastOperator(Lorenz96(40), device="cpu"), t0=float("nan"))


# ---------------------------------------------------------------------------- devices


def test_cpu_and_device_agree(device: torch.device) -> None:
    E = ensemble()

    def model_error(state: Tensor, forecast: Tensor, dt: float) -> Normal:
        return Normal(torch.zeros_like(forecast), torch.full_like(forecast, 0.1))

    cpu = ForecastOperator(Lorenz96(40), device="cpu")
    other = ForecastOperator(Lorenz96(40), device=device)
    assert other.device.type == device.type
    np.testing.assert_allclose(other.step(E, 0.0, 0.05), cpu.step(E, 0.0, 0.05), rtol=1e-12)
    stochastic = ForecastOperator(Lorenz96(40), model_error=model_error, seed=0, device=device)
    errors = stochastic.step(ensemble(400), 0.0, 0.05) - cpu.step(ensemble(400), 0.0, 0.05)
    assert np.isfinite(errors).all() and abs(errors.std() - 0.1) < 0.005
