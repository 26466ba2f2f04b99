"""Exact GP on complete space-time grids through Kronecker-structured covariances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gpytorch
import torch
from gpytorch.kernels import Kernel
from linear_operator.operators import KroneckerProductLinearOperator
from torch import Tensor, nn

from uqdyn.predictive import MultivariateNormal, Normal

from ._common import (
    _check_finite,
    _check_like,
    _check_noise,
    _check_positive_int,
    _check_tensor,
    _joint_predictive,
    _linalg,
    _to_like,
)
from .exact import _make_likelihood, _set_noise
from .kernels import make_kernel

__all__ = ["GridGP"]

_MAX_JOINT = 8192


def _kron_apply(matrices: Sequence[Tensor], values: Tensor) -> Tensor:
    """``(A_1 ⊗ ... ⊗ A_D) vec(values)`` for ``values (n_1, ..., n_D)``, row-major vec.

    Each ``A_d (m_d, n_d)`` acts on axis ``d``; returns shape ``(m_1, ..., m_D)``.
    """
    out = values
    for axis, matrix in enumerate(matrices):
        out = torch.movedim(torch.tensordot(matrix, out, dims=([1], [axis])), 0, axis)
    return out


def _outer(vectors: Sequence[Tensor]) -> Tensor:
    """Outer product ``v_1 ∘ ... ∘ v_D``, shape ``(n_1, ..., n_D)``."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out.unsqueeze(-1) * v
    return out


class GridGP(nn.Module):
    r"""Exact GP regression of a field observed on a complete grid (e.g. time x height x width).

    With a separable kernel :math:`k(x, x') = s \prod_{d} k_d(x_d, x'_d)` and data on the
    Cartesian product of the axes, the covariance of the ``N = n_1 ... n_D`` values is the
    Kronecker product :math:`K = s\, K_1 \otimes \dots \otimes K_D` (gpytorch
    ``KroneckerProductLinearOperator``). With the eigendecompositions
    :math:`K_d = Q_d \Lambda_d Q_d^\top` the marginal likelihood and the posterior cost
    :math:`O(N \sum_d n_d)` instead of :math:`O(N^3)`: a 64 x 64 grid with 100 times is a
    dense 409 600-point exact GP. Training maximises gpytorch's exact marginal likelihood on
    the ``KroneckerProductAddedDiagLinearOperator``; the posterior at a (new) grid with
    cross-covariances :math:`K_{*d}` is

    .. math:: \mu_* = m + (\otimes_d K_{*d} Q_d)(\Lambda + \sigma^2)^{-1}
       (\otimes_d Q_d^\top)(y - m), \qquad
       \operatorname{var} f_* = \operatorname{diag} K_{**}
       - (\otimes_d (K_{*d} Q_d)^{\circ 2}) (\Lambda + \sigma^2)^{-1}.

    The grid must be complete (no missing values): for scattered or partial observations use
    :class:`SparseGP`. Follows the device and dtype of the data given to :meth:`fit`.

    **Training contract.** A batch is a tuple ``(axes, values)``: a list of ``D`` coordinate
    tensors ``(n_d,)`` and the complete field ``values (n_1, ..., n_D)``. :meth:`loss`
    conditions the GP on it and returns the negative log marginal likelihood per grid point;
    :meth:`predict_batch` returns the leave-one-out predictive of every grid value given all
    others, :math:`\mathcal N(y_i - \alpha_i / P_{ii},\ 1 / P_{ii})` with
    :math:`P = (K + \sigma^2 I)^{-1}` and :math:`\alpha = P (y - m)`, whose diagonal is
    :math:`(\otimes_d Q_d^{\circ 2}) (\Lambda + \sigma^2)^{-1}` (Rasmussen & Williams 2006,
    sec. 5.4.2). :meth:`fit` is the recipe ``uqdyn.train.fit(gp, [(axes, values)])``. The
    conditioning grid lives in the buffers ``axis_0``, ..., ``axis_{D-1}`` and ``values``, so
    a state dict (and a checkpoint) carries it.

    Parameters
    ----------
    num_axes : int
        Number ``D`` of grid axes, e.g. 3 for ``(time, y, x)``.
    kernel : str or sequence of str
        One :func:`make_kernel` specification per axis (or one for all): 1-D stationary
        kernels such as ``"rbf"``, ``"matern32"``, ``"periodic"``.
    mean : {"constant", "zero"}
        Constant (learned) or zero prior mean.
    noise : float, optional
        Initial noise variance; default 1% of the variance of the values.
    min_noise : float
        Lower bound of the noise variance.

    References
    ----------
    Y. Saatçi, *Scalable inference for structured Gaussian process models*, PhD thesis,
    University of Cambridge, 2012. A. G. Wilson, E. Gilboa, A. Nehorai and J. P. Cunningham,
    "Fast kernel learning for multidimensional pattern extrapolation", NeurIPS 2014.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.gp import GridGP
    >>> t, y, x = torch.linspace(0, 1, 10), torch.linspace(0, 1, 8), torch.linspace(0, 1, 8)
    >>> field = torch.sin(3 * t)[:, None, None] * torch.cos(4 * x)[None, None, :] + 0 * y[:, None]
    >>> gp = GridGP(num_axes=3, kernel="rbf")
    >>> _ = gp.fit([t, y, x], field, steps=20, progress=False)
    >>> gp.predict().batch_shape
    torch.Size([10, 8, 8])
    """

    def __init__(
        self,
        num_axes: int,
        *,
        kernel: str | Sequence[str] = "rbf",
        mean: str = "constant",
        noise: float | None = None,
        min_noise: float = 1e-4,
    ) -> None:
        super().__init__()
        self.num_axes = _check_positive_int(num_axes, "num_axes")
        specs = [kernel] * num_axes if isinstance(kernel, (str, Kernel)) else list(kernel)
        if len(specs) != num_axes:
            raise ValueError(f"kernel has {len(specs)} entries; expected one per axis ({num_axes})")
        self.axis_kernels = nn.ModuleList([make_kernel(s, 1) for s in specs])
        for k in self.axis_kernels:
            if not getattr(k, "is_stationary", False):
                raise ValueError(f"axis kernel {k} is not stationary; expected a stationary kernel")
        if mean not in ("constant", "zero"):
            raise ValueError(f"mean={mean!r}; expected 'constant' or 'zero'")
        self.mean_constant = nn.Parameter(torch.zeros(()), requires_grad=mean == "constant")
        self.likelihood = _make_likelihood(1, min_noise)
        if noise is not None:
            _set_noise(self.likelihood, _check_noise(noise, min_noise))
        self._noise_given = noise is not None
        for d in range(num_axes):
            self.register_buffer(f"axis_{d}", torch.zeros(0))
        self.values: Tensor
        self.register_buffer("values", torch.zeros((0,) * num_axes))

    @property
    def _axes(self) -> list[Tensor] | None:
        """The conditioning grid's axes, or ``None`` before any data."""
        if self.values.numel() == 0:
            return None
        return [getattr(self, f"axis_{d}") for d in range(self.num_axes)]

    @property
    def _values(self) -> Tensor | None:
        return None if self.values.numel() == 0 else self.values

    def _set_data(self, axes: Sequence[Tensor], values: Tensor) -> None:
        for d, a in enumerate(axes):
            setattr(self, f"axis_{d}", a)
        self.values = values

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # the conditioning grid takes the stored shapes (no entry: no data)
        names = [f"axis_{d}" for d in range(self.num_axes)] + ["values"]
        for name in names:
            key = prefix + name
            current = getattr(self, name)
            if key not in state_dict:
                state_dict[key] = current.new_zeros((0,) * current.dim())
            setattr(self, name, current.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _check_batch(self, batch: Any) -> tuple[list[Tensor], Tensor]:
        """Checked ``(axes, values)`` of a batch, in the model's dtype and device."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(
                f"batch is a {type(batch).__name__}; expected a tuple (axes, values) of a list "
                f"of {self.num_axes} coordinate tensors and the values on their grid"
            )
        values = _check_tensor(batch[1], "values")
        axes = self._check_axes(batch[0], "axes", values)
        expected = tuple(a.shape[0] for a in axes)
        if tuple(values.shape) != expected:
            raise ValueError(f"values has shape {tuple(values.shape)}; expected {expected}")
        _check_finite(values, "values")
        return axes, values

    def _check_axes(self, axes: Any, name: str, like: Tensor | None) -> list[Tensor]:
        if not isinstance(axes, (list, tuple)) or len(axes) != self.num_axes:
            raise ValueError(
                f"{name} is {type(axes).__name__} of length {len(axes) if hasattr(axes, '__len__') else '?'}; "
                f"expected a list of {self.num_axes} 1-D coordinate tensors"
            )
        out = []
        for d, a in enumerate(axes):
            a = _check_tensor(a, f"{name}[{d}]")
            if a.dim() != 1 or a.shape[0] < 1:
                raise ValueError(f"{name}[{d}] has shape {tuple(a.shape)}; expected (n_{d},)")
            _check_finite(a, f"{name}[{d}]")
            if like is not None and (a.dtype != like.dtype or a.device != like.device):
                raise TypeError(
                    f"{name}[{d}] is {a.dtype} on {a.device}; expected {like.dtype} on "
                    f"{like.device} like the values"
                )
            out.append(a)
        return out

    def _factors(self, axes_a: Sequence[Tensor], axes_b: Sequence[Tensor]) -> list[Tensor]:
        return [
            k(a.unsqueeze(-1), b.unsqueeze(-1)).to_dense()
            for k, a, b in zip(self.axis_kernels, axes_a, axes_b, strict=True)
        ]

    @property
    def noise(self) -> Tensor:
        """Noise variance, shape ``()``."""
        return self.likelihood.noise.reshape(())

    def log_marginal_likelihood(self) -> Tensor:
        r"""Exact :math:`\log p(y)` of the fitted grid values, shape ``()``."""
        if self._axes is None or self._values is None:
            raise ValueError("the GridGP has no data; call fit(axes, values) first")
        return self._log_marginal_likelihood(self._axes, self._values)

    def _log_marginal_likelihood(self, axes: Sequence[Tensor], values: Tensor) -> Tensor:
        covar = KroneckerProductLinearOperator(*self._factors(axes, axes))
        mean = self.mean_constant.expand(values.numel())
        with _linalg(values.dtype, None, 3, 0):
            prior = gpytorch.distributions.MultivariateNormal(mean, covar)
            return self.likelihood(prior).log_prob(values.reshape(-1))

    def loss(self, batch: Any) -> Tensor:
        """Negative log marginal likelihood per grid point of ``batch = (axes, values)``.

        Conditions the GP on the grid (it becomes the stored data) and returns
        ``-log p(values) / values.numel()``, shape ``()``: what :meth:`fit` minimises.
        """
        axes, values = self._check_batch(batch)
        _check_like(self, values, "values")
        self._set_data(axes, values)
        return -self._log_marginal_likelihood(axes, values) / values.numel()

    def predict_batch(self, batch: Any) -> tuple[Normal, Tensor, None]:
        """Leave-one-out predictive of every value of ``batch = (axes, values)``.

        Each grid value is predicted (noisy) from all the others with the current
        hyperparameters (see the class documentation); the stored grid is not used.

        Returns
        -------
        tuple
            ``(Normal (n_1, ..., n_D), values, None)``.
        """
        axes, values = self._check_batch(batch)
        _check_like(self, values, "values")
        eig = [torch.linalg.eigh(k) for k in self._factors(axes, axes)]
        evals = _outer([e.eigenvalues for e in eig]).clamp_min(0.0)
        q = [e.eigenvectors for e in eig]
        weight = 1.0 / (evals + self.noise)
        rotated = weight * _kron_apply([qd.T for qd in q], values - self.mean_constant)
        alpha = _kron_apply(q, rotated)
        precision_diag = _kron_apply([qd.square() for qd in q], weight)
        mean = values - alpha / precision_diag
        variance = 1.0 / precision_diag
        if not bool(torch.isfinite(mean).all() and torch.isfinite(variance).all()):
            raise ValueError("the leave-one-out grid predictive is not finite; the fit diverged")
        return Normal(mean, variance.sqrt()), values, None

    def fit(
        self,
        axes: Sequence[Tensor],
        values: Tensor,
        *,
        steps: int = 100,
        lr: float = 0.05,
        optimizer: str = "adam",
        progress: bool = True,
    ) -> list[float]:
        """Fit hyperparameters to the complete grid ``values (n_1, ..., n_D)``.

        Parameters
        ----------
        axes : list of D Tensors, shapes (n_d,)
            Coordinates of each axis (e.g. times, then y and x positions).
        values : Tensor, shape (n_1, ..., n_D)
            The field on the grid, finite everywhere.
        steps, lr, optimizer, progress :
            As for :meth:`ExactGP.fit`.

        Returns
        -------
        list of float
            Negative log marginal likelihood per grid point after each step.
        """
        from uqdyn.train import fit

        steps = _check_positive_int(steps, "steps", 0)
        axes, values = self._check_batch((axes, values))
        first = self._axes is None
        _to_like(self, values)
        self._set_data(axes, values)
        if first:
            with torch.no_grad():
                if self.mean_constant.requires_grad:
                    self.mean_constant.fill_(float(values.mean()))
                var = float(values.var(unbiased=False)) if values.numel() > 1 else 1.0
                for k, a in zip(self.axis_kernels, axes, strict=True):
                    span = float(a.max() - a.min()) if a.numel() > 1 else 1.0
                    module: Any
                    for module in k.modules():
                        if getattr(module, "has_lengthscale", False) and not isinstance(
                            module, gpytorch.kernels.PeriodicKernel
                        ):
                            module.initialize(lengthscale=span / 10 or 1.0)
                        if isinstance(module, gpytorch.kernels.ScaleKernel):
                            module.initialize(outputscale=var ** (1.0 / self.num_axes))
                if not self._noise_given:
                    _set_noise(self.likelihood, max(0.01 * var, 2e-4))
        if steps == 0:
            return []
        result = fit(
            self,
            [(list(axes), values)],
            steps=steps,
            optimizer=optimizer,
            lr=lr,
            device=values.device,
            progress=progress,
            desc="GridGP fit",
        )
        return [float(row["loss"]) for row in result.history]  # type: ignore[arg-type]

    def predict(
        self, axes: Sequence[Tensor] | None = None, *, noisy: bool = True, joint: bool = False
    ) -> Normal | MultivariateNormal:
        """Posterior predictive on the grid spanned by ``axes`` (default: the training grid).

        Parameters
        ----------
        axes : list of D Tensors, shapes (m_d,), optional
            Coordinates of the prediction grid (e.g. future times and the same space).
        noisy : bool
            ``True``: noisy values; ``False``: the latent field.
        joint : bool
            ``True`` returns a dense ``MultivariateNormal`` over the ``M = m_1 ... m_D``
            flattened (row-major) values, batch shape ``(M,)``, allowed for ``M <= 8192``.

        Returns
        -------
        Normal of shape (m_1, ..., m_D), or MultivariateNormal of shape (M,)
        """
        if self._axes is None or self._values is None:
            raise ValueError("the GridGP has no data; call fit(axes, values) first")
        train_axes, values = self._axes, self._values
        new_axes = train_axes if axes is None else self._check_axes(axes, "axes", values)
        m_total = 1
        for a in new_axes:
            m_total *= a.shape[0]
        if joint and m_total > _MAX_JOINT:
            raise ValueError(
                f"joint=True on {m_total} grid points; expected at most {_MAX_JOINT} (the dense "
                "covariance would not fit): predict marginals or a smaller grid"
            )
        noise = self.noise
        eig = [torch.linalg.eigh(k) for k in self._factors(train_axes, train_axes)]
        evals = _outer([e.eigenvalues for e in eig]).clamp_min(0.0)
        q = [e.eigenvectors for e in eig]
        weight = 1.0 / (evals + noise)
        alpha_rot = weight * _kron_apply([qd.T for qd in q], values - self.mean_constant)
        cross = self._factors(new_axes, train_axes)
        rotated = [c @ qd for c, qd in zip(cross, q, strict=True)]
        mean = self.mean_constant + _kron_apply(rotated, alpha_rot)
        if joint:
            dense = rotated[0]
            prior = self._factors(new_axes, new_axes)
            prior_dense = prior[0]
            for r, p in zip(rotated[1:], prior[1:], strict=True):
                dense = torch.kron(dense, r)
                prior_dense = torch.kron(prior_dense, p)
            cov = prior_dense - (dense * weight.reshape(-1)) @ dense.T
            if noisy:
                cov = cov + noise * torch.eye(m_total, dtype=cov.dtype, device=cov.device)
            dist = gpytorch.distributions.MultivariateNormal(mean.reshape(-1), cov)
            return _joint_predictive(dist, 1, None, 3)
        prior_diag = _outer(
            [
                k(a.unsqueeze(-1), a.unsqueeze(-1), diag=True)
                for k, a in zip(self.axis_kernels, new_axes, strict=True)
            ]
        )
        variance = prior_diag - _kron_apply([r.square() for r in rotated], weight)
        variance = variance.clamp_min(torch.finfo(variance.dtype).eps * prior_diag.amax())
        if noisy:
            variance = variance + noise
        if not bool(torch.isfinite(mean).all() and torch.isfinite(variance).all()):
            raise ValueError("the grid predictive is not finite; the fit diverged")
        return Normal(mean, variance.sqrt())

    def forward(
        self, axes: Sequence[Tensor] | None = None, *, noisy: bool = True, joint: bool = False
    ) -> Normal | MultivariateNormal:
        """Same as :meth:`predict`."""
        return self.predict(axes, noisy=noisy, joint=joint)
