"""The model contract, as reusable tests every model family runs.

A family's test module subclasses :class:`ModelContract` once per model and fills in:

* ``predictive_type``: the documented Predictive class (or tuple of classes);
* ``build(dtype)``: the model, seeded (``with uqdyn.seeded(0): ...``), in ``dtype``;
* ``batch(dtype)``: a small deterministic batch (what ``fit`` yields to ``model.loss``);
* ``padded(batch)``: the same batch with extra masked entries (padding, unobserved points)
  holding arbitrary finite values, or ``None`` with ``padding_reason`` saying why the model
  has no padding;
* ``non_finite(batch)``: the batch with a NaN or infinity where an observed value must be;
* optionally ``prediction(model, batch)`` (default: ``model.predict_batch(batch)[0]``) and
  ``fit_kwargs`` (extra :func:`uqdyn.train.fit` options, e.g. the optimizer).

The tests check, in the family's own terms, what the design promises of every model: it
returns the documented Predictive with the documented shape; follows the dtype and device
of its inputs; gives the same numbers for the same seed in a fresh process; checkpoints and
resumes exactly; masked padding never changes a prediction; non-finite inputs are refused
with a clear error; and ``uqdyn.train.fit(model, data)`` trains it without a ``loss_fn``.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from uqdyn.train import Trainable, Validatable, fit

TESTS = Path(__file__).resolve().parent
NON_FINITE = r"(?i)(nan|non-finite|not finite|infinite|finite)"


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


_FRESH: dict[str, dict[str, list[float]]] = {}
_FRESH_CODE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import importlib
from _contract import ModelContract
module = importlib.import_module(sys.argv[2])
out = {
    name: cls().fingerprint()
    for name, cls in sorted(vars(module).items())
    if isinstance(cls, type) and issubclass(cls, ModelContract) and name.startswith("Test")
}
print(json.dumps(out))
"""


def _fresh_fingerprints(module_file: str) -> dict[str, list[float]]:
    """Fingerprints of every contract class of a test module, from one fresh process."""
    if module_file not in _FRESH:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
        out = subprocess.run(
            [sys.executable, "-c", _FRESH_CODE, str(TESTS), Path(module_file).stem],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        _FRESH[module_file] = json.loads(out.stdout.strip().splitlines()[-1])
    return _FRESH[module_file]


def _moments(prediction: Any) -> tuple[Tensor, Tensor]:
    return prediction.mean, prediction.variance


class ModelContract:
    """Base class of the shared contract tests (see the module documentation)."""

    predictive_type: ClassVar[type | tuple[type, ...]]
    padding_reason: ClassVar[str] = ""
    fit_kwargs: ClassVar[dict[str, Any]] = {}
    fit_steps: ClassVar[int] = 4
    atol: ClassVar[float] = 1e-6

    # ------------------------------------------------------------------ to fill in
    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        raise NotImplementedError

    def batch(self, dtype: torch.dtype = torch.float32) -> Any:
        raise NotImplementedError

    def padded(self, batch: Any) -> Any | None:
        raise NotImplementedError

    def non_finite(self, batch: Any) -> Any:
        raise NotImplementedError

    def prediction(self, model: nn.Module, batch: Any) -> Any:
        return model.predict_batch(batch)[0]  # type: ignore[operator]

    # ------------------------------------------------------------------ helpers
    def _fit(self, model: nn.Module, batch: Any, steps: int, **kwargs: Any) -> Any:
        options = {"device": "cpu", "progress": False, "seed": 0, "lr": 1e-3}
        options.update(self.fit_kwargs)
        options.update(kwargs)
        return fit(model, [batch], steps=steps, **options)

    def fingerprint(self) -> list[float]:
        """Numbers of a seeded build, a short fit and a prediction (compared across processes)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model = self.build()
            batch = self.batch()
            if isinstance(model, Trainable):  # a model with nothing to train just predicts
                self._fit(model, batch, self.fit_steps)
            model.eval()
            with torch.no_grad():
                mean, var = _moments(self.prediction(model, batch))
        finally:
            torch.set_num_threads(threads)
        params = [p.detach().double().sum() for p in model.parameters()]
        return [
            float(torch.stack(params).sum()) if params else 0.0,
            float(mean.double().nansum()),
            float(var.double().nansum()),
        ]

    # ------------------------------------------------------------------ the contract
    def test_follows_the_training_contract(self) -> None:
        model = self.build()
        assert isinstance(model, nn.Module)
        assert isinstance(model, Trainable), "the model has no loss(batch)"
        assert isinstance(model, Validatable), "the model has no predict_batch(batch)"

    def test_returns_the_documented_predictive(self) -> None:
        model = self.build().eval()
        with torch.no_grad():
            prediction, y_true, mask = model.predict_batch(self.batch())  # type: ignore[operator]
        assert isinstance(prediction, self.predictive_type), type(prediction).__name__
        assert tuple(prediction.batch_shape) == tuple(y_true.shape)
        if mask is not None:
            assert mask.dtype == torch.bool
            assert tuple(mask.shape) == tuple(y_true.shape[: mask.ndim])
        mean, var = _moments(prediction)
        assert tuple(mean.shape) == tuple(y_true.shape)
        keep = torch.ones_like(mean, dtype=torch.bool) if mask is None else mask
        keep = keep.reshape(tuple(keep.shape) + (1,) * (mean.ndim - keep.ndim)).expand_as(mean)
        # A deterministic model answers with a one-member Ensemble (variance 0).
        assert bool(torch.isfinite(mean[keep]).all()) and bool((var[keep] >= 0).all())

    def test_fit_trains_it_without_a_loss_fn_and_validates_with_scores(self) -> None:
        model = self.build()
        batch = self.batch()
        result = self._fit(model, batch, 2, val_data=[batch], val_every=2)
        row = result.history[-1]
        assert row["step"] == 2
        assert row["val_loss"] is not None and torch.isfinite(torch.tensor(row["val_loss"]))
        assert row["val_crps"] is not None and torch.isfinite(torch.tensor(row["val_crps"]))

    def test_follows_the_dtype_of_its_inputs(self) -> None:
        model = self.build(torch.float64).eval()
        batch = self.batch(torch.float64)
        with torch.no_grad():
            mean, var = _moments(self.prediction(model, batch))
        assert mean.dtype == torch.float64 and var.dtype == torch.float64
        loss = model.loss(batch)  # type: ignore[operator]
        assert loss.dtype == torch.float64

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    def test_follows_the_device_of_its_inputs(self) -> None:
        cuda = torch.device("cuda")
        model = self.build().to(cuda).eval()
        batch = _to(self.batch(), cuda)
        with torch.no_grad():
            mean, var = _moments(self.prediction(model, batch))
            cpu_model = self.build().eval()
            cpu_mean, _ = _moments(self.prediction(cpu_model, self.batch()))
        assert mean.device.type == "cuda" and var.device.type == "cuda"
        torch.testing.assert_close(mean.cpu(), cpu_mean, rtol=1e-4, atol=1e-4)

    def test_same_seed_gives_the_same_numbers_in_a_fresh_process(self) -> None:
        module = inspect.getmodule(type(self))
        assert module is not None and module.__file__ is not None
        fresh = _fresh_fingerprints(module.__file__)
        assert fresh[type(self).__name__] == self.fingerprint()

    def test_checkpoint_and_resume_are_exact(self, tmp_path: Path) -> None:
        steps = self.fit_steps
        straight = self.build()
        batch = self.batch()
        self._fit(straight, batch, steps)
        interrupted = self.build()
        self._fit(interrupted, batch, steps // 2, checkpoint_dir=tmp_path)
        resumed = self.build()
        self._fit(resumed, batch, steps, checkpoint_dir=tmp_path, resume=True)
        expected = straight.state_dict()
        got = resumed.state_dict()
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.equal(value, got[key]), key

    def test_masked_padding_never_changes_a_prediction(self) -> None:
        batch = self.batch(torch.float64)
        padded = self.padded(batch)
        if padded is None:
            assert self.padding_reason, "padded() returned None without a padding_reason"
            pytest.skip(self.padding_reason)
        model = self.build(torch.float64).eval()
        with torch.no_grad():
            mean, var = _moments(self.prediction(model, batch))
            mean_p, var_p = _moments(self.prediction(model, padded))
        torch.testing.assert_close(mean_p, mean, rtol=1e-9, atol=self.atol, equal_nan=True)
        torch.testing.assert_close(var_p, var, rtol=1e-9, atol=self.atol, equal_nan=True)

    def test_non_finite_inputs_are_refused(self) -> None:
        model = self.build()
        bad = self.non_finite(self.batch())
        with pytest.raises(ValueError, match=NON_FINITE):
            model.loss(bad)  # type: ignore[operator]
        with pytest.raises(ValueError, match=NON_FINITE), torch.no_grad():
            model.predict_batch(bad)  # type: ignore[operator]
