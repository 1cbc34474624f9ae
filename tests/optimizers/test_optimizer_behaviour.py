"""The torch.optim.Optimizer contract every optimizer here keeps, beyond its update rule.

State dicts (resuming bit-identically, interchange with torch.optim), closures, parameter
groups, parameters without gradients, untouched gradients, weight decay composed the same
way for every algorithm, the registry's variants, and ``torch.compile``.
"""

import inspect
import io
from typing import Any

import pytest
import torch

import optimizers

NAMES = sorted(optimizers.OPTIMIZERS)
BOTH_KERNELS = pytest.mark.parametrize("foreach", [False, True], ids=["reference", "foreach"])
# settings under which each optimizer keeps every state entry it can have
FULL_STATE: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1},
    "momentum": {"lr": 0.05},
    "nesterov": {"lr": 0.05},
    "adagrad": {"lr_decay": 0.01, "initial_accumulator_value": 0.1},
    "rmsprop": {"centered": True, "momentum": 0.5},
    "adam": {"amsgrad": True},
    "adamw": {"amsgrad": True},
    "amsgrad": {},
    "nadam": {},
    "lion": {"lr": 1e-3},
}
TORCH_COUNTERPARTS = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
}


def _params(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in [(4, 3), (), (5,)]]


def _gradient_sequence(params: list[torch.Tensor], steps: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)
    return [
        [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        for _ in range(steps)
    ]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()


def _assert_equal_states(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    state_a, state_b = a.state_dict()["state"], b.state_dict()["state"]
    assert sorted(state_a) == sorted(state_b)
    for index, entries in state_a.items():
        assert sorted(entries) == sorted(state_b[index])
        for key, value in entries.items():
            assert torch.equal(value, state_b[index][key]), (index, key)


def test_registry_holds_the_documented_names():
    assert set(optimizers.OPTIMIZERS) == {
        "sgd", "momentum", "nesterov", "adagrad", "rmsprop",
        "adam", "adamw", "nadam", "amsgrad", "lion",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_build_optimizer_returns_a_torch_optimizer_of_the_registered_class(name: str):
    opt = optimizers.build_optimizer(name, _params())
    assert isinstance(opt, torch.optim.Optimizer)
    assert type(opt) is optimizers.OPTIMIZERS[name]


@pytest.mark.parametrize("name", sorted(TORCH_COUNTERPARTS))
def test_arguments_and_defaults_are_those_of_torch_optim(name: str):
    ours = inspect.signature(optimizers.OPTIMIZERS[name].__init__).parameters
    theirs = inspect.signature(TORCH_COUNTERPARTS[name].__init__).parameters
    # the only argument torch.optim lacks somewhere is decoupled_weight_decay (AdamW's is fixed)
    assert set(ours) - set(theirs) <= {"decoupled_weight_decay"}
    for arg in set(ours) & set(theirs) - {"self", "params"}:
        assert ours[arg].default == theirs[arg].default, arg


@pytest.mark.parametrize(
    ("variant", "base", "settings"),
    [
        ("momentum", "sgd", {"momentum": 0.9}),
        ("nesterov", "sgd", {"momentum": 0.9, "nesterov": True}),
        ("adamw", "adam", {"decoupled_weight_decay": True, "weight_decay": 1e-2}),
        ("amsgrad", "adam", {"amsgrad": True}),
    ],
)
def test_variants_are_their_base_optimizer_with_other_defaults(
    variant: str, base: str, settings: dict[str, Any]
):
    variant_params, base_params = _params(), _params()
    variant_opt = optimizers.build_optimizer(variant, variant_params, lr=0.01)
    base_opt = optimizers.build_optimizer(base, base_params, lr=0.01, **settings)
    assert variant_opt.defaults == base_opt.defaults
    grads = _gradient_sequence(variant_params, 20)
    _run(variant_opt, variant_params, grads)
    _run(base_opt, base_params, grads)
    for p, q in zip(variant_params, base_params, strict=True):
        assert torch.equal(p, q)


@BOTH_KERNELS
@pytest.mark.parametrize("name", NAMES)
def test_a_run_restored_from_a_state_dict_continues_bit_identically(name: str, foreach: bool):
    hparams = {**FULL_STATE[name], "foreach": foreach}
    grads = _gradient_sequence(_params(), 12)

    uninterrupted = _params()
    uninterrupted_opt = optimizers.build_optimizer(name, uninterrupted, **hparams)
    _run(uninterrupted_opt, uninterrupted, grads)

    first_half = _params()
    first_opt = optimizers.build_optimizer(name, first_half, **hparams)
    _run(first_opt, first_half, grads[:5])
    checkpoint = io.BytesIO()
    torch.save({"params": first_half, "optimizer": first_opt.state_dict()}, checkpoint)
    checkpoint.seek(0)
    saved = torch.load(checkpoint)

    resumed = [p.clone() for p in saved["params"]]
    resumed_opt = optimizers.build_optimizer(name, resumed, **hparams)
    resumed_opt.load_state_dict(saved["optimizer"])
    _run(resumed_opt, resumed, grads[5:])

    for p, q in zip(uninterrupted, resumed, strict=True):
        assert torch.equal(p, q)
    _assert_equal_states(uninterrupted_opt, resumed_opt)


def _handed_over_run(name: str, first: str, second: str) -> tuple[list, Any, list, Any]:
    """5 steps with ``first`` ("torch" or "ours"), 5 more with ``second`` loaded from its
    state_dict; and 10 steps of torch.optim alone to compare with."""
    settings = {"sgd": {"momentum": 0.9}, "rmsprop": {"centered": True, "momentum": 0.5}}
    hparams = settings.get(name, {})
    build = {
        # torch's foreach kernels round exactly as ours do (its NAdam loop computes √(v/bc2)
        # where its foreach path and ours compute √v/√bc2), so the runs can match bit for bit
        "torch": lambda ps: TORCH_COUNTERPARTS[name](ps, foreach=True, **hparams),
        "ours": lambda ps: optimizers.build_optimizer(name, ps, **hparams),
    }
    grads = _gradient_sequence(_params(), 10)
    reference = _params()
    reference_opt = build["torch"](reference)
    _run(reference_opt, reference, grads)

    handed_over = _params()
    first_opt = build[first](handed_over)
    _run(first_opt, handed_over, grads[:5])
    second_opt = build[second](handed_over)
    second_opt.load_state_dict(first_opt.state_dict())
    _run(second_opt, handed_over, grads[5:])
    return reference, reference_opt, handed_over, second_opt


@pytest.mark.parametrize("name", sorted(TORCH_COUNTERPARTS))
def test_continues_a_torch_optim_run_from_its_state_dict(name: str):
    reference, reference_opt, handed_over, ours_opt = _handed_over_run(name, "torch", "ours")
    for p, q in zip(reference, handed_over, strict=True):
        assert torch.equal(p, q)
    _assert_equal_states(reference_opt, ours_opt)


@pytest.mark.parametrize("name", sorted(TORCH_COUNTERPARTS))
def test_torch_optim_continues_our_run_from_our_state_dict(name: str):
    reference, reference_opt, handed_over, torch_opt = _handed_over_run(name, "ours", "torch")
    if name == "nadam":
        # torch.optim's load_state_dict casts NAdam's float32 mu_product to the float64 of
        # the parameters (its own checkpoints too), so its run drifts in the last digits
        for p, q in zip(reference, handed_over, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=0.0)
        return
    for p, q in zip(reference, handed_over, strict=True):
        assert torch.equal(p, q)
    _assert_equal_states(reference_opt, torch_opt)


@pytest.mark.parametrize("name", NAMES)
def test_closure_runs_with_gradients_enabled_and_step_returns_its_loss(name: str):
    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = optimizers.build_optimizer(name, model.parameters(), **FULL_STATE[name])
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    seen_grad_enabled = []

    def closure() -> torch.Tensor:
        seen_grad_enabled.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_grad_enabled()
    with torch.no_grad():
        opt.step(closure)
        assert not torch.is_grad_enabled()
    assert seen_grad_enabled == [True, True]
    assert isinstance(loss, torch.Tensor)
    assert loss.requires_grad
    # the first loss is that of the parameters before any step
    torch.testing.assert_close(
        loss, torch.nn.functional.mse_loss(torch.nn.functional.linear(x, *before), y)
    )
    for p, old in zip(model.parameters(), before, strict=True):
        assert not torch.equal(p, old)


@pytest.mark.parametrize("name", NAMES)
def test_step_without_closure_returns_none_and_keeps_grad_mode(name: str):
    params = _params()
    opt = optimizers.build_optimizer(name, params)
    for p in params:
        p.grad = torch.ones_like(p)
    assert torch.is_grad_enabled()
    assert opt.step() is None
    assert torch.is_grad_enabled()


@BOTH_KERNELS
@pytest.mark.parametrize("name", NAMES)
def test_parameters_without_gradients_are_skipped_and_get_no_state(name: str, foreach: bool):
    params = _params()
    frozen_before = params[0].clone()
    opt = optimizers.build_optimizer(
        name,
        params,
        weight_decay=0.1,
        decoupled_weight_decay=True,
        foreach=foreach,
        **FULL_STATE[name],
    )
    for _ in range(3):
        params[0].grad = None
        for p in params[1:]:
            p.grad = torch.ones_like(p)
        opt.step()
    assert torch.equal(params[0], frozen_before)
    assert params[0] not in opt.state
    assert all(p in opt.state for p in params[1:])


@BOTH_KERNELS
@pytest.mark.parametrize("name", NAMES)
def test_a_step_with_no_gradients_at_all_changes_nothing(name: str, foreach: bool):
    params = _params()
    before = [p.clone() for p in params]
    opt = optimizers.build_optimizer(name, params, weight_decay=0.1, foreach=foreach)
    opt.step()
    assert len(opt.state) == 0
    for p, old in zip(params, before, strict=True):
        assert torch.equal(p, old)


@BOTH_KERNELS
@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_left_untouched(name: str, foreach: bool):
    # Nesterov momentum is where torch.optim's foreach SGD writes into the gradients
    momentum = (
        {"momentum": 0.9, "nesterov": True} if name in ("sgd", "momentum", "nesterov") else {}
    )
    for settings in [{"maximize": True, "weight_decay": 0.1}, {"weight_decay": 0.1}, {}]:
        params = _params()
        opt = optimizers.build_optimizer(
            name, params, decoupled_weight_decay=False, foreach=foreach, **settings, **momentum
        )
        for _ in range(2):  # the second step also exercises existing momentum buffers
            grads = [torch.randn_like(p) for p in params]
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
            for p, g in zip(params, grads, strict=True):
                assert torch.equal(p.grad, g), settings


@BOTH_KERNELS
@pytest.mark.parametrize("name", NAMES)
def test_decoupled_weight_decay_shrinks_parameters_before_the_update(name: str, foreach: bool):
    lr, decay = 0.01, 0.3
    decayed, by_hand = _params(), _params()
    decayed_opt = optimizers.build_optimizer(
        name, decayed, lr=lr, weight_decay=decay, decoupled_weight_decay=True, foreach=foreach
    )
    by_hand_opt = optimizers.build_optimizer(
        name, by_hand, lr=lr, weight_decay=0.0, foreach=foreach
    )
    for step_grads in _gradient_sequence(decayed, 10):
        for p, q, g in zip(decayed, by_hand, step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
            q.mul_(1 - lr * decay)
        decayed_opt.step()
        by_hand_opt.step()
    for p, q in zip(decayed, by_hand, strict=True):
        assert torch.equal(p, q)


@BOTH_KERNELS
@pytest.mark.parametrize("name", NAMES)
def test_coupled_weight_decay_adds_the_decay_to_the_gradient(name: str, foreach: bool):
    lr, decay = 0.01, 0.3
    decayed, by_hand = _params(), _params()
    decayed_opt = optimizers.build_optimizer(
        name, decayed, lr=lr, weight_decay=decay, decoupled_weight_decay=False, foreach=foreach
    )
    by_hand_opt = optimizers.build_optimizer(
        name, by_hand, lr=lr, weight_decay=0.0, foreach=foreach
    )
    for step_grads in _gradient_sequence(decayed, 10):
        for p, q, g in zip(decayed, by_hand, step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.add(q, alpha=decay)
        decayed_opt.step()
        by_hand_opt.step()
    for p, q in zip(decayed, by_hand, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", NAMES)
def test_each_parameter_group_uses_its_own_settings(name: str):
    moving, still = _params(0), _params(1)
    still_before = [p.clone() for p in still]
    opt = optimizers.build_optimizer(name, [{"params": moving}, {"params": still, "lr": 0.0}])
    _run(opt, moving + still, _gradient_sequence(moving + still, 3))
    for p, old in zip(still, still_before, strict=True):
        assert torch.equal(p, old)
    assert not torch.equal(moving[0], _params(0)[0])


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_in_one_group_match_the_reference_kernel(name: str):
    # the foreach path splits a group by device and dtype; the result must not depend on it
    runs = []
    for foreach in (False, True):
        params = _params(dtype=torch.float32) + _params(seed=1, dtype=torch.float64)
        opt = optimizers.build_optimizer(name, params, foreach=foreach, **FULL_STATE[name])
        _run(opt, params, _gradient_sequence(params, 10))
        runs.append((params, opt))
    (reference, reference_opt), (foreach_params, foreach_opt) = runs
    for p, q in zip(reference, foreach_params, strict=True):
        assert torch.equal(p, q)
    _assert_equal_states(reference_opt, foreach_opt)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("foreach", "expected"), [(None, False), (True, True), (False, False)], ids=str
)
def test_default_kernel_on_cpu_is_the_per_tensor_one(
    name: str, foreach: bool | None, expected: bool, monkeypatch: pytest.MonkeyPatch
):
    # torch.optim's rule: multi-tensor only for CUDA tensors (on CPUs the loop is faster)
    params = _params()
    opt = optimizers.build_optimizer(name, params, foreach=foreach)
    used = []
    original = opt._update

    def recording_update(*args: Any, foreach: bool, **kwargs: Any) -> None:
        used.append(foreach)
        original(*args, foreach=foreach, **kwargs)

    monkeypatch.setattr(opt, "_update", recording_update)
    _run(opt, params, _gradient_sequence(params, 2))
    assert used and all(choice is expected for choice in used)


def test_learning_rate_schedulers_drive_the_learning_rate():
    param = torch.zeros(2)
    opt = optimizers.build_optimizer("sgd", [param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for expected_lr in [1.0, 0.5, 0.25]:
        before = param.clone()
        param.grad = torch.ones(2)
        opt.step()
        scheduler.step()
        assert torch.equal(before - param, torch.full((2,), expected_lr))


# one optimizer per kernel (adamw, amsgrad and nesterov run Adam's and SGD's)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "adagrad", "rmsprop", "adam", "nadam", "lion"]
)
def test_compiled_step_matches_eager_and_does_not_recompile_every_step(name: str):
    import torch._dynamo.testing

    torch._dynamo.reset()
    compiled, eager = _params(), _params()
    hparams = FULL_STATE[name]
    compiled_opt = optimizers.build_optimizer(name, compiled, **hparams)
    eager_opt = optimizers.build_optimizer(name, eager, **hparams)
    counter = torch._dynamo.testing.CompileCounter()
    compiled_step = torch.compile(compiled_opt.step, backend=counter)
    frames_after_two_steps = None
    for index, step_grads in enumerate(_gradient_sequence(compiled, 6)):
        for p, q, g in zip(compiled, eager, step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        compiled_step()
        eager_opt.step()
        if index == 1:  # momentum buffers appear on the first step: one recompile at most
            frames_after_two_steps = counter.frame_count
    assert counter.frame_count == frames_after_two_steps
    # not bit-identical: compiled, the scalar coefficients are tensor arithmetic (e.g. NAdam's
    # float32 mu_product times a float64 μ) where eager mode rounds Python floats differently
    for p, q in zip(compiled, eager, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov"])
def test_sgd_updates_complex_parameters_as_torch_optim_does(name: str):
    # SGD's update is linear in the gradient, so it is right for complex parameters too
    generator = torch.Generator().manual_seed(3)
    ours = [torch.randn(4, dtype=torch.complex128, generator=generator)]
    theirs = [ours[0].clone()]
    ours_opt = optimizers.build_optimizer(name, ours, lr=0.1)
    defaults = ours_opt.defaults
    torch_opt = torch.optim.SGD(
        theirs, lr=0.1, momentum=defaults["momentum"], nesterov=defaults["nesterov"]
    )
    for _ in range(5):
        grad = torch.randn(4, dtype=torch.complex128, generator=generator)
        ours[0].grad, theirs[0].grad = grad.clone(), grad.clone()
        ours_opt.step()
        torch_opt.step()
    # not bit-identical for nesterov, whose p − lr·(g + μ·b) is two in-place steps here
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=0.0)
