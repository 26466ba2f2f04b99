"""The uqdyn command and the built-in demo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import uqdyn
from uqdyn._device import resolve_device
from uqdyn.cli import main
from uqdyn.demo import run_demo


def test_version_and_info(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert uqdyn.__version__ in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "gpytorch", "torchdiffeq", "properscoring", "xarray", "devices:"):
        assert name in out


def test_console_script_module_entry():
    result = subprocess.run(
        [sys.executable, "-m", "uqdyn.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "uqdyn" in result.stdout


def test_demo_is_reproducible_and_recalibration_helps():
    first = run_demo(device="cpu", seed=3, members=8, cases=16, verbose=False)
    second = run_demo(device="cpu", seed=3, members=8, cases=16, verbose=False)
    torch.testing.assert_close(first.crps, second.crps)
    # the demo ensemble is built over-confident: spread-skill well below 1, and variance
    # scaling fitted on the validation dates brings it near 1 on the test dates
    assert first.ssr < 0.7
    assert abs(first.ssr_recalibrated - 1.0) < abs(first.ssr - 1.0)
    assert first.scale > 1.0
    assert float(first.crps_recalibrated.mean()) < float(first.crps.mean())


def test_demo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="members"):
        run_demo(members=1, verbose=False)
    with pytest.raises(ValueError, match="cases"):
        run_demo(cases=5, verbose=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_study_subcommand_is_listed_and_needs_a_name(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "study" in capsys.readouterr().out
    assert main(["study"]) == 2
    err = capsys.readouterr().err
    assert "NAME" in err and "advection-diffusion" in err


def test_help_and_readme_state_the_same_run_times(capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps (and may split words) at the width

    from uqdyn.cli import DEMO_TIME, QUICK_TIMES

    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    for phrase in (DEMO_TIME, QUICK_TIMES):
        assert phrase in readme, phrase
    with pytest.raises(SystemExit):
        main(["--help"])
    assert DEMO_TIME in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert QUICK_TIMES in " ".join(capsys.readouterr().out.split())
