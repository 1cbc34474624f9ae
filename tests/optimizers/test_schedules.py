"""Learning-rate schedules against torch.optim.lr_scheduler and their formulas.

torch's schedulers update the learning rate recursively (lr ← lr · ratio), which
accumulates rounding error step by step; most also expose ``_get_closed_form_lr()``, the
same schedule evaluated directly from the base lr. Ours are closed forms. Each sequence of
≥ 150 steps is compared with torch's closed form where it exists and with torch's recursive
values, both to rtol 1e-12: over 150 steps the recursive drift measured here stays below
3e-15 (it would take far longer runs to reach 1e-12).
"""

import warnings

import pytest
import torch
from torch.optim import lr_scheduler

from optimizers.schedules import (
    SCHEDULES,
    ReduceLROnPlateau,
    ScheduledLR,
    build_lr_scheduler,
    build_schedule,
    cosine,
    warmup,
)

LRS = (0.1, 0.03)  # two param groups with different learning rates
STEPS = 150


def sgd(lrs=LRS) -> torch.optim.SGD:
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups)


def our_lrs(schedule, steps: int = STEPS) -> list[list[float]]:
    """Learning rates of both groups at t = 0..steps."""
    optimizer = sgd()
    scheduler = ScheduledLR(optimizer, schedule)
    lrs = [scheduler.get_last_lr()]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return lrs


def torch_lrs(make_scheduler, lr: float, steps: int = STEPS):
    """torch's learning rates of one group with base ``lr`` at t = 0..steps: recursive
    (``get_last_lr``) and closed form (``_get_closed_form_lr``, None if not exposed)."""
    optimizer = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer, lr)
    closed = hasattr(scheduler, "_get_closed_form_lr")
    recursive, closed_form = [], []
    for t in range(steps + 1):
        if t > 0:
            optimizer.step()
            scheduler.step()
        recursive.append(scheduler.get_last_lr()[0])
        closed_form.append(scheduler._get_closed_form_lr()[0] if closed else None)
    return recursive, closed_form if closed else None


def group(lrs: list[list[float]], index: int) -> torch.Tensor:
    return torch.tensor([step[index] for step in lrs], dtype=torch.float64)


def as_tensor(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sequential_closed_form(first, second, milestone: int):
    """Closed form of SequentialLR([first, second], [milestone]) from torch's own closed
    forms of the two parts (SequentialLR itself has none)."""

    def make(optimizer, lr):
        return _SequentialClosedForm(first(optimizer, lr), second(optimizer, lr), milestone)

    return make


class _SequentialClosedForm:
    def __init__(self, first, second, milestone):
        self.first, self.second, self.milestone, self.t = first, second, milestone, 0

    def step(self):
        self.t += 1

    def _get_closed_form_lr(self):
        part = self.first if self.t < self.milestone else self.second
        part.last_epoch = self.t if self.t < self.milestone else self.t - self.milestone
        return part._get_closed_form_lr()

    get_last_lr = _get_closed_form_lr


# id, our schedule, torch scheduler for one group with base lr
CASES = [
    (
        "step",
        ("step", {"step_size": 7, "gamma": 0.5}),
        lambda o, lr: lr_scheduler.StepLR(o, 7, 0.5),
    ),
    (
        "multistep",
        ("multistep", {"milestones": [10, 25, 60, 61, 120], "gamma": 0.3}),
        lambda o, lr: lr_scheduler.MultiStepLR(o, [10, 25, 60, 61, 120], 0.3),
    ),
    (
        "exponential",
        ("exponential", {"gamma": 0.97}),
        lambda o, lr: lr_scheduler.ExponentialLR(o, 0.97),
    ),
    (
        "polynomial-quadratic",
        ("polynomial", {"total_steps": 120, "power": 2.0}),
        lambda o, lr: lr_scheduler.PolynomialLR(o, total_iters=120, power=2.0),
    ),
    (
        "polynomial-sqrt",
        ("polynomial", {"total_steps": 140, "power": 0.5}),
        lambda o, lr: lr_scheduler.PolynomialLR(o, total_iters=140, power=0.5),
    ),
    (
        "cosine",
        ("cosine", {"total_steps": STEPS}),
        lambda o, lr: lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    ),
    (
        "cosine-eta-min",
        ("cosine", {"total_steps": STEPS, "end_factor": 0.05}),
        lambda o, lr: lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.05 * lr),
    ),
    (
        "warmup-linear",
        ("warmup", {"warmup_steps": 30, "start_factor": 0.1}),
        lambda o, lr: lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=30),
    ),
]


@pytest.mark.parametrize(
    ("name_and_kwargs", "make_torch"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_schedule_matches_torch_closed_form_and_recursive_lrs(name_and_kwargs, make_torch) -> None:
    name, kwargs = name_and_kwargs
    ours = our_lrs(build_schedule(name, **kwargs))
    for index, lr in enumerate(LRS):
        recursive, closed_form = torch_lrs(make_torch, lr)
        torch.testing.assert_close(group(ours, index), as_tensor(closed_form), rtol=1e-12, atol=0)
        torch.testing.assert_close(group(ours, index), as_tensor(recursive), rtol=1e-12, atol=0)


WARMUP_STEPS = 20


def torch_warmup_cosine(optimizer, lr):
    return lr_scheduler.SequentialLR(
        optimizer,
        [
            lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=WARMUP_STEPS),
            lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=STEPS - WARMUP_STEPS, eta_min=0.01 * lr
            ),
        ],
        milestones=[WARMUP_STEPS],
    )


def test_warmup_then_cosine_matches_torch_sequential_lr() -> None:
    # A run of STEPS steps: 20 warm-up steps, then a cosine over the remaining 130.
    ours = our_lrs(
        build_schedule(
            "warmup",
            warmup_steps=WARMUP_STEPS,
            start_factor=0.1,
            then={"name": "cosine", "total_steps": STEPS - WARMUP_STEPS, "end_factor": 0.01},
        )
    )
    closed_form_reference = sequential_closed_form(
        lambda o, lr: lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=WARMUP_STEPS),
        lambda o, lr: lr_scheduler.CosineAnnealingLR(
            o, T_max=STEPS - WARMUP_STEPS, eta_min=0.01 * lr
        ),
        WARMUP_STEPS,
    )
    for index, lr in enumerate(LRS):
        recursive, _ = torch_lrs(torch_warmup_cosine, lr)
        _, closed_form = torch_lrs(closed_form_reference, lr)
        torch.testing.assert_close(group(ours, index), as_tensor(closed_form), rtol=1e-12, atol=0)
        torch.testing.assert_close(group(ours, index), as_tensor(recursive), rtol=1e-12, atol=0)
    assert group(ours, 0)[WARMUP_STEPS].item() == pytest.approx(LRS[0], rel=1e-15)


def test_warmup_then_step_matches_torch_sequential_lr() -> None:
    ours = our_lrs(
        warmup(10, start_factor=1e-3, then={"name": "step", "step_size": 15, "gamma": 0.5})
    )

    def make(optimizer, lr):
        return lr_scheduler.SequentialLR(
            optimizer,
            [
                lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=10),
                lr_scheduler.StepLR(optimizer, 15, 0.5),
            ],
            milestones=[10],
        )

    for index, lr in enumerate(LRS):
        recursive, _ = torch_lrs(make, lr)
        torch.testing.assert_close(group(ours, index), as_tensor(recursive), rtol=1e-12, atol=0)


def test_warmup_starts_from_zero_by_default() -> None:
    schedule = warmup(4)
    assert [schedule(t) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


ONE_CYCLE_SETTINGS = [
    {},
    {"pct_start": 0.25, "anneal_strategy": "linear"},
    {"three_phase": True, "div_factor": 10.0, "final_div_factor": 100.0},
    {"three_phase": True, "pct_start": 0.4, "anneal_strategy": "linear"},
]


@pytest.mark.parametrize("settings", ONE_CYCLE_SETTINGS, ids=lambda s: str(s) or "defaults")
def test_one_cycle_matches_torch_one_cycle_lr(settings) -> None:
    # torch's OneCycleLR computes each lr directly (no recursion), so rtol 1e-12 throughout.
    # Its max_lr is our param group's lr; ours does not cycle momentum.
    ours = our_lrs(build_schedule("one_cycle", total_steps=STEPS, **settings), steps=STEPS - 1)
    for index, lr in enumerate(LRS):

        def make(optimizer, lr):
            return lr_scheduler.OneCycleLR(
                optimizer, max_lr=lr, total_steps=STEPS, cycle_momentum=False, **settings
            )

        recursive, _ = torch_lrs(make, lr, steps=STEPS - 1)
        # torch's linear anneal (end − start)·pct + start is off by a few ulps of max_lr
        # near the end of the cycle, where the lr is only 4e-7·max_lr; ours is exact there.
        atol = 4 * torch.finfo(torch.float64).eps * lr if "anneal_strategy" in settings else 0
        torch.testing.assert_close(group(ours, index), as_tensor(recursive), rtol=1e-12, atol=atol)
    # The group's lr is the peak (reached exactly when pct_start·T is a whole step).
    assert max(step[0] for step in ours) <= LRS[0]
    final_factor = 1 / settings.get("div_factor", 25.0) / settings.get("final_div_factor", 1e4)
    assert ours[-1][0] == pytest.approx(LRS[0] * final_factor, rel=1e-14)


def test_one_cycle_holds_its_final_value_past_total_steps() -> None:
    schedule = build_schedule("one_cycle", total_steps=100)
    assert schedule(99) == pytest.approx(1 / 25 / 1e4, rel=1e-12)
    assert schedule(100) == schedule(500) == schedule(99)


def test_cosine_holds_its_final_value_past_total_steps() -> None:
    # torch's CosineAnnealingLR rises again after T_max; ours stays at the minimum.
    schedule = cosine(total_steps=50, end_factor=0.1)
    assert schedule(50) == pytest.approx(0.1, rel=1e-15)
    assert schedule(51) == schedule(1000) == schedule(50)


@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_follows_its_formula(staircase: bool) -> None:
    ours = our_lrs(
        build_schedule("inverse_time", decay_steps=10, decay_rate=0.5, staircase=staircase)
    )
    for index, lr in enumerate(LRS):
        expected = [
            lr * 1 / (1 + 0.5 * ((t // 10) if staircase else t / 10)) for t in range(STEPS + 1)
        ]
        torch.testing.assert_close(group(ours, index), as_tensor(expected), rtol=1e-14, atol=0)
    assert ours[10][0] == pytest.approx(LRS[0] / 1.5, rel=1e-15)


def test_constant_keeps_the_base_learning_rates() -> None:
    assert our_lrs(build_schedule("constant"), steps=5) == [list(LRS)] * 6


def test_warmup_accepts_a_name_a_mapping_or_a_schedule() -> None:
    by_schedule = warmup(5, then=cosine(20))
    by_mapping = warmup(5, then={"name": "cosine", "total_steps": 20})
    assert [by_schedule(t) for t in range(30)] == [by_mapping(t) for t in range(30)]
    assert by_schedule(5) == 1.0 and by_schedule(15) == pytest.approx(0.5, rel=1e-15)
    by_name = warmup(4, then="constant", start_factor=0.5)
    assert [by_name(t) for t in range(6)] == [0.5, 0.625, 0.75, 0.875, 1.0, 1.0]


def plateau_metrics(mode: str) -> list[float]:
    """150 noisy values that alternate between 20 improving and 20 flat epochs."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(STEPS, generator=generator, dtype=torch.float64).tolist()
    base, values = 1.0, []
    for t in range(STEPS):
        if (t // 20) % 2 == 0:
            base *= 0.97
        loss = base * (1 + 0.002 * noise[t])
        values.append(loss if mode == "min" else 1.0 - loss)
    return values


PLATEAU_SETTINGS = [
    {},
    {"mode": "max"},
    {"patience": 0, "factor": 0.7},
    {"patience": 3, "factor": 0.5, "cooldown": 2, "threshold": 0.01, "threshold_mode": "abs"},
    {"mode": "max", "patience": 2, "threshold": 0.005, "threshold_mode": "abs", "cooldown": 1},
    {"patience": 2, "factor": 0.2, "min_lr": [0.01, 0.001]},
    {"patience": 1, "factor": 0.5, "min_lr": 0.02, "eps": 1e-3},
]


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS, ids=lambda s: str(s) or "defaults")
def test_reduce_on_plateau_matches_torch(settings) -> None:
    metrics = plateau_metrics(settings.get("mode", "min"))
    optimizer = sgd()
    ours = ReduceLROnPlateau(optimizer, **settings)
    reference_optimizer = sgd()
    reference = lr_scheduler.ReduceLROnPlateau(reference_optimizer, **settings)
    reductions = 0
    for metric in metrics:
        before = ours.get_last_lr()
        ours.step(metric)
        reference.step(metric)
        assert ours.get_last_lr() == reference.get_last_lr()
        assert (ours.best, ours.num_bad_epochs) == (reference.best, reference.num_bad_epochs)
        reductions += ours.get_last_lr() != before
    assert reductions >= 1


def test_reduce_on_plateau_reduces_after_patience_bad_epochs() -> None:
    optimizer = sgd()
    scheduler = ReduceLROnPlateau(optimizer, patience=2, factor=0.5)
    for metric in [1.0, 1.0, 1.0]:
        scheduler.step(metric)
    assert scheduler.get_last_lr() == list(LRS)
    scheduler.step(1.0)  # the third bad epoch is more than patience=2
    assert scheduler.get_last_lr() == [LRS[0] * 0.5, LRS[1] * 0.5]


def test_scheduled_lr_state_dict_resumes_where_it_stopped() -> None:
    schedule = build_schedule(
        "warmup", warmup_steps=10, then={"name": "cosine", "total_steps": 90}
    )
    optimizer = sgd()
    scheduler = ScheduledLR(optimizer, schedule)
    for _ in range(37):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert state == {"step_count": 37, "initial_lrs": list(LRS), "interval": "step"}
    # A fresh optimizer built with other learning rates, as a restarted worker might.
    resumed_optimizer = sgd(lrs=(0.5, 0.5))
    resumed = ScheduledLR(resumed_optimizer, schedule)
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == scheduler.get_last_lr()
    for _ in range(20):
        for o, s in ((optimizer, scheduler), (resumed_optimizer, resumed)):
            o.step()
            s.step()
        assert resumed.get_last_lr() == scheduler.get_last_lr()


def test_reduce_on_plateau_state_dict_resumes_where_it_stopped() -> None:
    metrics = plateau_metrics("min")
    optimizer = sgd()
    scheduler = ReduceLROnPlateau(optimizer, patience=2, cooldown=1)
    for metric in metrics[:50]:
        scheduler.step(metric)
    resumed_optimizer = sgd()
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed = ReduceLROnPlateau(resumed_optimizer, patience=2, cooldown=1)
    resumed.load_state_dict(scheduler.state_dict())
    for metric in metrics[50:]:
        scheduler.step(metric)
        resumed.step(metric)
        assert resumed.get_last_lr() == scheduler.get_last_lr()
    assert resumed.state_dict() == scheduler.state_dict()


def test_initial_lr_is_recorded_and_kept_like_torch() -> None:
    optimizer = sgd()
    ScheduledLR(optimizer, build_schedule("exponential", gamma=0.5))
    assert [g["initial_lr"] for g in optimizer.param_groups] == list(LRS)
    assert [g["lr"] for g in optimizer.param_groups] == list(LRS)
    for g in optimizer.param_groups:
        g["lr"] = 123.0
    # A second scheduler keeps the recorded initial_lr, as torch's do.
    ScheduledLR(optimizer, build_schedule("constant"))
    assert [g["lr"] for g in optimizer.param_groups] == list(LRS)


def test_tensor_learning_rate_is_updated_in_place() -> None:
    lr = torch.tensor(0.1, dtype=torch.float64)
    optimizer = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr, foreach=False)
    scheduler = ScheduledLR(optimizer, build_schedule("exponential", gamma=0.5))
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is lr
    assert lr.item() == pytest.approx(0.05, rel=1e-15)
    assert scheduler.get_last_lr() == [pytest.approx(0.05, rel=1e-15)]
    assert optimizer.param_groups[0]["initial_lr"].item() == 0.1


def test_trainer_interface_is_uniform() -> None:
    optimizer = sgd()
    per_step = build_lr_scheduler(optimizer, "cosine", total_steps=10)
    assert isinstance(per_step, ScheduledLR)
    assert (per_step.interval, per_step.requires_metric) == ("step", False)
    per_step.step(0.42)  # a metric is accepted and ignored
    assert per_step.get_last_lr() == pytest.approx([lr * cosine(10)(1) for lr in LRS], rel=1e-15)
    per_epoch = build_lr_scheduler(sgd(), "step", interval="epoch", step_size=2)
    assert per_epoch.interval == "epoch"
    plateau = build_lr_scheduler(sgd(), "reduce_on_plateau", patience=0, factor=0.5)
    assert isinstance(plateau, ReduceLROnPlateau)
    assert (plateau.interval, plateau.requires_metric) == ("epoch", True)
    plateau.step(1.0)
    plateau.step(2.0)
    assert plateau.get_last_lr() == [lr * 0.5 for lr in LRS]
    with pytest.raises(ValueError) as error:
        plateau.step()
    assert str(error.value) == "reduce_on_plateau needs the monitored metric: call step(metric)"


def test_every_registered_schedule_starts_at_a_factor_in_zero_one() -> None:
    required = {
        "step": {"step_size": 3},
        "multistep": {"milestones": [3]},
        "exponential": {"gamma": 0.9},
        "inverse_time": {"decay_steps": 3, "decay_rate": 0.5},
        "polynomial": {"total_steps": 5},
        "cosine": {"total_steps": 5},
        "warmup": {"warmup_steps": 5},
        "one_cycle": {"total_steps": 50},
    }
    for name in SCHEDULES:
        schedule = build_schedule(name, **required.get(name, {}))
        assert all(0 <= schedule(t) <= 1 for t in range(60)), name


ALL_NAMES = (
    "constant, cosine, exponential, inverse_time, multistep, one_cycle, polynomial, step, warmup"
)
BAD_SCHEDULES = [
    (
        "cosin",
        {},
        f"unknown schedule 'cosin' (did you mean 'cosine'?); allowed: {ALL_NAMES}",
    ),
    (
        "reduce_on_plateau",
        {},
        "schedule 'reduce_on_plateau' reads a metric, so it is not a function of the step: "
        "build it with build_lr_scheduler(optimizer, 'reduce_on_plateau', ...)",
    ),
    ("cosine", {}, "schedule 'cosine' is missing required argument(s) total_steps"),
    (
        "cosine",
        {"total_steps": 10, "eta_min": 0.1},
        "schedule 'cosine' got unknown argument(s) eta_min; allowed: total_steps, end_factor",
    ),
    ("constant", {"lr": 0.1}, "schedule 'constant' got unknown argument(s) lr; allowed: none"),
    ("step", {"step_size": 0}, "step: step_size must be an int > 0, got 0"),
    ("step", {"step_size": 5, "gamma": 1.5}, "step: gamma must be in (0, 1], got 1.5"),
    ("exponential", {"gamma": 0.0}, "exponential: gamma must be in (0, 1], got 0.0"),
    (
        "multistep",
        {"milestones": [30, 10]},
        "multistep: milestones must be a list of strictly increasing ints > 0, got [30, 10]",
    ),
    (
        "multistep",
        {"milestones": [10, 10]},
        "multistep: milestones must be a list of strictly increasing ints > 0, got [10, 10]",
    ),
    (
        "multistep",
        {"milestones": 10},
        "multistep: milestones must be a list of strictly increasing ints > 0, got 10",
    ),
    (
        "inverse_time",
        {"decay_steps": 10, "decay_rate": -0.1},
        "inverse_time: decay_rate must be a finite number >= 0, got -0.1",
    ),
    (
        "polynomial",
        {"total_steps": 10, "power": -1.0},
        "polynomial: power must be a number > 0, got -1.0",
    ),
    ("cosine", {"total_steps": 10.0}, "cosine: total_steps must be an int > 0, got 10.0"),
    (
        "cosine",
        {"total_steps": 10, "end_factor": 1.5},
        "cosine: end_factor must be in [0, 1], got 1.5",
    ),
    ("warmup", {"warmup_steps": 0}, "warmup: warmup_steps must be an int > 0, got 0"),
    (
        "warmup",
        {"warmup_steps": 5, "start_factor": -0.5},
        "warmup: start_factor must be in [0, 1], got -0.5",
    ),
    (
        "warmup",
        {"warmup_steps": 5, "then": {"total_steps": 10}},
        "warmup: then must be a mapping with a \"name\" key, got {'total_steps': 10}",
    ),
    (
        "warmup",
        {"warmup_steps": 5, "then": {"name": "cosine"}},
        "schedule 'cosine' is missing required argument(s) total_steps",
    ),
    (
        "warmup",
        {"warmup_steps": 5, "then": 3},
        "warmup: then must be a schedule name, a mapping with a 'name' key, or a schedule, got 3",
    ),
    (
        "one_cycle",
        {"total_steps": 100, "pct_start": 0.005},
        "one_cycle: pct_start must be a float in (0, 1) with pct_start · total_steps > 1 "
        "(total_steps=100), got 0.005",
    ),
    (
        "one_cycle",
        {"total_steps": 100, "anneal_strategy": "cosine"},
        "one_cycle: anneal_strategy must be one of cos, linear, got 'cosine'",
    ),
    (
        "one_cycle",
        {"total_steps": 100, "three_phase": True, "pct_start": 0.6},
        "one_cycle: pct_start must be < (total_steps + 1) / (2·total_steps) with three_phase "
        "(total_steps=100), got 0.6",
    ),
    (
        "one_cycle",
        {"total_steps": 100, "div_factor": 0.5},
        "one_cycle: div_factor must be a number >= 1, got 0.5",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_SCHEDULES)
def test_bad_schedule_names_and_arguments_are_rejected(name, kwargs, message) -> None:
    with pytest.raises(ValueError) as error:
        build_schedule(name, **kwargs)
    assert str(error.value) == message


BAD_LR_SCHEDULERS = [
    (
        "onecycle",
        {},
        "unknown schedule 'onecycle' (did you mean 'one_cycle'?); allowed: constant, cosine, "
        "exponential, inverse_time, multistep, one_cycle, polynomial, reduce_on_plateau, "
        "step, warmup",
    ),
    (
        "cosine",
        {"total_steps": 10, "interval": "batch"},
        "interval must be one of step, epoch, got 'batch'",
    ),
    (
        "reduce_on_plateau",
        {"gamma": 0.1},
        "schedule 'reduce_on_plateau' got unknown argument(s) gamma; allowed: mode, factor, "
        "patience, threshold, threshold_mode, cooldown, min_lr, eps",
    ),
    ("reduce_on_plateau", {"factor": 1.0}, "reduce_on_plateau: factor must be in (0, 1), got 1.0"),
    (
        "reduce_on_plateau",
        {"mode": "minimize"},
        "reduce_on_plateau: mode must be one of min, max, got 'minimize'",
    ),
    (
        "reduce_on_plateau",
        {"patience": -1},
        "reduce_on_plateau: patience must be an int >= 0, got -1",
    ),
    (
        "reduce_on_plateau",
        {"threshold_mode": "relative"},
        "reduce_on_plateau: threshold_mode must be one of rel, abs, got 'relative'",
    ),
    (
        "reduce_on_plateau",
        {"cooldown": 1.5},
        "reduce_on_plateau: cooldown must be an int >= 0, got 1.5",
    ),
    (
        "reduce_on_plateau",
        {"min_lr": [0.1]},
        "reduce_on_plateau: min_lr must be a number >= 0 or a list of 2 (one per param group), "
        "got [0.1]",
    ),
    (
        "reduce_on_plateau",
        {"interval": "batch"},
        "interval must be one of step, epoch, got 'batch'",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_LR_SCHEDULERS)
def test_bad_lr_scheduler_names_and_arguments_are_rejected(name, kwargs, message) -> None:
    with pytest.raises(ValueError) as error:
        build_lr_scheduler(sgd(), name, **kwargs)
    assert str(error.value) == message


def test_torch_schedulers_used_as_references_raise_no_warnings() -> None:
    # The references above step the optimizer before the scheduler, as torch expects;
    # a warning would mean a reference sequence was shifted by one step.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_lrs(lambda o, lr: lr_scheduler.StepLR(o, 3), 0.1, steps=5)
        torch_lrs(torch_warmup_cosine, 0.1, steps=5)
