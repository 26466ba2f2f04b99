"""NumPy scalars, 0-d arrays and 0-d tensors are accepted wherever a Python number is; bad
types are refused with messages that name the argument and the received type; physical
parameters are built in the requested dtype."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uqdyn._checks import as_float, as_int, describe_type
from uqdyn.data import observe_dataset, simulate_dataset
from uqdyn.observe import (
    BlockMask,
    CloudMask,
    Compose,
    GaussianNoise,
    RandomPixelMask,
    StationSubsample,
)
from uqdyn.physics import (
    AdvectionDiffusion,
    DampedPendulum,
    FitzHughNagumo,
    GrayScott,
    KuramotoSivashinsky,
    Lorenz63,
    Lorenz96,
    LotkaVolterra,
    NavierStokes,
    ShallowWater,
    simulate,
    warp,
)
from uqdyn.train._setup import check_float, check_int

F64 = torch.float64

INT_WRAPPERS = {
    "np.int64": np.int64,
    "np.int32": np.int32,
    "np.array": np.array,
    "torch.tensor": torch.tensor,
}
FLOAT_WRAPPERS = {
    "np.float32": np.float32,
    "np.float64": np.float64,
    "np.array": np.array,
    "torch.tensor": torch.tensor,
    "torch.tensor64": lambda v: torch.tensor(v, dtype=F64),
}


# --------------------------------------------------------------------------- the checkers
@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_as_int_accepts_integer_scalars(wrap):
    value = as_int(wrap(7), "n", minimum=1)
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_as_float_accepts_real_scalars(wrap):
    value = as_float(wrap(0.25), "x", positive=True)
    assert value == 0.25 and type(value) is float
    assert as_float(wrap(3), "x") == 3.0  # integers are real numbers too


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "n=True is a bool; expected an int"),
        (np.bool_(True), "is a numpy.bool"),
        (3.0, "n=3.0 is a float; expected an int"),
        (np.float64(3.0), "is a numpy.float64; expected an int"),
        (np.array(3.0), r"is a numpy.ndarray of shape \(\) and dtype float64; expected an int"),
        (np.array([1, 2, 3]), r"is a numpy.ndarray of shape \(3,\) and dtype int64"),
        (torch.tensor([1, 2]), r"is a torch.Tensor of shape \(2,\) and dtype int64"),
        (torch.tensor(True), r"torch.Tensor of shape \(\) and dtype bool"),
        ("3", "n='3' is a str; expected an int"),
        (None, "n=None is a NoneType; expected an int"),
    ],
)
def test_as_int_refuses_non_integers_naming_the_type(value, message):
    with pytest.raises(TypeError, match=message):
        as_int(value, "n")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (False, "x=False is a bool; expected a finite float"),
        ("0.5", "x='0.5' is a str; expected a finite float"),
        (1j, "x=1j is a complex"),
        (np.array([0.5, 0.6]), r"numpy.ndarray of shape \(2,\) and dtype float64"),
        (torch.tensor([0.5]), r"torch.Tensor of shape \(1,\) and dtype float32"),
        ([0.5], "x=\\[0.5\\] is a list"),
    ],
)
def test_as_float_refuses_non_reals_naming_the_type(value, message):
    with pytest.raises(TypeError, match=message):
        as_float(value, "x")


def test_range_errors_are_value_errors():
    with pytest.raises(ValueError, match=r"n=np.int64\(0\); expected an int >= 1"):
        as_int(np.int64(0), "n", minimum=1)
    with pytest.raises(ValueError, match="n=9; expected an int >= 1 and <= 8"):
        as_int(9, "n", minimum=1, maximum=8)
    with pytest.raises(ValueError, match="x=-1.0; expected a finite float > 0"):
        as_float(-1.0, "x", positive=True)
    with pytest.raises(ValueError, match="expected a finite float >= 0"):
        as_float(np.float32(-0.5), "x", nonnegative=True)
    with pytest.raises(ValueError, match="x=nan; expected a finite float"):
        as_float(math.nan, "x")
    assert as_float(math.inf, "x", finite=False, positive=True) == math.inf
    assert describe_type(torch.zeros(2, 3, dtype=F64)) == (
        "torch.Tensor of shape (2, 3) and dtype float64"
    )


# --------------------------------------------------------------------------- physics
@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_physics_accepts_integer_scalars(wrap):
    assert Lorenz96(dim=wrap(12)).state_shape == (12,)
    assert KuramotoSivashinsky(n=wrap(32)).state_shape == (32,)
    grid = AdvectionDiffusion(size=(wrap(8), wrap(10)))
    assert grid.size == (8, 10) and type(grid.size[0]) is int
    state = DampedPendulum().initial_state(wrap(3), generator=torch.Generator().manual_seed(0))
    assert state.shape == (3, 2)


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_physics_accepts_real_scalars(wrap):
    value = float(wrap(0.3))  # the number the wrapper really holds (np.float32 rounds)
    pendulum = DampedPendulum(omega0=wrap(1.3), alpha=wrap(0.3), dtype=F64)
    assert float(pendulum.alpha.detach()) == value
    assert float(Lorenz96(forcing=wrap(8.0)).forcing.detach()) == 8.0
    system = AdvectionDiffusion((8, 8), length=wrap(2.0), velocity=(wrap(1.0), wrap(0.5)))
    assert system.length == (2.0, 2.0)
    assert KuramotoSivashinsky(length=wrap(22.0)).length == float(wrap(22.0))
    # simulate: step size and tolerances
    state0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    times = torch.tensor([0.0, 0.6], dtype=F64)
    step = float(wrap(0.05))
    expected = simulate(pendulum, state0, times, step_size=step)
    got = simulate(pendulum, state0, times, step_size=wrap(0.05))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    simulate(pendulum, state0, times, "dopri5", rtol=wrap(1e-6), atol=wrap(1e-8))
    # warp: time step
    field = torch.rand(1, 1, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    velocity = torch.full((1, 2, 6, 6), 0.5, dtype=F64)
    torch.testing.assert_close(
        warp(field, velocity, 0.1, dt=wrap(0.5)), warp(field, velocity, 0.1, dt=float(wrap(0.5)))
    )


def test_physics_refuses_bad_number_types():
    with pytest.raises(TypeError, match="dim=40.0 is a float; expected an int >= 4"):
        Lorenz96(dim=40.0)
    with pytest.raises(TypeError, match=r"size\[1\]=np.float64\(8.0\) is a numpy.float64"):
        AdvectionDiffusion(size=(8, np.float64(8.0)))
    with pytest.raises(TypeError, match=r"batch=array\(\[1, 2\]\) is a numpy.ndarray of shape"):
        DampedPendulum().initial_state(np.array([1, 2]))
    with pytest.raises(TypeError, match="step_size='0.1' is a str; expected a finite float > 0"):
        simulate(DampedPendulum(), torch.zeros(1, 2), [0.0, 1.0], step_size="0.1")
    with pytest.raises(TypeError, match=r"forcing=True is a bool; expected a float or a tensor"):
        Lorenz96(forcing=True)
    with pytest.raises(TypeError, match="forcing is a torch.Tensor of shape .* dtype bool"):
        Lorenz96(forcing=torch.tensor(True))


# --------------------------------------------------------------------------- observe
@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_observation_operators_accept_real_scalars(wrap):
    state = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = GaussianNoise(sigma=wrap(0.5))
    assert noise.sigma == (float(wrap(0.5)),) * 2
    a = noise(state, generator=torch.Generator().manual_seed(1))
    b = GaussianNoise(sigma=float(wrap(0.5)))(state, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
    assert RandomPixelMask(drop=wrap(0.5)).drop == (0.5, 0.5)
    cloud = CloudMask(cover=(wrap(0.25), wrap(0.5)), length_scale=wrap(0.1))
    assert cloud.cover == (0.25, 0.5)


@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_observation_operators_accept_integer_scalars(wrap):
    assert StationSubsample(n_stations=wrap(3)).n_stations == 3
    assert BlockMask(n_blocks=wrap(2)).n_blocks == (2, 2)
    assert BlockMask(n_blocks=(wrap(1), wrap(3))).n_blocks == (1, 3)
    stations = StationSubsample.random_network(wrap(4), (5, 6))
    assert stations.shape == (4, 2)


def test_observation_operators_refuse_bad_number_types():
    with pytest.raises(TypeError, match="sigma='0.1' is a str; expected a number or a"):
        GaussianNoise(sigma="0.1")
    with pytest.raises(TypeError, match=r"sigma=array\(\[0.1, 0.2, 0.3\]\) is a numpy.ndarray"):
        GaussianNoise(sigma=np.array([0.1, 0.2, 0.3]))
    with pytest.raises(TypeError, match="drop=True is a bool"):
        RandomPixelMask(drop=True)
    with pytest.raises(TypeError, match="n_stations=3.0 is a float; expected an int >= 1"):
        StationSubsample(n_stations=3.0)
    with pytest.raises(TypeError, match=r"n_blocks\[1\]=2.5 is a float; expected an int >= 0"):
        BlockMask(n_blocks=(1, 2.5))
    with pytest.raises(ValueError, match="n_blocks=\\(3, 1\\); expected low <= high"):
        BlockMask(n_blocks=(3, 1))


# --------------------------------------------------------------------------- data.simulate
@pytest.mark.parametrize("wrap", ["np", "array", "tensor"])
def test_simulate_dataset_accepts_numpy_and_torch_scalars(wrap):
    as_i = {"np": np.int64, "array": np.array, "tensor": torch.tensor}[wrap]
    as_f = {"np": np.float64, "array": np.array, "tensor": lambda v: torch.tensor(v, dtype=F64)}[
        wrap
    ]
    times = np.linspace(0.0, 1.0, 6)
    ranges = {"omega0": (1.0, 2.0)}
    plain = simulate_dataset(
        "damped_pendulum", 3, times, ranges, seed=4, batch_size=2, step_size=0.05, device="cpu"
    )
    wrapped = simulate_dataset(
        "damped_pendulum",
        as_i(3),
        times,
        ranges,
        seed=as_i(4),
        batch_size=as_i(2),
        step_size=as_f(0.05),
        device="cpu",
    )
    np.testing.assert_array_equal(wrapped["state"].values, plain["state"].values)
    assert wrapped.attrs["step_size"] == 0.05 and wrapped.attrs["seed"] == 4
    operator = Compose(RandomPixelMask(drop=as_f(0.5)), GaussianNoise(as_f(0.1)))
    a = observe_dataset(plain, operator, seed=as_i(2))
    b = observe_dataset(plain, operator, seed=2)
    np.testing.assert_array_equal(a["state_obs"].values, b["state_obs"].values)


def test_simulate_dataset_refuses_bad_number_types():
    with pytest.raises(TypeError, match="n_samples=2.0 is a float; expected an int >= 1"):
        simulate_dataset("damped_pendulum", 2.0, [0.0, 1.0], device="cpu")
    with pytest.raises(TypeError, match="seed='1' is a str; expected an int"):
        simulate_dataset("damped_pendulum", 2, [0.0, 1.0], seed="1", device="cpu")
    with pytest.raises(ValueError, match="step_size=-0.1; expected a finite float > 0"):
        simulate_dataset("damped_pendulum", 2, [0.0, 1.0], step_size=-0.1, device="cpu")
    with pytest.raises(TypeError, match=r"batch_size=array\(\[1, 2\]\) is a numpy.ndarray"):
        simulate_dataset("damped_pendulum", 2, [0.0, 1.0], batch_size=np.array([1, 2]))


# --------------------------------------------------------------------------- train
def test_fit_argument_checks_accept_numpy_scalars():
    assert check_int(np.int64(5), "steps", 1) == 5
    assert check_int(torch.tensor(5), "steps", 1) == 5
    assert check_float(np.float32(0.5), "lr", positive=True) == 0.5
    assert check_float(np.array(0.0), "weight_decay", positive=False) == 0.0
    assert check_float(None, "grad_clip", positive=True, optional=True) is None
    with pytest.raises(TypeError, match="steps=2.5 is a float; expected an int >= 1"):
        check_int(2.5, "steps", 1)
    with pytest.raises(TypeError, match="expected an int >= 1 or None"):
        check_int("3", "early_stopping", 1, optional=True)
    with pytest.raises(ValueError, match="lr=0.0; expected a finite float > 0"):
        check_float(0.0, "lr", positive=True)


# --------------------------------------------------------------------------- dtypes
# Values that float32 cannot hold exactly; every parameter of every system.
SYSTEMS = [
    (Lorenz96, {"dim": 8, "forcing": 8.1}),
    (Lorenz63, {"sigma": 10.1, "rho": 28.3, "beta": 8.0 / 3.0}),
    (LotkaVolterra, {"alpha": 1.1, "beta": 0.3, "delta": 0.7, "gamma": 1.9}),
    (DampedPendulum, {"omega0": 1.3, "alpha": 0.1}),
    (AdvectionDiffusion, {"size": (8, 8), "diffusion": 0.011, "velocity": (0.3, -0.7)}),
    (FitzHughNagumo, {"size": (8, 8), "a": 1.1e-3, "b": 5.1e-3, "k": 4.9e-3}),
    (
        GrayScott,
        {
            "size": (8, 8),
            "diffusion_u": 2.1e-5,
            "diffusion_v": 1.1e-5,
            "feed": 0.037,
            "kill": 0.061,
        },
    ),
    (ShallowWater, {"size": (8, 8), "coriolis": 0.7, "gravity": 9.81, "mean_depth": 1.3}),
    (NavierStokes, {"size": (8, 8), "viscosity": 1.1e-3, "forcing_amplitude": 0.13}),
]


@pytest.mark.parametrize(("cls", "kwargs"), SYSTEMS, ids=[c.__name__ for c, _ in SYSTEMS])
def test_physical_parameters_are_built_in_the_requested_dtype(cls, kwargs):
    system = cls(**kwargs, dtype=F64)
    assert all(p.dtype == F64 for p in system.parameters())
    for name in system.parameter_names:
        value = torch.as_tensor(kwargs[name], dtype=F64)
        stored = getattr(system, name).detach()
        raw = getattr(system, f"raw_{name}", None)
        if raw is None:  # unconstrained: stored exactly
            assert torch.equal(stored, value), (name, stored, value)
        else:  # positive: the logarithm taken in float64, exp within round-off
            assert torch.equal(raw.detach(), value.log()), name
            torch.testing.assert_close(stored, value, rtol=1e-15, atol=0)
    # the float32 default is unchanged
    assert all(p.dtype == torch.float32 for p in cls(**kwargs).parameters())


def test_lorenz96_forcing_is_exactly_8_1_in_float64():
    assert Lorenz96(forcing=8.1, dtype=F64).forcing.item() == 8.1
    assert Lorenz96(forcing=np.float64(8.1), dtype=F64).forcing.item() == 8.1
    assert Lorenz96(forcing=[8.1, 7.9], dtype=F64).forcing.tolist() == [8.1, 7.9]
    assert Lorenz96(forcing=np.array([8.1, 7.9]), dtype=F64).forcing.tolist() == [8.1, 7.9]
    # a float32 tensor asked to become float64 keeps its float32 value (nothing to recover)
    assert Lorenz96(forcing=torch.tensor(8.1), dtype=F64).forcing.dtype == F64
    # the old path (build in float32, then cast) rounds: the reason for dtype=
    assert abs(Lorenz96(forcing=8.1).double().forcing.item() - 8.1) > 1e-7
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # the default dtype is the requested one when dtype=None
    try:
        assert Lorenz96(forcing=8.1).forcing.item() == 8.1
    finally:
        torch.set_default_dtype(previous)


def test_shallow_water_default_forcing_follows_the_dtype():
    system = ShallowWater((8, 8), dtype=F64)
    assert system.forcing.raw_drag.dtype == F64
    assert torch.equal(system.forcing.raw_drag.detach(), torch.tensor(0.01, dtype=F64).log())


def test_simulate_dataset_builds_fixed_settings_in_the_dataset_dtype():
    built = []

    class Recorded(Lorenz96):
        def __init__(self, dim=40, *, forcing=8.0, dtype=None):
            super().__init__(dim, forcing=forcing, dtype=dtype)
            built.append(self)

    simulate_dataset(
        Recorded,
        2,
        [0.0, 0.05],
        {"forcing": (7.9, 8.1)},
        system_kwargs={"dim": 6},
        dtype=F64,
        device="cpu",
    )
    assert built and all(s.forcing.dtype == F64 for s in built)
    fixed = []

    class Fixed(Lorenz96):
        def __init__(self, dim=40, *, forcing=8.0, dtype=None):
            super().__init__(dim, forcing=forcing, dtype=dtype)
            fixed.append(self)

    simulate_dataset(
        Fixed, 1, [0.0, 0.05], system_kwargs={"dim": 6, "forcing": 8.1}, dtype=F64, device="cpu"
    )
    assert fixed[-1].forcing.item() == 8.1


# --------------------------------------------------------------------------- the rest of the
# library: each wrapped call must give exactly what the same call with Python numbers gives.
def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, equal_nan=True, msg=key)


def _normal(n: int = 200, seed: int = 0):
    from uqdyn.predictive import Normal

    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, generator=g, dtype=F64)
    y = loc + 2.0 * torch.randn(n, generator=g, dtype=F64)
    return y, Normal(loc, torch.ones(n, dtype=F64))


@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_predictive_and_scoring_accept_integer_scalars(wrap):
    from uqdyn.predictive import Ensemble
    from uqdyn.scoring import contingency_scores, crps_ensemble, variogram_score

    _, normal = _normal(5)
    draws = normal.sample(wrap(3), generator=torch.Generator().manual_seed(1))
    plain = normal.sample(3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws, plain, rtol=0, atol=0)
    ensemble = Ensemble(plain)
    assert ensemble.sample(wrap(2), generator=torch.Generator().manual_seed(0)).shape == (2, 5)
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(4, 3, generator=g, dtype=F64)
    fc = torch.randn(4, 3, 6, generator=g, dtype=F64)
    torch.testing.assert_close(
        crps_ensemble(obs, fc, member_dim=wrap(-1)), crps_ensemble(obs, fc), rtol=0, atol=0
    )
    torch.testing.assert_close(
        crps_ensemble(obs, fc.movedim(-1, 0), member_dim=wrap(0)), crps_ensemble(obs, fc)
    )
    members = fc.movedim(-1, -2)  # (4, 6 members, 3 variables)
    torch.testing.assert_close(
        variogram_score(obs, members, member_dim=wrap(-2), event_dim=wrap(-1)),
        variogram_score(obs, members),
        rtol=0,
        atol=0,
    )
    by_dim = contingency_scores(obs, fc[..., 0], 0.0, dim=wrap(0))
    plain_dim = contingency_scores(obs, fc[..., 0], 0.0, dim=0)
    for key in ("hits", "csi"):
        torch.testing.assert_close(by_dim[key], plain_dim[key], rtol=0, atol=0)


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_predictive_and_scoring_accept_real_scalars(wrap):
    from uqdyn.predictive import Ensemble
    from uqdyn.scoring import contingency_scores, crps_ensemble, interval_score, variogram_score

    _, normal = _normal(5)
    level = float(wrap(0.8))
    for got, want in zip(normal.interval(wrap(0.8)), normal.interval(level), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert normal.quantile(wrap(0.3)).shape == (5,)  # a scalar level gives batch_shape
    assert Ensemble(torch.zeros(3, 2), alpha=wrap(0.5)).alpha == 0.5
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(4, 3, generator=g, dtype=F64)
    fc = torch.randn(4, 3, 6, generator=g, dtype=F64)
    torch.testing.assert_close(
        crps_ensemble(obs, fc, estimator="afair", alpha=wrap(0.5)),
        crps_ensemble(obs, fc, estimator="afair", alpha=0.5),
        rtol=0,
        atol=0,
    )
    lower, upper = fc.amin(-1), fc.amax(-1)
    torch.testing.assert_close(
        interval_score(obs, lower, upper, wrap(0.8)), interval_score(obs, lower, upper, level)
    )
    members = fc.movedim(-1, -2)
    torch.testing.assert_close(
        variogram_score(obs, members, p=wrap(0.5)), variogram_score(obs, members, p=0.5)
    )
    got = contingency_scores(obs, fc[..., 0], wrap(0.5))["hits"]
    torch.testing.assert_close(got, contingency_scores(obs, fc[..., 0], 0.5)["hits"])


def test_predictive_and_scoring_refuse_bad_number_types():
    from uqdyn.predictive import Ensemble
    from uqdyn.scoring import crps_ensemble, interval_score, variogram_score

    _, normal = _normal(5)
    with pytest.raises(TypeError, match="n=3.0 is a float; expected an int >= 1"):
        normal.sample(3.0)
    with pytest.raises(ValueError, match=r"n=np.int64\(0\); expected an int >= 1"):
        normal.sample(np.int64(0))
    with pytest.raises(TypeError, match="level='0.9' is a str; expected a finite float"):
        normal.interval("0.9")
    with pytest.raises(TypeError, match="alpha='0.5' is a str"):
        Ensemble(torch.zeros(3, 2), alpha="0.5")
    obs, fc = torch.zeros(4), torch.zeros(4, 5)
    with pytest.raises(TypeError, match="member_dim=1.0 is a float; expected an int axis"):
        crps_ensemble(obs, fc, member_dim=1.0)
    with pytest.raises(TypeError, match="alpha=True is a bool"):
        crps_ensemble(obs, fc, alpha=True)
    with pytest.raises(TypeError, match=r"event_dim=array\(\[0, 1\]\) is a numpy.ndarray of shape"):
        variogram_score(torch.zeros(4, 2), torch.zeros(4, 5, 2), event_dim=np.array([0, 1]))
    with pytest.raises(TypeError, match=r"level=tensor\(\[0.9000\]\) is a torch.Tensor of shape"):
        interval_score(obs, obs, obs, torch.tensor([0.9]))


@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_calibration_accepts_integer_scalars(wrap):
    from uqdyn.calibration import (
        GroupedRecalibrator,
        IsotonicRecalibrator,
        LocalVarianceScaling,
        VarianceScaling,
    )

    y, normal = _normal()
    plain = IsotonicRecalibrator(max_knots=50, n_nodes=51).fit(y, normal)
    wrapped = IsotonicRecalibrator(max_knots=wrap(50), n_nodes=wrap(51)).fit(y, normal)
    assert type(wrapped.n_nodes) is int and type(wrapped.max_knots) is int
    torch.testing.assert_close(wrapped.knots_x, plain.knots_x, rtol=0, atol=0)
    draws = wrapped.transform(normal).sample(wrap(2), generator=torch.Generator().manual_seed(0))
    assert draws.shape == (2, 200)
    grouped = GroupedRecalibrator(VarianceScaling(), axis=wrap(0), min_points=wrap(1))
    assert grouped.axis == 0 and grouped.min_points == 1
    local = LocalVarianceScaling(n_bins=wrap(2), min_points=wrap(5))
    assert (local.n_bins, local.min_points) == (2, 5)


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_calibration_accepts_real_scalars(wrap):
    from uqdyn.calibration import LocalVarianceScaling, VarianceScaling, sharpness

    y, normal = _normal()
    plain = VarianceScaling(bounds=(float(wrap(0.5)), 100.0)).fit(y, normal)
    wrapped = VarianceScaling(bounds=(wrap(0.5), wrap(100.0))).fit(y, normal)
    assert wrapped.bounds == plain.bounds and wrapped.scale == plain.scale
    local = LocalVarianceScaling(bandwidth=wrap(0.5), shrinkage=wrap(0.25))
    assert (local.bandwidth, local.shrinkage) == (0.5, 0.25)
    torch.testing.assert_close(
        sharpness(normal, level=wrap(0.5)), sharpness(normal, level=float(wrap(0.5)))
    )


def test_calibration_refuses_bad_number_types():
    from uqdyn.calibration import GroupedRecalibrator, IsotonicRecalibrator, VarianceScaling

    with pytest.raises(TypeError, match="n_nodes=51.0 is a float; expected an int >= 3"):
        IsotonicRecalibrator(n_nodes=51.0)
    with pytest.raises(ValueError, match="max_knots=2; expected an int >= 3"):
        IsotonicRecalibrator(max_knots=2)
    with pytest.raises(TypeError, match=r"bounds\[0\]='0.1' is a str; expected a float"):
        VarianceScaling(bounds=("0.1", 10.0))
    with pytest.raises(TypeError, match="axis=0.0 is a float; expected an integer batch axis"):
        GroupedRecalibrator(VarianceScaling(), axis=0.0)
    with pytest.raises(TypeError, match=r"shrinkage=\[0.1\] is a list"):
        GroupedRecalibrator(VarianceScaling(), shrinkage=[0.1])


# --------------------------------------------------------------------------- forecast
def _series(n: int = 40):
    import pandas as pd

    return pd.Series(
        np.sin(np.arange(n) / 3.0), index=pd.date_range("2000-01-01", periods=n, freq="D")
    )


@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_forecast_accepts_integer_scalars(wrap):
    import xarray as xr

    from uqdyn.forecast import Climatology, rolling_origins, skill_score

    series = _series()
    plain = rolling_origins(series, context=4, leads=3, stride=2)
    wrapped = rolling_origins(series, context=wrap(4), leads=wrap(3), stride=wrap(2))
    np.testing.assert_array_equal(wrapped.context.values, plain.context.values)
    np.testing.assert_array_equal(wrapped.target.values, plain.target.values)
    listed = rolling_origins(series, context=4, leads=[wrap(1), wrap(3)])
    np.testing.assert_array_equal(
        listed.target.values, rolling_origins(series, context=4, leads=[1, 3]).target.values
    )
    assert Climatology("seasonal", season="dayofyear", window=wrap(3)).window == 3
    rng = np.random.default_rng(0)
    scores = xr.DataArray(rng.random(30) + 0.5, dims="origin")
    reference = xr.DataArray(rng.random(30) + 1.0, dims="origin")
    a = skill_score(scores, reference, dim="origin", n_boot=50, block=2, seed=3)
    b = skill_score(scores, reference, dim="origin", n_boot=wrap(50), block=wrap(2), seed=wrap(3))
    xr.testing.assert_identical(a, b)
    c = skill_score(scores.values, reference.values, dim=wrap(0), n_boot=50, block=2, seed=3)
    np.testing.assert_array_equal(c["skill"].values, a["skill"].values)


def test_forecast_refuses_bad_number_types():
    from uqdyn.forecast import Climatology, rolling_origins, skill_score

    series = _series()
    with pytest.raises(TypeError, match="stride=2.0 is a float; expected an int >= 1"):
        rolling_origins(series, context=4, leads=3, stride=2.0)
    with pytest.raises(TypeError, match="window=3.0 is a float; expected an int"):
        Climatology("running", window=3.0)
    with pytest.raises(TypeError, match=r"n_boot=array\(\[50, 60\]\) is a numpy.ndarray"):
        skill_score(np.ones(20), np.ones(20), dim=0, n_boot=np.array([50, 60]))
    with pytest.raises(ValueError, match="n_boot=5; expected an int >= 10"):
        skill_score(np.ones(20), np.ones(20), dim=0, n_boot=5)


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_data_accepts_integer_scalars(wrap):
    from uqdyn.data import TaskSampler, TrajectoryWindows, lorenz96_pairs

    values = torch.randn(3, 10, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    times = torch.linspace(0.0, 1.0, 10, dtype=F64)
    plain = TaskSampler(values, times, num_context=(2, 4), num_target=5, window=6)
    wrapped = TaskSampler(
        values, times, num_context=(wrap(2), wrap(4)), num_target=wrap(5), window=wrap(6)
    )
    assert (wrapped.num_context, wrapped.num_target) == ((2, 4), (5, 5))
    a = plain.sample(4, generator=7)
    b = wrapped.sample(wrap(4), generator=wrap(7))
    torch.testing.assert_close(b.y_context, a.y_context, rtol=0, atol=0)
    torch.testing.assert_close(b.x_target, a.x_target, rtol=0, atol=0)
    windows = TrajectoryWindows(values, input_steps=wrap(3), target_steps=wrap(2), stride=wrap(2))
    assert len(windows) == len(TrajectoryWindows(values, 3, 2, stride=2))
    g = torch.Generator()
    x, y = lorenz96_pairs(
        wrap(2), wrap(3), dim=8, spinup=0.0, substeps=wrap(2), generator=g.manual_seed(0)
    )
    x0, y0 = lorenz96_pairs(2, 3, dim=8, spinup=0.0, substeps=2, generator=g.manual_seed(0))
    assert x.shape == (6, 8)
    torch.testing.assert_close(y, y0, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_data_accepts_real_scalars(wrap):
    from uqdyn.data import lorenz96_pairs, random_smooth_field

    g = torch.Generator().manual_seed(0)
    x, y = lorenz96_pairs(2, 2, dt=wrap(0.05), dim=8, spinup=wrap(0.05), generator=g)
    x0, y0 = lorenz96_pairs(
        2, 2, dt=float(wrap(0.05)), dim=8, spinup=float(wrap(0.05)), generator=g.manual_seed(0)
    )
    torch.testing.assert_close(y, y0, rtol=0, atol=0)
    a = random_smooth_field(2, (8, 8), max_wavenumber=wrap(2.0), generator=g.manual_seed(1))
    b = random_smooth_field(2, (8, 8), max_wavenumber=2.0, generator=g.manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_data_refuses_bad_number_types():
    from uqdyn.data import TaskSampler, TrajectoryWindows, lorenz96_pairs, random_smooth_field

    values, times = torch.zeros(2, 6, 1), torch.linspace(0.0, 1.0, 6)
    with pytest.raises(TypeError, match="num_target=5.0 is a float; expected an int or a"):
        TaskSampler(values, times, num_target=5.0)
    with pytest.raises(TypeError, match=r"window=np.float64\(3.0\) is a numpy.float64"):
        TaskSampler(values, times, window=np.float64(3.0))
    with pytest.raises(ValueError, match=r"window=7; expected an int >= 1 and <= 6"):
        TaskSampler(values, times, window=7)
    with pytest.raises(TypeError, match="batch_size=2.0 is a float; expected an int >= 1"):
        TaskSampler(values, times, num_context=2, num_target=2).sample(2.0)
    with pytest.raises(TypeError, match=r"input_steps=array\(\[1, 2\]\) is a numpy.ndarray"):
        TrajectoryWindows(values, input_steps=np.array([1, 2]))
    with pytest.raises(TypeError, match="spinup='1' is a str; expected a finite float >= 0"):
        lorenz96_pairs(1, 1, spinup="1")
    with pytest.raises(TypeError, match=r"size\[1\]=8.0 is a float; expected an int >= 4"):
        random_smooth_field(1, (8, 8.0))


# --------------------------------------------------------------------------- da
@pytest.mark.parametrize(
    ("iwrap", "fwrap"),
    [
        (np.int64, np.float64),
        (np.int32, np.float32),
        (np.array, np.array),
        (torch.tensor, torch.tensor),
    ],
    ids=["np.int64", "np.int32", "np.array", "torch.tensor"],
)
def test_data_assimilation_accepts_numpy_and_torch_scalars(iwrap, fwrap):
    from uqdyn.da import ForecastOperator, realize_observation, to_dapper

    E = np.random.default_rng(0).normal(size=(3, 8))
    kwargs = {"state_dim": 8, "method": "rk4", "device": "cpu"}
    plain = ForecastOperator(Lorenz96(8), substeps=2, seed=1, **kwargs)
    wrapped = ForecastOperator(Lorenz96(8), substeps=iwrap(2), seed=iwrap(1), **kwargs)
    assert wrapped.substeps == 2 and type(wrapped.state_dim) is int
    dt = float(fwrap(0.05))  # the number the wrapper holds (float32 rounds)
    np.testing.assert_array_equal(wrapped.step(E, fwrap(0.0), fwrap(0.05)), plain.step(E, 0.0, dt))
    observed = realize_observation(
        StationSubsample(locations=torch.arange(3)), iwrap(8), noise_std=fwrap(0.5)
    )
    np.testing.assert_allclose(observed.R, 0.25)
    assert to_dapper(plain, noise=fwrap(0.5))["noise"] == 0.5


def test_data_assimilation_refuses_bad_number_types():
    from uqdyn.da import ForecastOperator, realize_observation

    with pytest.raises(TypeError, match="substeps=2.0 is a float; expected an int >= 1"):
        ForecastOperator(Lorenz96(8), substeps=2.0, device="cpu")
    with pytest.raises(TypeError, match="seed='1' is a str; expected an int"):
        ForecastOperator(Lorenz96(8), substeps=1, seed="1", device="cpu")
    operator = ForecastOperator(Lorenz96(8), substeps=1, device="cpu")
    with pytest.raises(TypeError, match=r"dt=array\(\[0.1, 0.2\]\) is a numpy.ndarray"):
        operator.step(np.zeros((2, 8)), 0.0, np.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="state_dim=8.0 is a float; expected an int >= 1"):
        realize_observation(StationSubsample(locations=torch.arange(3)), 8.0, noise_std=0.1)


# --------------------------------------------------------------------------- train.fit
@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_fit_accepts_a_numpy_or_torch_seed(wrap):
    from uqdyn.train import fit

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    data = [(x[:8], x[:8].sum(1, keepdim=True)), (x[8:], x[8:].sum(1, keepdim=True))]

    def loss_fn(model, batch):
        return (model(batch[0]) - batch[1]).square().mean()

    results = []
    for seed in (3, wrap(3)):
        with uqdyn_seeded(0):
            model = torch.nn.Linear(2, 1)
        fit(model, data, loss_fn=loss_fn, steps=3, lr=0.1, seed=seed, progress=False)
        results.append(model)
    _same_state(*results)
    with pytest.raises(TypeError, match="seed=3.0 is a float; expected an int"):
        fit(torch.nn.Linear(2, 1), data, loss_fn=loss_fn, steps=1, seed=3.0, progress=False)


def uqdyn_seeded(seed: int):
    import uqdyn

    return uqdyn.seeded(seed)


# --------------------------------------------------------------------------- models
def _built(factory, **kwargs):
    import uqdyn

    with uqdyn.seeded(0):
        return factory(**kwargs)


@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_models_accept_integer_scalars(wrap):
    from uqdyn.models.ambient_gan import AmbientGAN
    from uqdyn.models.forecasters import NPForecaster
    from uqdyn.models.gp import ExactGP, make_kernel
    from uqdyn.models.motion import MotionFieldForecaster, PeriodicUNet
    from uqdyn.models.neural_process import CNP, ConvCNP, LatentNP
    from uqdyn.models.surrogate import PeriodicConvTendency

    cases = [
        (CNP, {"x_dim": 1, "y_dim": 1, "width": 16, "encoder_depth": 2, "min_context": 0}),
        (LatentNP, {"x_dim": 1, "y_dim": 2, "width": 8, "z_dim": 4, "kl_warmup": 3}),
        (ConvCNP, {"in_channels": 1, "width": 8, "depth": 2, "kernel_size": 3, "seed": 1}),
        (ExactGP, {"x_dim": 2, "y_dim": 1, "max_jitter_tries": 2, "max_cholesky_size": 100}),
        (PeriodicUNet, {"in_channels": 2, "out_channels": 1, "width": 4, "depth": 1}),
        (MotionFieldForecaster, {"channels": 1, "history": 2, "width": 4, "depth": 1}),
        (PeriodicConvTendency, {"dim": 8, "width": 4, "kernel_size": 3}),
    ]
    for factory, kwargs in cases:
        ints = {k: wrap(v) for k, v in kwargs.items()}
        _same_state(_built(factory, **ints), _built(factory, **kwargs))
    gp = ExactGP(wrap(2), kernel="spectral_mixture", num_mixtures=wrap(2))
    assert gp.x_dim == 2 and type(gp.x_dim) is int
    assert make_kernel("spectral_mixture", wrap(1), num_mixtures=wrap(3)).num_mixtures == 3
    gan = _built(AmbientGAN, measurement=GaussianNoise(0.1), field_shape=(1, 8, 8), latent_dim=4)
    wrapped = _built(
        AmbientGAN,
        measurement=GaussianNoise(0.1),
        field_shape=(wrap(1), wrap(8), wrap(8)),
        latent_dim=wrap(4),
        base_channels=wrap(32),
        val_members=wrap(8),
    )
    _same_state(wrapped, gan)
    forecaster = NPForecaster(members=wrap(2), batch_size=wrap(4), steps=wrap(3), seed=wrap(1))
    assert (forecaster.members, forecaster.batch_size, forecaster.steps, forecaster.seed) == (
        2,
        4,
        3,
        1,
    )


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_models_accept_real_scalars(wrap):
    from uqdyn.models.gp import ExactGP
    from uqdyn.models.motion import MotionFieldForecaster
    from uqdyn.models.neural_process import CNP, NeuralODEProcess
    from uqdyn.models.surrogate import DiagonalNormalError, PeriodicConvTendency

    def value(x: float) -> float:
        return float(wrap(x))  # the number the wrapper holds (np.float32 rounds)

    gp = ExactGP(1, noise=wrap(0.25), min_noise=wrap(1e-3), jitter=wrap(1e-6))
    plain = ExactGP(1, noise=0.25, min_noise=value(1e-3), jitter=value(1e-6))
    _same_state(gp, plain)
    assert gp.jitter == value(1e-6)
    assert CNP(1, 1, width=8, min_std=wrap(0.25)).min_std == 0.25
    assert NeuralODEProcess(1, latent_dim=2, control_dim=0, width=8, t0=wrap(0.5)).t0 == 0.5
    motion = MotionFieldForecaster(
        history=2, width=4, depth=1, diffusion=wrap(0.25), max_speed=wrap(2.0)
    )
    assert (motion.fixed_diffusion, motion.max_speed) == (0.25, 2.0)
    learned = MotionFieldForecaster(history=2, width=4, depth=1, error_momentum=wrap(0.5))
    assert learned.error_momentum == 0.5
    tendency = _built(PeriodicConvTendency, dim=8, width=4, scale=wrap(2.0), dt=wrap(0.05))
    _same_state(tendency, _built(PeriodicConvTendency, dim=8, width=4, scale=2.0, dt=value(0.05)))
    error = DiagonalNormalError(3, wrap(0.05), sigma=wrap(0.5))
    assert error.dt_ref == value(0.05)


def test_models_refuse_bad_number_types():
    from uqdyn.models.ambient_gan import AmbientGAN
    from uqdyn.models.gp import ExactGP
    from uqdyn.models.motion import MotionFieldForecaster
    from uqdyn.models.neural_process import CNP, ConvCNP
    from uqdyn.models.surrogate import PeriodicConvTendency

    with pytest.raises(TypeError, match="width=16.0 is a float; expected an int >= 1"):
        CNP(1, 1, width=16.0)
    with pytest.raises(ValueError, match="width=0; expected an int >= 1"):
        CNP(1, 1, width=0)
    with pytest.raises(TypeError, match="seed=1.5 is a float; expected an int"):
        ConvCNP(1, seed=1.5)
    with pytest.raises(TypeError, match="noise='0.1' is a str; expected a float"):
        ExactGP(1, noise="0.1")
    with pytest.raises(TypeError, match=r"x_dim=array\(\[1, 2\]\) is a numpy.ndarray of shape"):
        ExactGP(np.array([1, 2]))
    with pytest.raises(TypeError, match=r"diffusion=\[0.1\] is a list; expected 'learned'"):
        MotionFieldForecaster(history=2, width=4, depth=1, diffusion=[0.1])
    with pytest.raises(TypeError, match=r"kernel_size=tensor\(\[3\]\) is a torch.Tensor of shape"):
        PeriodicConvTendency(8, kernel_size=torch.tensor([3]))
    with pytest.raises(TypeError, match="latent_dim=4.0 is a float; expected an int >= 1"):
        AmbientGAN(GaussianNoise(0.1), (1, 8, 8), latent_dim=4.0)


# --------------------------------------------------------------------------- hybrid models
def _pendulum_data():
    times = torch.linspace(0.0, 2.0, 5)
    state0 = torch.tensor([[1.0, 0.0], [0.5, 0.3], [-0.4, 0.2], [0.8, -0.5]])
    return simulate(DampedPendulum(alpha=0.2), state0, times), times


def _hybrid_member():
    from uqdyn.models.hybrid import HybridDynamics, MLPAugmentation

    return HybridDynamics(DampedPendulum(omega0=0.8, alpha=0.2), MLPAugmentation(2, 8, depth=1))


@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_hybrid_models_accept_integer_scalars(wrap):
    from uqdyn.models.hybrid import (
        ConvAugmentation,
        HybridDynamics,
        LatentHybridDynamics,
        MLPAugmentation,
        fit_aphynity,
        fit_hybrid_ensemble,
    )

    _same_state(
        _built(MLPAugmentation, dim=wrap(2), hidden=wrap(8), depth=wrap(2), input_dim=wrap(3)),
        _built(MLPAugmentation, dim=2, hidden=8, depth=2, input_dim=3),
    )
    _same_state(
        _built(ConvAugmentation, channels=wrap(2), hidden=wrap(4), depth=wrap(1)),
        _built(ConvAugmentation, channels=2, hidden=4, depth=1),
    )
    data_only = HybridDynamics(None, MLPAugmentation(2), state_shape=(wrap(2),))
    assert data_only.state_shape == (2,) and type(data_only.state_shape[0]) is int
    gridded = HybridDynamics(ShallowWater(size=(4, 4)), None, conserve=[wrap(2)])
    assert gridded.conserve == (2,) and type(gridded.conserve[0]) is int
    data, times = _pendulum_data()

    def make_latent(dim):
        network = MLPAugmentation(2, 8, depth=1, input_dim=4)
        return LatentHybridDynamics(DampedPendulum(), network, latent_dim=dim)

    latent = [_built(make_latent, dim=dim) for dim in (wrap(2), 2)]
    _same_state(*latent)
    assert latent[0].latent_dim == 2 and latent[0].state_shape == (4,)
    paths = [
        latent[0].sample(data[:2, 0], times, n, generator=torch.Generator().manual_seed(0))
        for n in (wrap(3), 3)
    ]
    torch.testing.assert_close(paths[0], paths[1], rtol=0, atol=0)
    assert paths[0].shape == (3, 2, 5, 2)
    fitted = []
    for kwargs in (
        {"epochs": wrap(2), "steps_per_epoch": wrap(2), "batch_size": wrap(3), "seed": wrap(1)},
        {"epochs": 2, "steps_per_epoch": 2, "batch_size": 3, "seed": 1},
    ):
        model = _built(_hybrid_member)
        result = fit_aphynity(model, data, times, lr=1e-2, **kwargs)
        fitted.append((model, result.multipliers))
    _same_state(fitted[0][0], fitted[1][0])
    assert fitted[0][1] == fitted[1][1] and len(fitted[0][1]) == 3
    ensembles = [
        fit_hybrid_ensemble(
            _hybrid_member, data, times, members=m, seed=s, epochs=1, steps_per_epoch=2, lr=1e-2
        )[0]
        for m, s in ((wrap(2), wrap(3)), (2, 3))
    ]
    assert len(ensembles[0]) == 2
    _same_state(*ensembles)
    ensembles[0].calibrate(data, times)
    forecasts = [
        ensembles[0].forecast(
            data[:2, 0], times, draws=n, generator=torch.Generator().manual_seed(4)
        )
        for n in (wrap(3), 3)
    ]
    assert forecasts[0].members.shape == (6, 2, 5, 2)
    torch.testing.assert_close(forecasts[0].members, forecasts[1].members, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", FLOAT_WRAPPERS.values(), ids=FLOAT_WRAPPERS.keys())
def test_hybrid_models_accept_real_scalars(wrap):
    from uqdyn.models.hybrid import HybridDynamics, fit_aphynity, fit_hybrid_ensemble

    def value(x: float) -> float:
        return float(wrap(x))  # the number the wrapper holds (np.float32 rounds)

    noisy = HybridDynamics(DampedPendulum(), None, noise_std=wrap(0.5))
    torch.testing.assert_close(noisy.log_noise.detach(), torch.full((2,), math.log(0.5)))
    data, times = _pendulum_data()
    fitted = []
    for kwargs in (
        {"lr": wrap(1e-2), "physics_lr": wrap(0.05), "multiplier": wrap(2.0)},
        {"lr": value(1e-2), "physics_lr": value(0.05), "multiplier": 2.0},
    ):
        model = _built(_hybrid_member)
        result = fit_aphynity(
            model, data, times, epochs=2, steps_per_epoch=2, multiplier_rate=wrap(0.5), **kwargs
        )
        fitted.append((model, result.multipliers))
    _same_state(fitted[0][0], fitted[1][0])
    assert fitted[0][1] == fitted[1][1] and fitted[0][1][0] == 2.0
    omega0 = float(fitted[0][0].physics.omega0.detach())
    assert abs(omega0 - 0.8) > 0.01  # physics_lr moved the physical parameter
    ensemble, _ = fit_hybrid_ensemble(
        _hybrid_member, data, times, members=2, epochs=1, steps_per_epoch=2, lr=1e-2
    )
    sigmas = [ensemble.calibrate(data, times, kernel_fraction=k) for k in (wrap(0.3), value(0.3))]
    torch.testing.assert_close(sigmas[0], sigmas[1], rtol=0, atol=0)


def test_hybrid_models_refuse_bad_number_types():
    from uqdyn.models.hybrid import (
        HybridDynamics,
        HybridEnsemble,
        LatentHybridDynamics,
        MLPAugmentation,
        fit_aphynity,
        fit_hybrid_ensemble,
    )

    with pytest.raises(TypeError, match="hidden=8.0 is a float; expected an int >= 1"):
        MLPAugmentation(2, hidden=8.0)
    with pytest.raises(TypeError, match="latent_dim=2.0 is a float; expected an int >= 1"):
        LatentHybridDynamics(DampedPendulum(), MLPAugmentation(2, input_dim=4), latent_dim=2.0)
    with pytest.raises(ValueError, match=r"latent_dim=np.int64\(0\); expected an int >= 1"):
        LatentHybridDynamics(DampedPendulum(), MLPAugmentation(2), latent_dim=np.int64(0))
    with pytest.raises(TypeError, match="noise_std='0.1' is a str; expected a finite float > 0"):
        HybridDynamics(DampedPendulum(), None, noise_std="0.1")
    with pytest.raises(TypeError, match=r"state_shape\[0\]=2.0 is a float; expected an int >= 1"):
        HybridDynamics(None, MLPAugmentation(2), state_shape=(2.0,))
    with pytest.raises(
        TypeError, match="state_shape=2 of type int is not a sequence; expected a sequence of ints"
    ):
        HybridDynamics(None, MLPAugmentation(2), state_shape=2)
    with pytest.raises(TypeError, match=r"conserve=\(True,\) holds True, a bool"):
        HybridDynamics(ShallowWater(size=(4, 4)), None, conserve=(True,))
    data, times = _pendulum_data()
    model = _hybrid_member()
    with pytest.raises(TypeError, match=r"physics_lr=tensor\(\[0.1000\]\) is a torch.Tensor"):
        fit_aphynity(model, data, times, epochs=1, physics_lr=torch.tensor([0.1]))
    with pytest.raises(TypeError, match="epochs=1.0 is a float; expected an int >= 1"):
        fit_aphynity(model, data, times, epochs=1.0)
    with pytest.raises(TypeError, match="multiplier=True is a bool; expected a finite float >= 0"):
        fit_aphynity(model, data, times, epochs=1, multiplier=True)
    with pytest.raises(TypeError, match="seed=1.5 is a float; expected an int"):
        fit_aphynity(model, data, times, epochs=1, seed=1.5)
    with pytest.raises(TypeError, match="members=2.0 is a float; expected an int >= 1"):
        fit_hybrid_ensemble(_hybrid_member, data, times, members=2.0)
    ensemble = HybridEnsemble([_hybrid_member(), _hybrid_member()])
    with pytest.raises(TypeError, match=r"kernel_fraction='0.5' is a str; expected a finite float"):
        ensemble.calibrate(data, times, kernel_fraction="0.5")
    ensemble.calibrate(data, times)
    with pytest.raises(TypeError, match=r"draws=array\(\[3\]\) is a numpy.ndarray of shape"):
        ensemble.forecast(data[:2, 0], times, draws=np.array([3]))


# --------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("wrap", INT_WRAPPERS.values(), ids=INT_WRAPPERS.keys())
def test_seeding_accepts_integer_scalars(wrap):
    import uqdyn

    with uqdyn.seeded(wrap(3)):
        wrapped = (torch.rand(3), np.random.rand(2))  # noqa: NPY002 - the global RNG is the point
    with uqdyn.seeded(3):
        plain = (torch.rand(3), np.random.rand(2))  # noqa: NPY002
    torch.testing.assert_close(wrapped[0], plain[0], rtol=0, atol=0)
    np.testing.assert_array_equal(wrapped[1], plain[1])
    with uqdyn.seeded(0):  # restores the caller's RNGs afterwards
        uqdyn.seed_everything(wrap(7))
        after = torch.rand(2)
        uqdyn.seed_everything(7)
        torch.testing.assert_close(after, torch.rand(2), rtol=0, atol=0)


def test_seeding_refuses_bad_number_types():
    import uqdyn

    with pytest.raises(TypeError, match="seed=3.0 is a float; expected an int >= 0"):
        uqdyn.seed_everything(3.0)
    with pytest.raises(TypeError, match=r"seed=tensor\(3.\) is a torch.Tensor of shape \(\)"):
        uqdyn.seed_everything(torch.tensor(3.0))
    with pytest.raises(TypeError, match=r"seed=array\(\[3\]\) is a numpy.ndarray of shape \(1,\)"):
        with uqdyn.seeded(np.array([3])):
            pass
    with pytest.raises(ValueError, match=r"seed=np.int64\(-1\); expected an int >= 0"):
        uqdyn.seed_everything(np.int64(-1))
    with pytest.raises(ValueError, match=r"seed=tensor\(4294967296\); expected an int >= 0 and <="):
        uqdyn.seed_everything(torch.tensor(2**32))


# --------------------------------------------------------------------------- study configs
@pytest.mark.parametrize("iwrap", [np.int64, torch.tensor], ids=["np.int64", "torch.tensor"])
@pytest.mark.parametrize("fwrap", [np.float32, np.array], ids=["np.float32", "np.array"])
def test_study_config_accepts_numpy_and_torch_scalars(iwrap, fwrap):
    import tomllib

    from uqdyn.study import load_config
    from uqdyn.study._checks import check_values

    overrides = {
        "data.n_test": iwrap(6),
        "model.cnp.lr": fwrap(0.5),
        "data.omega0_range": [fwrap(1.0), iwrap(2)],
        "evaluation.coverage_levels": [fwrap(0.5), 0.9],
    }
    cfg = load_config("pendulum", overrides=overrides, seed=iwrap(3))
    plain = load_config(
        "pendulum",
        overrides={
            "data.n_test": 6,
            "model.cnp.lr": 0.5,
            "data.omega0_range": [1.0, 2],
            "evaluation.coverage_levels": [0.5, 0.9],
        },
        seed=3,
    )
    assert cfg.to_toml() == plain.to_toml()  # stored as Python numbers
    assert cfg.seed == 3 and type(cfg.params["data"]["n_test"]) is int
    assert tomllib.loads(cfg.to_toml())["model"]["cnp"]["lr"] == 0.5
    check_values("pendulum", {"data.n_test": iwrap(6), "data.drop": fwrap(0.5)})


def test_study_config_refuses_bad_numbers_naming_the_key():
    from uqdyn.study import load_config
    from uqdyn.study._checks import check_values

    with pytest.raises(ValueError, match=r"^data.n_test = 0 \(an int\); expected an int >= 1$"):
        load_config("pendulum", overrides={"data.n_test": np.int64(0)})
    with pytest.raises(ValueError, match=r"model.cnp.lr = -1.0 \(a float\); expected a float > 0"):
        load_config("pendulum", overrides={"model.cnp.lr": np.float32(-1.0)})
    with pytest.raises(
        ValueError,
        match=r"data.n_test = np.int64\(0\) \(a numpy.int64\); expected an int >= 1",
    ):
        check_values("pendulum", {"data.n_test": np.int64(0)})
    with pytest.raises(
        ValueError,
        match=r"data.n_test = np.float64\(6.0\) \(a numpy.float64\); expected an int >= 1",
    ):
        check_values("pendulum", {"data.n_test": np.float64(6.0)})
    with pytest.raises(ValueError, match=r"data.dt = True \(a bool\); expected a float > 0"):
        check_values("pendulum", {"data.dt": True})
    with pytest.raises(
        ValueError, match=r"data.n_test = np.float64\(6.0\) is a float64; expected an int"
    ):
        load_config("pendulum", overrides={"data.n_test": np.float64(6.0)})
