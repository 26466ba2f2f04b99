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
