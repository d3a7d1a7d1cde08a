"""The CLI end to end in tmp_path: train, predict, evaluate, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import EXAMPLES
from smartprice.cli import main

FAST = ["--set", "trees=60", "--set", "folds=3"]


def test_train_predict_evaluate(tmp_path, capsys):
    model = tmp_path / "model"
    out = tmp_path / "pred.csv"
    assert main(["train", str(EXAMPLES / "train.csv"), "--out", str(model), *FAST,
                 "--valid", str(EXAMPLES / "test_labelled.csv")]) == 0
    assert main(["predict", str(model), str(EXAMPLES / "test.csv"), "--out", str(out)]) == 0
    predictions = pd.read_csv(out, dtype={"sample_id": str})
    source = pd.read_csv(EXAMPLES / "test.csv", dtype={"sample_id": str})
    assert list(predictions.columns) == ["sample_id", "price"]
    assert predictions["sample_id"].tolist() == source["sample_id"].tolist()
    assert (predictions["price"] > 0).all() and predictions["price"].notna().all()
    assert main(["evaluate", str(model), str(EXAMPLES / "test_labelled.csv")]) == 0
    assert "SMAPE" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.csv", "--out", "m"], "missing.csv: file not found"),
        (["train", str(EXAMPLES / "train.csv"), "--out", "m", "--set", "bogus=1"], "unknown preset field(s) bogus"),
        (["train", str(EXAMPLES / "train.csv"), "--out", "m", "--set", "trees"], "expected key=value"),
        (["predict", "no-model", str(EXAMPLES / "test.csv"), "--out", "p.csv"], "model directory not found"),
    ],
)
def test_user_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = subprocess.run([sys.executable, "-m", "smartprice", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 or "error" in result.stderr.strip().splitlines()[-1]


def test_help_lists_options():
    result = subprocess.run([sys.executable, "-m", "smartprice", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--set" in result.stdout and "--strict" in result.stdout


def test_neural_preset_without_torch_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert main(["train", str(EXAMPLES / "train.csv"), "--out", str(tmp_path / "m"), "--preset", "blazing"]) == 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = tmp_path_factory.mktemp("cli") / "model"
    assert main(["-q", "train", str(EXAMPLES / "train.csv"), "--out", str(model), *FAST]) == 0
    return model


def _without(config: dict, key: str) -> dict:
    return {k: v for k, v in config.items() if k != key}


DAMAGED_CONFIGS = [  # (what is done to config.json, the field the one-line error names)
    (lambda c: {**c, "smartprice_version": 999}, "field 'smartprice_version' is 999, expected a version string"),
    (lambda c: _without(c, "model_state"), "field 'model_state' is missing"),
    (lambda c: _without(c, "preset"), "field 'preset' is missing"),
    (lambda c: {**c, "format_version": "2"}, "field 'format_version' is \"2\", expected a whole number"),
    (lambda c: {**c, "price_range": [1.0]}, "field 'price_range' is [1.0], expected a list of two prices"),
    (lambda c: {**c, "config": _without(c["config"], "kind")}, "field 'config.kind' is missing"),
    (lambda c: {**c, "config": {**c["config"], "trees": "many"}}, "field 'config.trees' is 'many', expected a whole number"),
    (lambda c: {**c, "files": {**c["files"], "lightgbm.txt": "big"}}, "field 'files.lightgbm.txt' is \"big\""),
    (lambda c: [c], "field '(top level)' is"),
]


@pytest.mark.parametrize("damage, message", DAMAGED_CONFIGS)
def test_a_damaged_config_is_one_line_naming_file_and_field(model_dir, tmp_path, damage, message):
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(damage(config)))
    result = subprocess.run([sys.executable, "-m", "smartprice", "-q", "predict", str(model), str(EXAMPLES / "test.csv"),
                             "--out", str(tmp_path / "p.csv")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"smartprice: error: {model / 'config.json'}: damaged config, ")
    assert message in result.stderr, result.stderr
