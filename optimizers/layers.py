"""Dropout and batch normalisation layers written from their definitions.

They take the same constructor arguments as ``torch.nn.Dropout``, ``torch.nn.BatchNorm1d``
and ``torch.nn.BatchNorm2d``, behave the same in train and eval mode, and register the same
parameters and buffers, so a ``state_dict()`` moves freely between ours and torch.nn's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Dropout(nn.Module):
    r"""Inverted dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural
    Networks from Overfitting", JMLR 15).

    In training mode each element is kept with probability 1 − p and zeroed otherwise; kept
    elements are scaled by 1/(1 − p) so that the expected output equals the input:

        m ~ Bernoulli(1 − p) elementwise,  y = x ⊙ m / (1 − p)

    In eval mode the layer is the identity (the scaling happens at training time, hence
    "inverted"). p = 0 is the identity in both modes; p = 1 outputs zeros in training.

    Args:
        p: probability of zeroing an element, in [0, 1]. Default 0.5.
        inplace: overwrite the input instead of allocating the output, like torch's.

    The mask is drawn from the global generator of the input's device, so
    ``torch.manual_seed`` makes it reproducible.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be a number in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x.mul_(0.0) if self.inplace else x * 0.0
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep)
        if self.inplace:
            return x.mul_(mask).div_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class _BatchNorm(nn.Module):
    r"""Batch normalisation over the channel dimension (Ioffe & Szegedy 2015, "Batch
    Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    ICML).

    For each channel c, with statistics over every other dimension (batch and spatial):

        y = (x − μ_c) / √(σ²_c + eps) · γ_c + β_c

    Training mode (or ``track_running_stats=False``) uses the batch mean μ and the *biased*
    batch variance σ² = mean((x − μ)²). Training with ``track_running_stats=True`` also updates

        running_mean ← (1 − f)·running_mean + f·μ
        running_var  ← (1 − f)·running_var  + f·σ²·n/(n − 1)   (unbiased, n values/channel)

    with f = momentum, or f = 1/num_batches_tracked (a cumulative average) when momentum is
    None. Eval mode with running statistics normalises with running_mean and running_var.

    Args:
        num_features: C, the number of channels (dimension 1 of the input).
        eps: added to the variance before the square root. Default 1e-5.
        momentum: f above, or None for the cumulative average. Default 0.1.
        affine: learn γ (``weight``, initially 1) and β (``bias``, initially 0).
        bias: with ``affine``, whether to learn β (keyword-only, as in torch 2.13).
        track_running_stats: keep running statistics and normalise with them in eval mode;
            if False, there are no buffers and batch statistics are used in both modes.
        device, dtype: of the parameters and buffers.
    """

    # Version 2 of torch.nn's batch norm state_dict added num_batches_tracked; ours has always
    # had it, so declaring the same version makes our state_dicts load into torch.nn's unchanged.
    _version = 2
    _expected_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory_kwargs))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Reset running_mean to 0, running_var to 1 and num_batches_tracked to 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and the affine parameters (γ = 1, β = 0)."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in self._expected_dims:
            expected = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(
                f"{type(self).__name__} expected {expected} input, got {x.dim()}D input "
                f"of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__} expected {self.num_features} channels in dimension 1, "
                f"got input of shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        reduce_dims = [0, *range(2, x.dim())]
        # Shape (1, C, 1, ...) so per-channel vectors broadcast against the input.
        channel_shape = [1, self.num_features] + [1] * (x.dim() - 2)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            count = x.numel() // self.num_features
            if count <= 1:
                raise ValueError(
                    f"{type(self).__name__} expected more than 1 value per channel when "
                    f"using batch statistics, got input of shape {tuple(x.shape)}"
                )
            mean = x.mean(dim=reduce_dims)
            var = (x - mean.view(channel_shape)).square().mean(dim=reduce_dims)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var * (count / (count - 1)))
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.view(channel_shape)) / torch.sqrt(var.view(channel_shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(channel_shape)
        if self.bias is not None:
            y = y + self.bias.view(channel_shape)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        # momentum=None: a cumulative average, each batch weighted 1/num_batches_tracked.
        factor = (
            self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        )
        self.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased_var, alpha=factor)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input over the C channels.

    Arguments, parameters and buffers as ``torch.nn.BatchNorm1d``; the rule is in
    :class:`_BatchNorm`.
    """

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input over the C channels.

    Arguments, parameters and buffers as ``torch.nn.BatchNorm2d``; the rule is in
    :class:`_BatchNorm`.
    """

    _expected_dims = (4,)
