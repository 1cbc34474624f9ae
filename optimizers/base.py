"""The base every optimizer in this package shares: one step loop and checked hyperparameters.

A subclass states its hyperparameters and their torch.optim defaults (``__init__``), checks
them (``_check_hyperparameters``), names the state entries its update reads
(``_state_keys``), creates the state of one parameter (``_init_state``) and updates a list
of parameters (``_update``) with either its per-tensor reference kernel or its multi-tensor
``torch._foreach_*`` kernel.

Everything else about a step is the same for every algorithm and lives here once: the
closure, skipping parameters without a gradient, ``maximize``, and weight decay (coupled or
decoupled, the composable pieces of :mod:`optimizers.weight_decay`).
"""

import functools
import itertools
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from optimizers import weight_decay

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


def _without_grad(step: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``step`` with gradients disabled, as torch.optim does.

    The graph breaks around it (torch.optim's ``_use_grad_for_differentiable`` has the same)
    make ``torch.compile`` trace the update as an inference graph, which updates the
    parameters and state in place instead of allocating copies of them.
    """

    @functools.wraps(step)
    def without_grad(*args: Any, **kwargs: Any) -> Any:
        import torch._dynamo  # imported on first use: it takes a second, as in torch.optim

        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(False)
            torch._dynamo.graph_break()
            return step(*args, **kwargs)
        finally:
            torch._dynamo.graph_break()
            torch.set_grad_enabled(previous)

    return without_grad


class Optimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose step is maximize → weight decay → the algorithm.

    Hyperparameters shared by every subclass: ``lr``, ``weight_decay``,
    ``decoupled_weight_decay`` (False: g ← g + λ·p before any state update; True:
    p ← p·(1 − lr·λ) before the update), ``maximize`` (g ← −g first) and ``foreach``
    (True: the multi-tensor kernel; False: the per-tensor reference kernel; None, the
    default: the multi-tensor kernel when every parameter of the group is on a CUDA device
    and the per-tensor kernel otherwise — torch.optim's rule, because on CPUs the per-tensor
    kernel is the faster one, see docs/BENCHMARKS.md).

    State is created lazily, on a parameter's first step with a gradient, so parameters
    that never receive one have no state.
    """

    # scalar state entries besides "step" that, like it, keep their own dtype and device
    _scalar_state_keys: tuple[str, ...] = ()
    # whether the update is right for complex parameters; most square or take the sign of
    # gradients elementwise, which is not
    _supports_complex = False

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first invalid hyperparameter in ``hparams``.

        Subclasses extend this with their own hyperparameters (calling ``super()`` first).
        """
        check_nonnegative("lr", hparams["lr"])
        check_nonnegative("weight_decay", hparams["weight_decay"])
        check_bool("decoupled_weight_decay", hparams["decoupled_weight_decay"])
        check_bool("maximize", hparams["maximize"])
        foreach = hparams["foreach"]
        if foreach is not None and not isinstance(foreach, bool):
            raise ValueError(f"foreach must be a bool or None, got {foreach!r}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, checking its hyperparameters as the constructor does."""
        self._check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from :meth:`state_dict` (ours or the torch.optim counterpart's).

        torch.optim casts every floating-point state entry except ``step`` to its
        parameter's dtype; the entries of ``_scalar_state_keys`` (NAdam's ``mu_product``)
        are put back as saved, so that a restored run continues bit-identically.
        """
        super().load_state_dict(state_dict)
        if not self._scalar_state_keys:
            return
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, param in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(saved_id, {})
            for key in self._scalar_state_keys:
                if key in saved:
                    self.state[param][key] = saved[key].clone()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # groups from a torch.optim state_dict lack the settings torch.optim's class lacks
        # (decoupled_weight_decay for SGD, Adagrad, RMSprop); they take this class's defaults
        for group in self.param_groups:
            for name, default in self.defaults.items():
                group.setdefault(name, default)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state entries the update reads, in the order ``_update`` receives them."""
        raise NotImplementedError

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """Return the initial state of ``param`` (called on its first step with a gradient)."""
        raise NotImplementedError

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        """Apply the algorithm to ``params`` given the effective gradients ``grads``.

        ``state`` maps each of ``_state_keys(group)`` to the list of that entry for
        ``params`` (None where a parameter has none yet). ``grads`` already include
        ``maximize`` and coupled weight decay, and decoupled decay has already been applied
        to ``params``. With ``foreach`` all of ``params`` share one device and dtype.
        """
        raise NotImplementedError

    @_without_grad
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step and return the closure's loss (None without one).

        Args:
            closure: re-evaluates the model and returns the loss; it runs with gradients
                enabled even though the update itself does not record them.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            keys = self._state_keys(group)
            params: list[Tensor] = []
            grads: list[Tensor] = []
            state_lists: list[list[Any]] = [[] for _ in keys]
            self._init_group(group, params, grads, *state_lists)
            if not params:
                continue

            if not _use_foreach(group["foreach"], params):
                grads = [
                    _effective_gradient(group, param, grad)
                    for param, grad in zip(params, grads, strict=True)
                ]
                self._update(
                    group, params, grads, dict(zip(keys, state_lists, strict=True)), foreach=False
                )
                continue
            # foreach kernels take tensors of one device and dtype (as torch.optim's do)
            buckets = self._group_tensors_by_device_and_dtype([params, grads, *state_lists])
            for (bucket_params, bucket_grads, *bucket_state), _ in buckets.values():
                bucket_grads = _effective_gradients_foreach(group, bucket_params, bucket_grads)
                bucket_state_by_key = dict(zip(keys, bucket_state, strict=True))
                self._update(group, bucket_params, bucket_grads, bucket_state_by_key, foreach=True)
        return loss

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        *state_lists: list[Any],
    ) -> None:
        """Fill ``params``, ``grads`` and ``state_lists`` with the group's parameters that
        have gradients, creating their state on their first step.

        The name and shape of torch.optim's method are kept on purpose: ``torch.compile``
        runs a method of this name eagerly, outside the traced graph, so state is created
        as real tensors and guarded, exactly as for torch.optim's optimizers.
        """
        keys = self._state_keys(group)
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            params.append(param)
            grads.append(grad)
            if not keys:  # a stateless update (plain SGD) keeps no state at all, as in torch
                continue
            state = self.state[param]
            if not state:
                if param.is_complex() and not self._supports_complex:
                    raise RuntimeError(
                        f"{type(self).__name__} supports real parameters only, got {param.dtype}"
                    )
                state.update(self._init_state(param, group))
            for key, values in zip(keys, state_lists, strict=True):
                values.append(state.get(key))


def _use_foreach(foreach: bool | None, params: list[Tensor]) -> bool:
    """The kernel a step uses: ``foreach`` when given, else multi-tensor on CUDA only."""
    if foreach is not None:
        return foreach
    return all(param.is_cuda for param in params)


def _effective_gradient(group: dict[str, Any], param: Tensor, grad: Tensor) -> Tensor:
    if group["maximize"]:
        grad = -grad
    return weight_decay.apply(
        grad,
        param,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        decoupled=group["decoupled_weight_decay"],
    )


def _effective_gradients_foreach(
    group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
) -> list[Tensor]:
    if group["maximize"]:
        grads = torch._foreach_neg(grads)
    return weight_decay.apply_foreach(
        grads,
        params,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        decoupled=group["decoupled_weight_decay"],
        grads_are_private=group["maximize"],
    )


# ---- step counters, kept as torch.optim keeps them ---------------------------------------


def new_step_count() -> Tensor:
    """A step counter at 0: a CPU scalar tensor of torch.optim's dtype for it.

    Same device and dtype as torch.optim's ``state["step"]`` (float32, or float64 when that is
    the default dtype), so state_dicts are interchangeable; on the CPU because reading a CPU
    scalar costs no device synchronisation.
    """
    return torch.tensor(0.0, dtype=_scalar_dtype())


def new_scalar_state(value: float) -> Tensor:
    """A scalar state entry other than the step (NAdam's ``mu_product``), stored like it."""
    return torch.tensor(value, dtype=_scalar_dtype())


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def increment_steps(steps: list[Tensor]) -> None:
    """Add 1 to every step counter with one foreach call."""
    if not torch.compiler.is_compiling() and steps[0].is_cpu:
        # a tensor 1 (with alpha to pick the overload) is wrapped once, not once per counter
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


def scalar_value(scalar: Tensor) -> float | Tensor:
    """A scalar state entry as a number for the update's coefficients.

    ``item()`` in eager mode (cheap on a CPU scalar). Under ``torch.compile`` the tensor
    itself, so that a step count that changes every step does not recompile the step, in
    float64 so that coefficients such as 1 − β1ᵗ are computed in the precision of the eager
    mode's Python floats rather than in the step's float32.
    """
    return scalar.to(torch.float64) if torch.compiler.is_compiling() else scalar.item()


def foreach_addcdiv_scaled_(
    targets: list[Tensor],
    numerators: list[Tensor],
    denominators: list[Tensor],
    scales: list[float] | list[Tensor],
) -> None:
    """targets[i] ← targets[i] + scales[i]·numerators[i] / denominators[i], in place.

    ``scales`` are numbers in eager mode: one foreach call. Under ``torch.compile`` they
    are scalar tensors (from :func:`scalar_value`); passed stacked as ``_foreach_addcdiv_``'s
    scales (as torch.optim's non-capturable path does) they fail to trace in torch 2.13
    ("Expected scalars to be on CPU"), so there the scaling is a separate multiplication,
    which the compiler fuses with the division.
    """
    if torch.compiler.is_compiling():
        torch._foreach_addcdiv_(targets, torch._foreach_mul(numerators, scales), denominators)
    else:
        torch._foreach_addcdiv_(targets, numerators, denominators, scales)


# ---- hyperparameter checks with the messages users see ----------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_real(name: str, value: object) -> None:
    """Raise unless ``value`` is a real number (bools and tensors are not)."""
    if not _is_real(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")


def check_nonnegative(name: str, value: object) -> None:
    """Raise unless ``value`` is a real number >= 0 (NaN is not)."""
    check_real(name, value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_in_unit_interval(name: str, value: object, *, closed: bool) -> None:
    """Raise unless ``value`` is in [0, 1] (``closed``) or [0, 1)."""
    check_real(name, value)
    inside = 0 <= value <= 1 if closed else 0 <= value < 1
    if not inside:
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


def check_betas(betas: object) -> None:
    """Raise unless ``betas`` is a pair (tuple or list) of numbers in [0, 1)."""
    if not (isinstance(betas, tuple | list) and len(betas) == 2 and all(map(_is_real, betas))):
        raise ValueError(f"betas must be a pair of real numbers (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        check_in_unit_interval(f"betas[{index}]", beta, closed=False)


def check_bool(name: str, value: object) -> None:
    """Raise unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
