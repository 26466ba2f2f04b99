"""Observation operators: documented statistics, linearity, gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.ndimage import gaussian_filter

from uqdyn.observe import (
    BlockMask,
    Blur,
    CloudMask,
    Compose,
    GaussianNoise,
    Observed,
    RandomPixelMask,
    StationSubsample,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _device_param(device: str):
    marks = [pytest.mark.gpu] if device == "cuda" else []
    return pytest.param(device, marks=marks, id=device)


device_params = pytest.mark.parametrize("device", [_device_param(d) for d in DEVICES])


# --------------------------------------------------------------------------- masks
@device_params
def test_random_pixel_mask_keeps_documented_fraction(device):
    state = torch.randn(16, 2, 32, 32, device=device)
    obs = RandomPixelMask(drop=0.9)(state, generator=_gen(1))
    assert obs.mask.dtype == torch.bool and obs.mask.shape == state.shape
    # one mask per grid point, shared by the channels
    assert torch.equal(obs.mask[:, 0], obs.mask[:, 1])
    n = 16 * 32 * 32
    kept = int(obs.mask[:, 0].sum())
    lo, hi = stats.binom.interval(0.999, n, 0.1)
    assert lo <= kept <= hi
    # hidden entries are zero, observed entries unchanged
    assert torch.equal(obs.values[obs.mask], state[obs.mask])
    assert bool((obs.values[~obs.mask] == 0).all())


def test_random_pixel_mask_per_channel_and_vector_states():
    obs = RandomPixelMask(drop=0.3, per_channel=True)(torch.randn(8, 3, 16, 16), generator=_gen())
    assert not torch.equal(obs.mask[:, 0], obs.mask[:, 1])
    lo, hi = stats.binom.interval(0.999, 8 * 3 * 256, 0.7)
    assert lo <= int(obs.mask.sum()) <= hi
    vec = RandomPixelMask(drop=0.5)(torch.randn(400, 10), generator=_gen(2))
    lo, hi = stats.binom.interval(0.999, 4000, 0.5)
    assert lo <= int(vec.mask.sum()) <= hi


def test_random_pixel_mask_drop_range_is_uniform_per_sample():
    # 64x64 locations per sample: the kept fraction estimates 1 - p_b to about 0.008
    obs = RandomPixelMask(drop=(0.2, 0.8))(torch.zeros(300, 1, 64, 64), generator=_gen(3))
    drop = 1.0 - obs.mask.float().mean(dim=(1, 2, 3)).numpy()
    assert drop.min() > 0.17 and drop.max() < 0.83
    assert stats.kstest(drop, stats.uniform(0.2, 0.6).cdf).pvalue > 1e-3


@device_params
def test_cloud_mask_hides_exact_fraction_and_cover_is_uniform(device):
    obs = CloudMask(cover=0.37, length_scale=3.0)(
        torch.randn(5, 2, 24, 40, device=device), generator=_gen(4)
    )
    hidden = (~obs.mask[:, 0]).sum(dim=(1, 2)).cpu()
    assert torch.equal(hidden, torch.full((5,), round(0.37 * 24 * 40)))
    assert torch.equal(obs.mask[:, 0], obs.mask[:, 1])
    ranged = CloudMask(cover=(0.1, 0.6), length_scale=(2.0, 5.0))(
        torch.zeros(300, 1, 16, 16, device=device), generator=_gen(5)
    )
    cover = 1.0 - ranged.mask.float().mean(dim=(1, 2, 3)).cpu().numpy()
    assert cover.min() >= 0.1 - 1 / 256 and cover.max() <= 0.6 + 1 / 256
    assert stats.kstest(cover, stats.uniform(0.1, 0.5).cdf).pvalue > 1e-3


def _neighbour_agreement(mask: torch.Tensor) -> float:
    m = mask[:, 0]
    right = (m == torch.roll(m, 1, dims=-1)).float().mean()
    down = (m == torch.roll(m, 1, dims=-2)).float().mean()
    return float((right + down) / 2)


def test_cloud_mask_is_spatially_correlated():
    cover = 0.5
    cloud = CloudMask(cover=cover, length_scale=4.0)(torch.zeros(20, 1, 64, 64), generator=_gen(6))
    # an independent mask with the same fraction agrees with its neighbour with probability
    # p^2 + (1 - p)^2 = 0.5; excursion sets of a smooth field agree far more often
    independent = cover**2 + (1 - cover) ** 2
    assert _neighbour_agreement(cloud.mask) > independent + 0.35
    pixels = RandomPixelMask(drop=cover)(torch.zeros(20, 1, 64, 64), generator=_gen(6))
    assert abs(_neighbour_agreement(pixels.mask) - independent) < 0.02


def test_block_mask_single_block_area_and_coverage_probability():
    one = BlockMask(n_blocks=1, height=0.25, width=0.5)(
        torch.zeros(10, 1, 16, 32), generator=_gen()
    )
    assert torch.equal((~one.mask).sum(dim=(1, 2, 3)), torch.full((10,), 4 * 16))
    # K = 3 blocks of 4 x 8 on a 16 x 32 periodic grid: P(observed) = (1 - 32 / 512)^3
    many = BlockMask(n_blocks=3, height=0.25, width=0.25)(
        torch.zeros(2000, 1, 16, 32), generator=_gen(7)
    )
    fraction = many.mask.float().mean(dim=(1, 2, 3)).numpy()
    expected = (1 - 32 / 512) ** 3
    se = fraction.std(ddof=1) / np.sqrt(fraction.size)
    assert abs(fraction.mean() - expected) < 4 * se
    rand_k = BlockMask(n_blocks=(0, 2), height=0.25, width=0.25)(
        torch.zeros(2000, 1, 16, 32), generator=_gen(8)
    )
    # K uniform on {0, 1, 2}: mean of (1 - 1/16)^K
    expected_k = np.mean([(1 - 1 / 16) ** k for k in range(3)])
    frac_k = rand_k.mask.float().mean(dim=(1, 2, 3)).numpy()
    assert abs(frac_k.mean() - expected_k) < 4 * frac_k.std(ddof=1) / np.sqrt(frac_k.size)


# --------------------------------------------------------------------------- noise
@device_params
def test_gaussian_noise_has_documented_variance(device):
    state = torch.randn(50, 1, 16, 16, dtype=torch.float64, device=device)
    obs = GaussianNoise(sigma=0.3)(state, generator=_gen(9))
    resid = (obs.values - state).cpu().numpy()
    n = resid.size
    chi2 = float((resid**2).sum() / 0.3**2)
    assert stats.chi2.ppf(0.0005, n) < chi2 < stats.chi2.ppf(0.9995, n)
    assert torch.allclose(obs.noise_std, torch.full_like(state, 0.3))
    assert float(GaussianNoise(sigma=0.3).observation_error_variance()) == pytest.approx(0.09)


def test_gaussian_noise_random_sigma_is_reported_per_sample():
    state = torch.zeros(40, 500, dtype=torch.float64)
    obs = GaussianNoise(sigma=(0.1, 1.0))(state, generator=_gen(10))
    sigma = obs.noise_std[:, 0]
    assert bool((obs.noise_std == sigma[:, None]).all())
    assert float(sigma.min()) >= 0.1 and float(sigma.max()) <= 1.0
    # standardised residuals of every sample follow chi-square(500)
    chi2 = ((obs.values / sigma[:, None]) ** 2).sum(1).numpy()
    assert stats.kstest(chi2, stats.chi2(500).cdf).pvalue > 1e-3


def test_noise_after_mask_only_touches_observed_entries_and_variances_add():
    state = torch.randn(6, 1, 16, 16, dtype=torch.float64)
    op = Compose(RandomPixelMask(drop=0.5), GaussianNoise(0.3), GaussianNoise(0.4))
    obs = op(state, generator=_gen(11))
    assert bool((obs.values[~obs.mask] == 0).all())
    assert torch.allclose(obs.noise_std, torch.full_like(state, 0.5))


def test_log_likelihood_matches_scipy():
    state = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    op = Compose(CloudMask(cover=0.4), GaussianNoise(sigma=(0.2, 0.5)))
    obs = op(state, generator=_gen(12))
    other = torch.randn_like(state)
    got = obs.log_likelihood(other)
    for b in range(3):
        m = obs.mask[b].numpy()
        ref = stats.norm.logpdf(
            obs.values[b].numpy()[m], other[b].numpy()[m], obs.noise_std[b].numpy()[m]
        ).sum()
        assert float(got[b]) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="noise_std"):
        RandomPixelMask(0.5)(state).log_likelihood(state)


# --------------------------------------------------------------------------- blur
@pytest.mark.parametrize("sigma", [2.0, 3.5])
def test_blur_matches_periodic_gaussian_filter_and_keeps_mean(sigma):
    x = torch.randn(2, 3, 32, 40, dtype=torch.float64)
    y = Blur(sigma=sigma)(x).values
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="wrap", truncate=10)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-7)
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=1e-13)


def test_blur_damps_a_fourier_mode_analytically():
    sigma, k = 1.3, 3
    xs = torch.arange(48, dtype=torch.float64)
    mode = torch.sin(2 * torch.pi * k * xs / 48).expand(1, 1, 16, 48)
    y = Blur(sigma)(mode).values
    damping = np.exp(-2 * np.pi**2 * sigma**2 * (k / 48) ** 2)
    torch.testing.assert_close(y, damping * mode, rtol=0, atol=1e-12)


def test_blur_random_width_per_sample_preserves_mean():
    x = torch.rand(4, 1, 16, 16, dtype=torch.float64)
    y = Blur(sigma=(0.5, 3.0))(x, generator=_gen(13)).values
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-13)
    assert not torch.allclose(y, x)


# --------------------------------------------------------------------------- stations
def test_station_subsample_fixed_network_picks_grid_values():
    state = torch.randn(3, 2, 10, 12)
    net = StationSubsample.random_network(7, (10, 12), generator=_gen(14))
    assert len({tuple(r) for r in net.tolist()}) == 7
    obs = StationSubsample(locations=net)(state)
    assert obs.values.shape == (3, 2, 7) and obs.layout == "stations"
    for s, (r, c) in enumerate(net.tolist()):
        assert torch.equal(obs.values[:, :, s], state[:, :, r, c])
    assert torch.equal(obs.coordinates[0], net)


def test_station_subsample_random_per_sample_and_vector_states():
    state = torch.randn(4, 1, 8, 8)
    obs = StationSubsample(n_stations=10)(state, generator=_gen(15))
    for b in range(4):
        rc = obs.coordinates[b]
        assert len({tuple(r) for r in rc.tolist()}) == 10
        assert torch.equal(obs.values[b, 0], state[b, 0, rc[:, 0], rc[:, 1]])
    assert not torch.equal(obs.coordinates[0], obs.coordinates[1])
    vec = torch.randn(5, 40)
    obs_v = StationSubsample(locations=torch.arange(0, 40, 2))(vec)
    assert torch.equal(obs_v.values, vec[:, ::2])
    assert obs_v.coordinates.shape == (5, 20, 1)


def test_stations_after_mask_and_noise_keep_mask_and_noise():
    state = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    op = Compose(RandomPixelMask(0.5), StationSubsample(n_stations=20), GaussianNoise(0.1))
    obs = op(state, generator=_gen(16))
    assert obs.mask.shape == (2, 1, 20) and obs.noise_std.shape == (2, 1, 20)
    assert 0 < int(obs.mask.sum()) < 40


# --------------------------------------------------------------------------- realized H
@device_params
def test_realized_operator_reproduces_noise_free_values_and_matrix(device):
    state = torch.randn(3, 2, 12, 12, dtype=torch.float64, device=device)
    op = Compose(Blur((0.5, 2.0)), CloudMask((0.2, 0.5)), StationSubsample(n_stations=30))
    obs = op(state, generator=_gen(17))
    torch.testing.assert_close(obs.apply(state), obs.values)
    for b in range(3):
        h = obs.matrix(b)
        assert h.shape == (int(obs.mask[b].sum()), 2 * 12 * 12)
        torch.testing.assert_close(h @ state[b].flatten(), obs.observed_values(b))
    # sample 1's operator applied to an ensemble of 5 states
    ensemble = torch.randn(5, 2, 12, 12, dtype=torch.float64, device=device)
    out = obs.apply(ensemble, index=1)
    ref = torch.stack([obs.select(1).apply(e[None])[0] for e in ensemble])
    torch.testing.assert_close(out, ref)
    noisy = Compose(op, GaussianNoise(0.2))(state, generator=_gen(18))
    assert noisy.observed_error_variance(0).shape == noisy.observed_values(0).shape
    torch.testing.assert_close(
        noisy.observed_error_variance(0), torch.full_like(noisy.observed_values(0), 0.04)
    )


def test_same_generator_seed_gives_same_draws():
    state = torch.randn(4, 1, 16, 16)
    op = Compose(CloudMask((0.2, 0.7)), BlockMask(), GaussianNoise((0.1, 0.2)))
    a, b = op(state, generator=_gen(19)), op(state, generator=_gen(19))
    assert torch.equal(a.values, b.values) and torch.equal(a.mask, b.mask)
    c = op(state, generator=_gen(20))
    assert not torch.equal(a.mask, c.mask)


@device_params
def test_gradients_flow_through_linear_operators(device):
    def fn(x):
        op = Compose(Blur(1.5), RandomPixelMask(0.5), StationSubsample(n_stations=12))
        return op(x, generator=_gen(21)).values

    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))
    y = GaussianNoise(0.3)(x, generator=_gen(22)).values
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, torch.ones_like(x))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RandomPixelMask(drop=1.5), "drop"),
        (lambda: RandomPixelMask(drop=(0.8, 0.2)), "drop"),
        (lambda: CloudMask(cover=-0.1), "cover"),
        (lambda: CloudMask(length_scale=0.0), "length_scale"),
        (lambda: BlockMask(n_blocks=1.5), "n_blocks"),
        (lambda: Blur(sigma=float("nan")), "sigma"),
        (lambda: GaussianNoise(sigma=-1.0), "sigma"),
        (lambda: StationSubsample(), "exactly one"),
        (lambda: StationSubsample(n_stations=0), "n_stations"),
        (lambda: StationSubsample(locations=torch.zeros(3, 3, dtype=torch.long)), "locations"),
        (lambda: Compose(), "at least one"),
    ],
)
def test_bad_constructor_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_states_and_orders():
    op = RandomPixelMask(0.5)
    with pytest.raises(ValueError, match=r"state has shape \(3, 4, 5\)"):
        op(torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        op(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        op(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match="generator"):
        op(torch.zeros(2, 3), generator=0)
    with pytest.raises(ValueError, match="CloudMask needs gridded"):
        CloudMask()(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Blur before masks"):
        Compose(RandomPixelMask(0.5), Blur(1.0))(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="exceed the spatial shape"):
        StationSubsample(locations=torch.tensor([[9, 0]]))(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="n_stations=100 exceeds"):
        StationSubsample(n_stations=100)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match=r"operators\[0\]"):
        Compose(torch.nn.Identity())
    obs = op(torch.zeros(2, 3))
    assert isinstance(obs, Observed)
    with pytest.raises(ValueError, match="state has shape"):
        obs.apply(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="batch 5"):
        obs.apply(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="index=2"):
        obs.select(2)
