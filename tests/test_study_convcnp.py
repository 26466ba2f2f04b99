"""The ConvCNP in the studies: it has skill where the pixel CNP has none."""

from __future__ import annotations

import torch

from uqdyn.predictive import Normal
from uqdyn.study.advection_diffusion import run_advection_diffusion
from uqdyn.study.config import load_config


def test_quick_advection_diffusion_convcnp_beats_climatology_at_every_lead(one_thread):
    cfg = load_config(
        "advection-diffusion",
        quick=True,
        overrides=['models=["convcnp", "climatology"]'],  # the quick settings otherwise
        progress=False,
    )
    data = run_advection_diffusion(cfg, torch.device("cpu"))
    by_name = {f.name: f.test for f in data.forecasts}
    obs = data.obs_test  # (cases, leads, H, W)
    convcnp, climatology = by_name["convcnp"], by_name["climatology"]
    assert isinstance(convcnp, Normal) and convcnp.batch_shape == obs.shape

    # climatology is the training per-lead, per-pixel Gaussian: the same for every case
    assert torch.equal(climatology.mean[0], climatology.mean[-1])

    crps_net = convcnp.crps(obs).mean(dim=(0, 2, 3))  # per lead
    crps_clim = climatology.crps(obs).mean(dim=(0, 2, 3))
    assert bool((crps_net < 0.8 * crps_clim).all()), (crps_net, crps_clim)

    # the forecast follows the case: its mean varies in space about as the truth does
    ratio = convcnp.mean.std(dim=(-2, -1)) / obs.std(dim=(-2, -1))  # (cases, leads)
    assert float(ratio.median()) > 0.4, ratio
    assert float(ratio.min()) > 0.1, ratio
