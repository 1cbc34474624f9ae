"""The study file: loading, the messages of invalid files, and the trial configs it produces."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.spec import (
    DEFAULT_TRACKING_URI,
    SpecError,
    StudySpec,
    load_spec,
    parse_spec,
    resolve_endpoints,
)
from services.trainer import TrialConfig

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "studies" / "quickstart.yaml"
NINE = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam", "amsgrad"]
SOURCE = "studies/x.yaml"

# A small valid study that the bad inputs below each break in one place.
VALID: dict[str, Any] = {
    "study": "unit",
    "workloads": ["mnist1d-mlp"],
    "optimizers": [
        "sgd",
        {"name": "momentum", "search_space": {"one_minus_momentum": {"min": 1e-3, "max": 0.5}}},
        {
            "name": "adam",
            "fixed": {"eps": 1e-8},
            "search_space": {
                "beta1": {"feasible_points": [0.8, 0.9]},
                "one_minus_beta2": {"min": 1e-4, "max": 1e-1, "scaling": "log"},
            },
        },
    ],
    "search_space": {
        "learning_rate": {"min": 1e-4, "max": 1.0, "scaling": "log"},
        "weight_decay": {"min": 1e-6, "max": 1e-2, "scaling": "log"},
        "dropout": {"min": 0.0, "max": 0.5},
        "schedule": {"choices": ["constant", "cosine", "exponential", "step"]},
        "decay_rate": {"min": 0.5, "max": 0.99},
    },
    "schedules": {"exponential": {"interval": "epoch"}, "step": {"step_size": 2}},
    "trial": {"epochs": 3},
    "budget": {"trials": 4},
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "median", "options": {"n_warmup_steps": 1}},
    "final": {"seeds": [1, 2]},
    "resources": {"workers": 2, "gpus_per_trial": 0.25},
}


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``VALID`` with the value at dotted ``path`` replaced (``...`` deletes it)."""
    data = valid()
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def problem(data: Any) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source=SOURCE)
    return str(caught.value)


# (what is wrong, the study, the field path the message names, fragments it must contain:
# the allowed values or the rule)
BAD_INPUTS = [
    (
        "low > high",
        with_change("search_space.dropout", {"min": 0.5, "max": 0.1}),
        "search_space.dropout.max",
        ["must be > min (0.5), got 0.1"],
    ),
    (
        "log scale with low <= 0",
        with_change("search_space.learning_rate.min", -1),
        "search_space.learning_rate.min",
        ["must be > 0 for log scaling, got -1"],
    ),
    (
        "log scale with low = 0",
        with_change("search_space.weight_decay.min", 0),
        "search_space.weight_decay.min",
        ["must be > 0 for log scaling, got 0"],
    ),
    (
        "empty choices",
        with_change("search_space.schedule.choices", []),
        "search_space.schedule.choices",
        ["must not be empty"],
    ),
    (
        "unknown top-level key",
        with_change("budgett", {"trials": 3}),
        "budgett",
        ["unknown key 'budgett'", "allowed: study, description, workloads", "'budget'"],
    ),
    (
        "unknown dimension key",
        with_change("search_space.dropout", {"min": 0.0, "maxx": 0.5}),
        "search_space.dropout.maxx",
        ["unknown key 'maxx'", "allowed: scaling, int, min, max, feasible_points, choices"],
    ),
    (
        "wrong type",
        with_change("budget.trials", "ten"),
        "budget.trials",
        ["must be an integer, got 'ten'"],
    ),
    (
        "wrong type for a bound",
        with_change("search_space.dropout.max", True),
        "search_space.dropout.max",
        ["must be a number, got true"],
    ),
    (
        "unknown optimizer",
        with_change("optimizers.0", "adma"),
        "optimizers[0].name",
        ["unknown optimizer 'adma'", "allowed: sgd, momentum", "did you mean 'adam'?"],
    ),
    (
        "unknown workload",
        with_change("workloads", ["mnist1d-mpl"]),
        "workloads[0]",
        ["unknown workload 'mnist1d-mpl'", "quadratic", "did you mean 'mnist1d-mlp'?"],
    ),
    (
        "unknown sampler",
        with_change("sampler.name", "tpee"),
        "sampler.name",
        ["unknown sampler 'tpee'", "allowed: tpe, random, qmc, cmaes, gp, grid", "'tpe'?"],
    ),
    (
        "unknown pruner",
        with_change("pruner.name", "medain"),
        "pruner.name",
        ["unknown pruner 'medain'", "none, median, successive_halving, hyperband", "'median'?"],
    ),
    (
        "negative budget",
        with_change("budget.trials", -3),
        "budget.trials",
        ["must be > 0, got -3"],
    ),
    (
        "zero trials",
        with_change("budget.trials", 0),
        "budget.trials",
        ["must be > 0, got 0"],
    ),
    (
        "negative time limit",
        with_change("budget.time_limit_s", -60),
        "budget.time_limit_s",
        ["must be > 0"],
    ),
    (
        "GPU fraction > 1",
        with_change("resources.gpus_per_trial", 1.5),
        "resources.gpus_per_trial",
        ["in (0, 1]", "got 1.5"],
    ),
    (
        "GPU fraction <= 0",
        with_change("resources.gpus_per_trial", 0),
        "resources.gpus_per_trial",
        ["in (0, 1]", "got 0"],
    ),
    (
        "seeds empty",
        with_change("final.seeds", []),
        "final.seeds",
        ["must not be empty"],
    ),
    (
        "seeds duplicated",
        with_change("final.seeds", [1, 2, 1]),
        "final.seeds[2]",
        ["duplicate seed 1"],
    ),
    (
        "unknown schedule",
        with_change("search_space.schedule.choices", ["constant", "cosin", "exponential"]),
        "search_space.schedule.choices[1]",
        ["unknown schedule 'cosin'", "exponential", "did you mean 'cosine'?"],
    ),
    (
        "dropout outside [0, 1)",
        with_change("search_space.dropout.max", 1.0),
        "search_space.dropout.max",
        ["dropout must be a number in [0, 1), got 1.0"],
    ),
    (
        "duplicate optimizer names",
        with_change("optimizers.0", "adam"),
        "optimizers[2].name",
        ["duplicate optimizer 'adam'"],
    ),
    (
        "misspelled direction",
        with_change("objective", {"direction": "maximise"}),
        "objective.direction",
        ["unknown direction 'maximise'", "allowed: maximize, minimize", "'maximize'?"],
    ),
    (
        "direction against the workload's metric",
        with_change("objective", {"direction": "minimize"}),
        "objective.direction",
        ["'mnist1d-mlp' judges by accuracy, which is to maximize"],
    ),
    (
        "int dimension with non-integer bounds",
        with_change("search_space.width", {"min": 10.5, "max": 100, "int": True}),
        "search_space.width.min",
        ["must be an integer for an int dimension, got 10.5"],
    ),
    (
        "a dimension of one optimizer in the shared space",
        with_change("search_space.one_minus_beta1", {"min": 0.01, "max": 0.5}),
        "search_space.one_minus_beta1",
        [
            "optimizer 'sgd' has no betas; allowed dimensions: learning_rate",
            "arm sgd · mnist1d-mlp",
            "a dimension of some optimizers only goes in optimizers[].search_space",
        ],
    ),
    (
        "a beta outside [0, 1)",
        with_change("optimizers.2.search_space.beta1.feasible_points", [0.9, 1.0]),
        "optimizers[2].search_space.beta1.feasible_points[1]",
        ["betas[0] must be in [0, 1), got 1.0"],
    ),
    (
        "unknown fixed hyperparameter",
        with_change("optimizers.2.fixed", {"bettas": [0.9, 0.99]}),
        "optimizers[2].fixed.bettas",
        ["unknown adam hyperparameter 'bettas'", "amsgrad, betas", "did you mean 'betas'?"],
    ),
    (
        "unknown activation",
        with_change("search_space.activation", {"choices": ["relu", "swish"]}),
        "search_space.activation.choices[1]",
        ["unknown activation 'swish'", "gelu", "relu"],
    ),
    (
        "unknown dimension",
        with_change("search_space.learning_rat", {"min": 0.01, "max": 0.5}),
        "search_space.learning_rat",
        ["unknown dimension 'learning_rat'", "dropout", "did you mean 'learning_rate'?"],
    ),
    (
        "two dimensions setting one value",
        with_change("optimizers.1.search_space.momentum", {"min": 0.5, "max": 0.9}),
        "optimizers[1].search_space.momentum",
        ["sets the same value as dimension 'one_minus_momentum'"],
    ),
    (
        "misspelled scaling",
        with_change("search_space.dropout.scaling", "logg"),
        "search_space.dropout.scaling",
        ["unknown scaling 'logg'; allowed: linear, log", "did you mean 'log'?"],
    ),
    (
        "unknown schedule argument",
        with_change("schedules.step", {"step_sise": 2}),
        "schedules.step",
        ["unknown argument(s) step_sise", "allowed: step_size, gamma"],
    ),
    (
        "arguments of a schedule never drawn",
        with_change("schedules.cosinus", {"end_factor": 0.1}),
        "schedules.cosinus",
        ["unknown schedule 'cosinus'", "did you mean 'cosine'?"],
    ),
    (
        "unknown sampler option",
        with_change("sampler", {"name": "random", "options": {"n_startup_trials": 3}}),
        "sampler.options.n_startup_trials",
        ["unknown option 'n_startup_trials' for sampler 'random'; allowed: none"],
    ),
    (
        "trial model that is not a mapping",
        with_change("trial.model", "mlp"),
        "trial.model",
        ["must be a mapping of model options, got 'mlp'"],
    ),
    (
        "unknown trial key",
        with_change("trial.epoch", 3),
        "trial.epoch",
        ["unknown trial config key 'epoch'", "batch_size", "did you mean 'epochs'?"],
    ),
    (
        "invalid trial value",
        with_change("trial.epochs", 0),
        "trial",
        ["epochs must be an int >= 1, got 0"],
    ),
    (
        "unknown pruner option",
        with_change("pruner.options", {"n_startup": 3}),
        "pruner.options.n_startup",
        ["unknown option 'n_startup' for pruner 'median'", "n_startup_trials"],
    ),
    (
        "wrong pruner option type",
        with_change("pruner.options", {"n_warmup_steps": "one"}),
        "pruner.options.n_warmup_steps",
        ["must be int, got 'one'"],
    ),
    (
        "grid over a continuous range",
        with_change("sampler", "grid"),
        "search_space.learning_rate",
        ["the grid sampler needs discrete dimensions", "feasible_points, choices"],
    ),
    (
        "two kinds in one dimension",
        with_change("search_space.dropout", {"min": 0.0, "max": 0.3, "choices": [0.1]}),
        "search_space.dropout",
        ["give exactly one of min/max (a range), feasible_points or choices"],
    ),
    (
        "SQLite storage",
        with_change("storage", "sqlite:///optuna.db"),
        "storage",
        ["unsupported storage", "journal://PATH", "postgresql+psycopg://"],
    ),
    (
        "study name that breaks arm names",
        with_change("study", "my/study"),
        "study",
        ["must be letters, digits"],
    ),
    (
        "missing budget",
        with_change("budget", ...),
        "budget",
        ["is required"],
    ),
    (
        "pruning with two objectives",
        with_change("second_objective", {"metric": "train_time_s"}),
        "pruner.name",
        ["single-objective studies only"],
    ),
    (
        "decay rate without a schedule that has one",
        with_change("search_space.schedule.choices", ["constant", "cosine"]),
        "search_space.decay_rate",
        ["no schedule of this study takes a rate", "exponential"],
    ),
]


@pytest.mark.parametrize(
    ("data", "path", "fragments"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_names_file_field_and_allowed_values(
    data: dict[str, Any], path: str, fragments: list[str]
) -> None:
    message = problem(data)
    assert message.startswith(f"{SOURCE}: {path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_valid_study_loads_with_every_arm() -> None:
    spec = parse_spec(valid(), source=SOURCE)
    assert [arm.study_name for arm in spec.arms()] == [
        "unit/mnist1d-mlp/sgd",
        "unit/mnist1d-mlp/momentum",
        "unit/mnist1d-mlp/adam",
    ]
    assert spec.arms()[2].label == "adam · mnist1d-mlp"


def test_every_problem_is_reported_at_once() -> None:
    data = with_change("budget.trials", 0)
    data["sampler"]["name"] = "tpee"
    lines = problem(data).splitlines()
    assert lines == [
        f"{SOURCE}: budget.trials: must be > 0, got 0",
        f"{SOURCE}: sampler.name: unknown sampler 'tpee'; allowed: tpe, random, qmc, cmaes, "
        "gp, grid (did you mean 'tpe'?)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("study: [unclosed\n", "line 2, column 1: invalid YAML"),
        ("- a list\n", "a study file is a mapping of fields (study, description"),
        ("just a string\n", "got 'just a string'"),
        ("", "got an empty file"),
        ("study: a\nstudy: b\n", "line 2, column 1: invalid YAML: duplicate key 'study'"),
    ],
)
def test_unreadable_files_raise_one_spec_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_missing_file_raises_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: no such file"):
        load_spec(tmp_path / "missing.yaml")


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


def test_exponent_without_a_dot_is_a_number(tmp_path: Path) -> None:
    data = valid()
    text = yaml.safe_dump(data).replace("0.0001", "1e-4")
    assert "1e-4" in text
    path = tmp_path / "x.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.search_space["learning_rate"].min == 1e-4


def test_loading_touches_no_storage(tmp_path: Path) -> None:
    journal = tmp_path / "store" / "optuna.journal"
    parse_spec({**valid(), "storage": f"journal://{journal}"}, source=SOURCE)
    assert not journal.parent.exists()


def test_quickstart_compares_the_nine_optimizers_on_mnist1d() -> None:
    spec = load_spec(QUICKSTART)
    assert spec.workloads == ["mnist1d-mlp"]
    assert [arm.optimizer for arm in spec.arms()] == NINE
    assert {arm.study_name for arm in spec.arms()} == {
        f"quickstart/mnist1d-mlp/{name}" for name in NINE
    }
    for arm in spec.arms():
        space = spec.search_space_for(arm)
        assert {"learning_rate", "schedule", "decay_rate", "dropout", "weight_decay"} <= set(space)


def test_quickstart_configs_are_accepted_by_the_trainer() -> None:
    spec = load_spec(QUICKSTART)
    for arm in spec.arms():
        space = spec.search_space_for(arm)
        for schedule in space["schedule"].points:
            params: dict[str, Any] = {}
            for name, dimension in space.items():
                value = schedule if name == "schedule" else dimension.corners()[-1][1]
                if spec.applies(arm, name, {**params, "schedule": schedule}):
                    params[name] = value
            config = spec.trial_config(arm, params)
            assert TrialConfig.from_dict(config).to_dict()["optimizer"] == arm.optimizer


def test_dimensions_land_where_their_names_say() -> None:
    spec = parse_spec(valid(), source=SOURCE)
    adam = spec.arms()[2]
    config = spec.trial_config(
        adam,
        {
            "learning_rate": 0.01,
            "weight_decay": 1e-4,
            "dropout": 0.25,
            "schedule": "exponential",
            "decay_rate": 0.9,
            "beta1": 0.8,
            "one_minus_beta2": 0.01,
        },
    )
    assert config == {
        "epochs": 3,
        "workload": "mnist1d-mlp",
        "optimizer": "adam",
        "hparams": {"eps": 1e-8, "lr": 0.01, "weight_decay": 1e-4, "betas": [0.8, 0.99]},
        "model": {"dropout": 0.25},
        "schedule": {"name": "exponential", "interval": "epoch", "gamma": 0.9},
    }
    assert TrialConfig.from_dict(config).hparams["betas"] == [0.8, 0.99]


def test_one_beta_keeps_the_optimizer_default_for_the_other() -> None:
    spec = parse_spec(valid(), source=SOURCE)
    adam = spec.arms()[2]
    config = spec.trial_config(adam, {"one_minus_beta2": 0.01})
    assert config["hparams"]["betas"] == [0.9, 0.99]  # torch's default beta1


def test_one_minus_momentum_sets_momentum() -> None:
    spec = parse_spec(valid(), source=SOURCE)
    momentum = spec.arms()[1]
    assert spec.trial_config(momentum, {"one_minus_momentum": 0.1})["hparams"] == {"momentum": 0.9}


def test_final_phase_seed_replaces_the_trial_seed() -> None:
    spec = parse_spec(valid(), source=SOURCE)
    config = spec.trial_config(spec.arms()[0], {"learning_rate": 0.1}, seed=7)
    assert config["seed"] == 7


@pytest.mark.parametrize(
    ("schedule", "applies"),
    [("constant", False), ("cosine", False), ("exponential", True), ("step", True)],
)
def test_decay_rate_applies_only_to_schedules_with_a_rate(schedule: str, applies: bool) -> None:
    spec = parse_spec(valid(), source=SOURCE)
    assert spec.applies(spec.arms()[0], "decay_rate", {"schedule": schedule}) is applies
    assert spec.applies(spec.arms()[0], "dropout", {"schedule": schedule})


def test_decay_rate_comes_after_the_schedule() -> None:
    data = valid()
    space = data["search_space"]
    data["search_space"] = {"decay_rate": space.pop("decay_rate"), **space}
    spec = parse_spec(data, source=SOURCE)
    names = list(spec.search_space_for(spec.arms()[0]))
    assert names.index("decay_rate") > names.index("schedule")


def test_decay_rate_sets_the_rate_of_inverse_time() -> None:
    data = with_change("search_space.schedule.choices", ["inverse_time"])
    data["schedules"] = {"inverse_time": {"decay_steps": 10}}
    spec = parse_spec(data, source=SOURCE)
    config = spec.trial_config(spec.arms()[0], {"schedule": "inverse_time", "decay_rate": 0.5})
    assert config["schedule"] == {"name": "inverse_time", "decay_steps": 10, "decay_rate": 0.5}


def test_directions_follow_the_workload_and_the_second_objective() -> None:
    data = with_change("workloads", ["mnist1d-mlp", "quadratic"])
    del data["search_space"]["dropout"]  # the quadratic has no model options
    data["pruner"] = "none"
    data["second_objective"] = {"metric": "train_time_s"}
    spec = parse_spec(data, source=SOURCE)
    by_workload = {arm.workload: spec.directions(arm) for arm in spec.arms()}
    assert by_workload == {
        "mnist1d-mlp": ["maximize", "minimize"],
        "quadratic": ["minimize", "minimize"],
    }


def test_bare_names_stand_for_mappings() -> None:
    spec = parse_spec({**valid(), "sampler": "random", "pruner": "none"}, source=SOURCE)
    assert (spec.sampler.name, spec.sampler.seed, spec.pruner.name) == ("random", 0, "none")


def test_defaults() -> None:
    data = valid()
    for key in ("sampler", "pruner", "final", "resources"):
        del data[key]
    spec = parse_spec(data, source=SOURCE)
    assert spec.sampler.name == "tpe"
    assert spec.pruner.name == "none"
    assert spec.final.seeds == [1, 2, 3]
    assert (spec.resources.workers, spec.resources.gpus_per_trial) == (1, None)
    assert spec.budget.max_retries == 2


# ---- storage and tracking URIs ------------------------------------------------------------


def spec_with(storage: str | None = None, tracking_uri: str | None = None) -> StudySpec:
    return parse_spec({**valid(), "storage": storage, "tracking_uri": tracking_uri}, SOURCE)


def test_flag_beats_env_beats_spec_beats_default() -> None:
    env = {"OPTARENA_STORAGE": "journal://env.journal", "OPTARENA_TRACKING_URI": "http://env"}
    spec = spec_with("journal://spec.journal", "http://spec")
    storage, tracking = resolve_endpoints(
        spec, storage="journal://flag.journal", tracking_uri="http://flag", environ=env
    )
    assert (storage.uri, storage.source, tracking.uri, tracking.source) == (
        "journal://flag.journal",
        "flag",
        "http://flag",
        "flag",
    )
    storage, tracking = resolve_endpoints(spec, environ=env)
    assert (storage.uri, storage.source) == ("journal://env.journal", "env")
    assert (tracking.uri, tracking.source) == ("http://env", "env")
    storage, tracking = resolve_endpoints(spec, environ={})
    assert (storage.uri, storage.source) == ("journal://spec.journal", "spec")
    assert (tracking.uri, tracking.source) == ("http://spec", "spec")
    storage, tracking = resolve_endpoints(spec_with(), environ={})
    assert (storage.uri, storage.source) == ("journal://.optarena/optuna.journal", "default")
    assert (tracking.uri, tracking.source) == (DEFAULT_TRACKING_URI, "default")


def test_empty_env_var_counts_as_unset() -> None:
    storage, _ = resolve_endpoints(
        spec_with("journal://spec.journal"), environ={"OPTARENA_STORAGE": ""}
    )
    assert storage.source == "spec"


def test_plain_postgresql_url_uses_the_installed_driver() -> None:
    storage, _ = resolve_endpoints(spec_with("postgresql://postgres@db:5432/optuna"), environ={})
    assert storage.uri == "postgresql+psycopg://postgres@db:5432/optuna"
    storage, _ = resolve_endpoints(spec_with(), storage="postgresql://db/optuna", environ={})
    assert (storage.uri, storage.source) == ("postgresql+psycopg://db/optuna", "flag")


def test_bad_override_names_where_it_came_from() -> None:
    with pytest.raises(SpecError, match=r"^\$OPTARENA_STORAGE: unsupported storage 'mysql://"):
        resolve_endpoints(spec_with(), environ={"OPTARENA_STORAGE": "mysql://x"})
    with pytest.raises(SpecError, match=r"^--storage: unsupported storage 'x\.db'"):
        resolve_endpoints(spec_with(), storage="x.db", environ={})
