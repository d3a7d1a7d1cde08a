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
