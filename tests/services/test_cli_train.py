"""``optarena train``: runs one trial, prints it (JSON with --json), exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import BadInput, apply_settings, main, parse_value

QUICK = ["train", "--workload", "quadratic", "--optimizer", "adam", "--epochs", "1"]


def test_train_json_prints_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*QUICK, "--json", "--seed", "4", "--set", "hparams.lr=1e-2"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert code == 0
    assert result["status"] == "completed"
    assert result["config"]["hparams"] == {"lr": 0.01}
    assert result["config"]["seed"] == 4
    assert len(result["history"]) == 1


def test_train_prints_epochs_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*QUICK, "--set", "batch_size=256"])
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch    1  step      32" in out
    assert re.search(r"^status +completed$", out, re.MULTILINE)
    assert "samples/s on cpu" in out


def test_diverged_trial_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["train", "--workload", "quadratic", "--optimizer", "sgd", "--set", "hparams.lr=1e4"]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert re.search(r"^status +diverged$", out, re.MULTILINE)
    assert re.search(r"^diverged at step +\d+$", out, re.MULTILINE)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workload", "mnist2d", "--optimizer", "adam"], "unknown workload 'mnist2d'; allowed"),
        (["--workload", "quadratic", "--optimizer", "adamx"], "unknown optimizer 'adamx'"),
        (
            ["--workload", "quadratic", "--optimizer", "adam", "--set", "hparams.lrr=1"],
            "unknown hyperparameter 'lrr' for optimizer 'adam'; allowed: amsgrad, betas",
        ),
        (
            ["--workload", "digits-mlp", "--optimizer", "adam", "--set", "model.depht=3"],
            "unknown model option 'depht' for workload 'digits-mlp'; allowed: activation",
        ),
        (
            ["--workload", "quadratic", "--optimizer", "adam", "--set", "epoch=3"],
            "unknown trial config key 'epoch'; allowed:",
        ),
        (["--workload", "quadratic", "--optimizer", "adam", "--epochs", "0"], "epochs must be"),
        (["--workload", "quadratic", "--optimizer", "adam", "--set", "lr"], "key=value"),
    ],
)
def test_bad_input_exits_2_naming_the_value(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert main(["train", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optarena train: error: ")
    assert message in err


def test_missing_data_file_exits_2_saying_where(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(
        ["train", "--workload", "mnist-mlp", "--optimizer", "sgd", "--data-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "train-images-idx3-ubyte.gz" in err and str(tmp_path / "mnist") in err


def test_missing_required_flag_is_an_argparse_error_with_exit_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--optimizer", "adam"])
    assert exit_info.value.code == 2


def test_help_lists_the_train_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "train" in capsys.readouterr().out


def test_module_entry_point_returns_the_exit_code() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "--workload", "x", "--optimizer", "adam"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert completed.returncode == 2
    assert "unknown workload 'x'" in completed.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("1e-3", 0.001),
        ("-2E+2", -200.0),
        ("3", 3),
        ("true", True),
        ("null", None),
        ("relu", "relu"),
        ("[0.9, 0.99]", [0.9, 0.99]),
        ("[1e-3, 2]", [0.001, 2]),
        ("a: [b", "a: [b"),
    ],
)
def test_set_values_are_yaml_with_ordinary_numbers(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_dotted_settings_build_nested_dicts() -> None:
    config = apply_settings(
        {"workload": "w", "hparams": {"lr": 1}},
        ["hparams.betas=[0.9, 0.95]", "schedule.name=cosine", "model.dropout=0.2"],
    )
    assert config == {
        "workload": "w",
        "hparams": {"lr": 1, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine"},
        "model": {"dropout": 0.2},
    }


def test_setting_below_a_scalar_is_rejected() -> None:
    with pytest.raises(BadInput, match="'epochs' is 3, not a mapping"):
        apply_settings({"epochs": 3}, ["epochs.x=1"])
