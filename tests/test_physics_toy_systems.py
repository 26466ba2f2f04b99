"""Lorenz-63, Lotka-Volterra and Kuramoto-Sivashinsky against published invariants and
independent float64 references (scipy's DOP853, a numpy ETDRK4 integrator)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from uqdyn.physics import (
    Dynamics,
    KuramotoSivashinsky,
    Lorenz63,
    LotkaVolterra,
    positive_parameter,
    simulate,
)

F64 = torch.float64


def _grid(end: float, step: float) -> torch.Tensor:
    count = round(end / step)
    return torch.arange(count + 1, dtype=F64) * step


# --------------------------------------------------------------------------- Lorenz-63
def test_lorenz63_matches_scipy_dop853():
    system = Lorenz63(dtype=F64)
    state0 = torch.tensor([[1.0, 1.0, 20.0], [-5.0, 3.0, 30.0]], dtype=F64)
    times = _grid(2.0, 5e-4)
    with torch.no_grad():
        ours = simulate(system, state0, times).numpy()

    def rhs(t, s):
        x, y, z = s
        return [10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z]

    for b in range(2):
        reference = solve_ivp(
            rhs,
            (0.0, 2.0),
            state0[b].numpy(),
            method="DOP853",
            rtol=1e-10,
            atol=1e-12,
            t_eval=times.numpy()[::200],
        )
        assert reference.success
        error = np.abs(ours[b, ::200] - reference.y.T).max() / np.abs(reference.y).max()
        assert error < 1e-6, error


def test_lorenz63_largest_lyapunov_exponent_is_the_published_0_906():
    """Two nearby trajectories, renormalised every time unit (Benettin's method).

    Sprott (2003) gives 0.9056 for sigma = 10, rho = 28, beta = 8/3.
    """
    torch.manual_seed(0)
    system = Lorenz63(dtype=F64)
    pairs, horizon, interval, step, d0 = 32, 60, 1.0, 0.01, 1e-8
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        state = system.initial_state(pairs, generator=generator, dtype=F64)
        state = simulate(system, state, _grid(10.0, step))[:, -1]  # onto the attractor
        offset = torch.randn(pairs, 3, generator=generator, dtype=F64)
        offset *= d0 / offset.norm(dim=1, keepdim=True)
        growth = torch.zeros(pairs, dtype=F64)
        times = _grid(interval, step)
        for _ in range(horizon):
            both = simulate(system, torch.cat([state, state + offset]), times)[:, -1]
            state, perturbed = both[:pairs], both[pairs:]
            separation = (perturbed - state).norm(dim=1)
            growth += torch.log(separation / d0)
            offset = (perturbed - state) * (d0 / separation).unsqueeze(1)
    exponent = float(growth.mean()) / (horizon * interval)
    assert abs(exponent - 0.906) < 0.05, exponent


def test_lorenz63_parameters_and_fixed_points():
    system = Lorenz63(sigma=10.0, rho=28.0, beta=8.0 / 3.0, dtype=F64)
    # the two non-trivial fixed points (+-sqrt(beta (rho - 1)), same, rho - 1) are at rest
    c = math.sqrt(8.0 / 3.0 * 27.0)
    fixed = torch.tensor([[c, c, 27.0], [-c, -c, 27.0], [0.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(
        system(torch.zeros((), dtype=F64), fixed), torch.zeros(3, 3, dtype=F64), atol=1e-12, rtol=0
    )
    # per-sample parameters: sample b uses entry b
    batch = Lorenz63(rho=torch.tensor([28.0, 10.0], dtype=F64))
    state = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=F64)
    out = batch(torch.zeros((), dtype=F64), state).detach()
    assert float(out[0, 1]) == pytest.approx(1.0 * (28.0 - 3.0) - 2.0)
    assert float(out[1, 1]) == pytest.approx(1.0 * (10.0 - 3.0) - 2.0)
    assert math.isinf(system.stable_dt("rk4"))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Lorenz63(sigma=0.0)
    with pytest.raises(ValueError, match="rho must be >= 0"):
        Lorenz63(rho=-1.0)


# --------------------------------------------------------------------------- Lotka-Volterra
LV = {"alpha": 1.5, "beta": 0.8, "delta": 0.6, "gamma": 2.0}


def test_lotka_volterra_conserves_its_invariant():
    system = LotkaVolterra(**LV, dtype=F64)
    state0 = torch.tensor([[1.0, 1.0], [5.0, 0.5], [3.3, 1.9]], dtype=F64)
    with torch.no_grad():
        trajectory = simulate(system, state0, _grid(20.0, 5e-3))
        invariant = system.invariant(trajectory)  # (batch, time)
    # the same V by hand
    x, y = trajectory[..., 0], trajectory[..., 1]
    by_hand = 0.6 * x - 2.0 * torch.log(x) + 0.8 * y - 1.5 * torch.log(y)
    torch.testing.assert_close(invariant, by_hand, rtol=1e-14, atol=1e-14)
    drift = ((invariant - invariant[:, :1]).abs() / invariant[:, :1].abs()).max()
    assert float(drift) < 1e-6, float(drift)
    # the orbits really move (a frozen solution would conserve V trivially)
    assert float((trajectory[:, :, 0].amax(1) - trajectory[:, :, 0].amin(1)).min()) > 0.1


def test_lotka_volterra_small_oscillations_have_period_2pi_over_sqrt_alpha_gamma():
    system = LotkaVolterra(**LV, dtype=F64)
    prey_eq, predator_eq = LV["gamma"] / LV["delta"], LV["alpha"] / LV["beta"]
    state0 = torch.tensor([[prey_eq * 1.001, predator_eq]], dtype=F64)
    step = 1e-2
    times = _grid(30.0, step)
    with torch.no_grad():
        prey = simulate(system, state0, times)[0, :, 0].numpy() - prey_eq
    upward = np.nonzero((prey[:-1] < 0) & (prey[1:] >= 0))[0]
    # linear interpolation of the upward zero crossings
    crossings = times.numpy()[upward] + step * prey[upward] / (prey[upward] - prey[upward + 1])
    period = float(np.diff(crossings).mean())
    expected = 2.0 * math.pi / math.sqrt(LV["alpha"] * LV["gamma"])
    assert len(crossings) >= 5
    assert period == pytest.approx(expected, rel=1e-5)


def test_lotka_volterra_checks_positivity_and_has_no_stable_euler_step():
    system = LotkaVolterra(**LV)
    with pytest.raises(ValueError, match="non-positive predator population"):
        simulate(system, torch.tensor([[1.0, -0.5]]), [0.0, 0.1])
    assert system.stable_dt("rk4") == pytest.approx(2.6 / math.sqrt(3.0))
    assert system.stable_dt("euler") == 0.0
    state0 = system.initial_state(64, generator=torch.Generator().manual_seed(0))
    assert state0.shape == (64, 2) and bool((state0 > 0).all())


# --------------------------------------------------------------------------- Kuramoto-Sivashinsky
def _etdrk4_reference(u0: np.ndarray, length: float, step: float, n_steps: int) -> np.ndarray:
    """Kassam & Trefethen's ETDRK4 for the same semi-discrete system, numpy float64.

    ``v_t = (k^2 - k^4) v - (i k / 2) P fft(ifft(v)^2)`` on the rfft modes, with ``P`` the
    2/3-rule truncation; the phi-function coefficients by the mean over 32 points of a
    contour in the complex plane (Kassam & Trefethen 2005, section 5).
    """
    n = u0.shape[-1]
    modes = np.arange(n // 2 + 1)
    k = 2.0 * np.pi / length * modes
    lin = k**2 - k**4
    g = -0.5j * k * (modes < n / 3.0)
    e, e2 = np.exp(step * lin), np.exp(step * lin / 2.0)
    roots = np.exp(1j * np.pi * (np.arange(1, 33) - 0.5) / 32)
    lr = step * lin[:, None] + roots[None, :]
    q = step * np.real(np.mean((np.exp(lr / 2.0) - 1.0) / lr, axis=1))
    f1 = step * np.real(np.mean((-4.0 - lr + np.exp(lr) * (4.0 - 3.0 * lr + lr**2)) / lr**3, 1))
    f2 = step * np.real(np.mean((2.0 + lr + np.exp(lr) * (-2.0 + lr)) / lr**3, axis=1))
    f3 = step * np.real(np.mean((-4.0 - 3.0 * lr - lr**2 + np.exp(lr) * (4.0 - lr)) / lr**3, 1))

    def nonlinear(v: np.ndarray) -> np.ndarray:
        return g * np.fft.rfft(np.fft.irfft(v, n) ** 2)

    v = np.fft.rfft(u0)
    for _ in range(n_steps):
        nv = nonlinear(v)
        a = e2 * v + q * nv
        na = nonlinear(a)
        b = e2 * v + q * na
        nb = nonlinear(b)
        c = e2 * a + q * (2.0 * nb - nv)
        nc = nonlinear(c)
        v = e * v + nv * f1 + 2.0 * (na + nb) * f2 + nc * f3
    return np.fft.irfft(v, n)


@pytest.mark.parametrize(
    ("length", "n", "horizon", "step"),
    [(22.0, 64, 1.0, 2.5e-4), (32.0 * math.pi, 128, 20.0, 5e-3)],
)
def test_kuramoto_sivashinsky_matches_an_etdrk4_reference(length, n, horizon, step):
    system = KuramotoSivashinsky(length=length, n=n)
    assert step < system.stable_dt("rk4")
    x = system.coordinates(dtype=F64)
    if n == 128:  # Kassam & Trefethen's initial condition on [0, 32 pi)
        state0 = (torch.cos(x / 16.0) * (1.0 + torch.sin(x / 16.0))).unsqueeze(0)
    else:
        state0 = system.initial_state(1, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        ours = simulate(system, state0, torch.tensor([0.0, horizon], dtype=F64), step_size=step)
    reference = _etdrk4_reference(state0[0].numpy(), length, 0.01, round(horizon / 0.01))
    scale = np.abs(reference).max()
    error = np.abs(ours[0, -1].numpy() - reference).max() / scale
    assert scale > 0.5  # the solution has grown/moved: not a trivial comparison
    assert float(np.abs(reference - state0[0].numpy()).max()) > 0.1 * scale
    assert error < 1e-8, error  # measured ~1e-10, the size of the reference's own error


def test_kuramoto_sivashinsky_conserves_the_spatial_mean():
    system = KuramotoSivashinsky(length=22.0, n=64)
    state0 = system.initial_state(3, generator=torch.Generator().manual_seed(0), dtype=F64)
    state0 = state0 + torch.tensor([[0.0], [0.3], [-0.7]], dtype=F64)
    with torch.no_grad():
        trajectory = simulate(system, state0, _grid(0.5, 2.5e-4)[::200], step_size=2.5e-4)
    mean = trajectory.mean(dim=-1)
    torch.testing.assert_close(mean, mean[:, :1].expand_as(mean), atol=1e-13, rtol=0)
    assert float((trajectory[:, -1] - state0).abs().max()) > 0.05


def test_kuramoto_sivashinsky_stable_dt_is_the_explicit_limit():
    """rk4 at 95% of stable_dt stays bounded; at 115% the stiffest mode blows up."""
    system = KuramotoSivashinsky(length=22.0, n=64)
    k_max = math.pi * 64 / 22.0
    limit = system.stable_dt("rk4")
    assert limit == pytest.approx(2.6 / (k_max**4 - k_max**2))
    assert system.stable_dt("euler") == pytest.approx(2.0 / (k_max**4 - k_max**2))
    state0 = system.initial_state(1, generator=torch.Generator().manual_seed(0), dtype=F64)
    state0 = state0 + 1e-6 * torch.cos(math.pi * torch.arange(64, dtype=F64))  # the k_max mode
    times = torch.tensor([0.0, 400 * limit], dtype=F64)
    with torch.no_grad():
        fine = simulate(system, state0, times, step_size=0.95 * limit)
        coarse = simulate(system, state0, times, step_size=1.15 * limit, check_stability=False)
    assert float(fine.abs().max()) < 10.0
    assert not bool(torch.isfinite(coarse[:, -1]).all()) or float(coarse.abs().max()) > 1e6
    with pytest.raises(ValueError, match="exceeds the stability limit of KuramotoSivashinsky"):
        simulate(system, state0, times, step_size=1.1 * limit)


def test_kuramoto_sivashinsky_rejects_bad_grids():
    with pytest.raises(ValueError, match="even"):
        KuramotoSivashinsky(n=63)
    with pytest.raises(TypeError, match="n=64.0 is a float; expected an int >= 8"):
        KuramotoSivashinsky(n=64.0)
    with pytest.raises(ValueError, match="length=-1.0; expected a finite float > 0"):
        KuramotoSivashinsky(length=-1.0)


# --------------------------------------------------------------------------- positive_parameter
def test_positive_parameter_is_exp_of_the_raw_logarithm():
    class Decay(Dynamics):
        state_shape = (1,)
        parameter_names = ("rate",)
        rate = positive_parameter("Decay rate.")

        def __init__(self, rate: float, dtype: torch.dtype | None = None) -> None:
            super().__init__()
            self.raw_rate = self.log_parameter(rate, "rate", dtype=dtype)

        def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            return -self.per_sample(self.rate, state) * state

    system = Decay(0.7, dtype=F64)
    assert float(system.raw_rate.detach()) == math.log(0.7)
    assert float(system.rate.detach()) == pytest.approx(0.7, rel=1e-15)
    with torch.no_grad():
        system.raw_rate.fill_(math.log(2.0))
    assert float(system.rate.detach()) == pytest.approx(2.0, rel=1e-15)
    with pytest.raises(AttributeError, match="assign raw_rate"):
        system.rate = 3.0
    assert isinstance(Decay.rate, positive_parameter)
    # exact decay u(t) = exp(-2 t)
    out = simulate(system, torch.ones(1, 1, dtype=F64), _grid(1.0, 0.01)).detach()
    assert float(out[0, -1, 0]) == pytest.approx(math.exp(-2.0), rel=1e-7)


# --------------------------------------------------------------------------- the docs page
def test_the_write_your_own_dynamics_page_runs(capsys):
    """Every python block of docs/dynamics.md runs (its own asserts check the results)."""
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "dynamics.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks
    namespace: dict = {"__name__": "docs_dynamics"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "exceeds the stability limit of DampedOscillator" in printed
    assert abs(namespace["model"].omega.item() - 1.0) < 0.01
