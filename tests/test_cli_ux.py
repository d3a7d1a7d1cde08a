"""What a newcomer meets on the command line: preset listings, versions, `mu` without torch, blend --set.

Every check runs the CLI in a subprocess, as a user would; `mu` without torch runs with a meta-path
finder that refuses `torch`, which is what a base install looks like to the import system.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from conftest import EXAMPLES
from sharedcore.about import is_newer
from sharedcore.errors import SettingError
from sharedcore.overrides import get_field, setting_names
from smartprice import presets
from smartprice.kinds import preset_from_dict

FAST = ["--set", "trees=60", "--set", "folds=3"]


def run(*args: str, module: str = "smartprice", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd)


def field_reason(cls: type, field: str) -> str:
    """The reason a preset class gives for `field`, straight from its dataclass metadata."""
    return next(f.metadata.get("why", "") for f in dataclasses.fields(cls) if f.name == field)


def row(output: str, field: str) -> str:
    return next(line for line in output.splitlines() if line.split(" ", 1)[0] == field)


# --- smartprice presets ---------------------------------------------------------------------------

def test_presets_lists_every_preset_with_kind_needs_and_cost():
    result = run("presets")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["preset", "kind", "needs", "rough", "cost", "purpose"]
    for name, preset in presets.PRESETS.items():
        line = next(line for line in lines if line.split(" ", 1)[0] == name)
        assert f" {preset.kind} " in line
        cpu_only = preset.kind == "cpu" and "emb" not in getattr(preset, "knn_views", ())  # embeddings need torch
        assert ("base install" if cpu_only else "nn extra") in line
    assert "(default)" in next(line for line in lines if line.startswith(presets.DEFAULT_PRESET + " "))


@pytest.mark.parametrize("name", ["cpu", "minilm", "blend"])
def test_preset_shows_every_field_value_and_reason(name):
    result = run("presets", name)
    assert result.returncode == 0, result.stderr
    preset = presets.PRESETS[name]
    for key in setting_names(preset):  # nested settings as their own rows: loop.epochs
        line = row(result.stdout, key)
        value = get_field(preset, key)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) and value else str(value)
        if not isinstance(value, bool) and value != ():
            assert shown in line, (key, line)
        reason = field_reason(type(preset), key) if "." not in key else ""
        if reason and value == get_field(type(preset)(), key) and key not in presets.PRESET_NOTES[name].why:
            assert reason in line, (key, line)  # the reason is the field's own
        if key in presets.PRESET_NOTES[name].why:
            assert presets.PRESET_NOTES[name].why[key] in line, (key, line)  # the preset's reason for its value


def test_loop_settings_are_rows_with_their_reasons_and_dotted_keys():
    minilm = run("presets", "minilm").stdout
    assert "0.3 of 3 epochs" in row(minilm, "loop.warmup")  # the preset's own reason for its value
    assert "set by this preset; default 16" in row(minilm, "loop.batch_size")
    assert "--set loop.FIELD=VALUE" in minilm
    resolved = presets.resolve_preset("minilm", {"loop.epochs": "2", "max_length": "64"})
    assert resolved.loop.epochs == 2 and resolved.max_length == 64 and resolved.loop.lr == 1e-4
    assert presets.resolve_preset("minilm", {"loop": {"lr": 2e-4}}).loop.lr == 2e-4  # the Python API: a mapping
    for bad, fragment in [({"epochs": "2"}, "--set loop.epochs=VALUE"), ({"loop.bogus": "1"}, "loop.bogus"),
                          ({"loop.warmup": "1.0"}, "share of the run's optimizer steps"),
                          ({"loop.epochs": "0"}, "loop.epochs=0"), ({"loop.lr": "fast"}, "loop.lr=fast"),
                          ({"loop": "3"}, "set its fields one by one")]:
        with pytest.raises(SettingError, match=re.escape(fragment)):
            presets.resolve_preset("minilm", bad)


def test_preset_value_set_by_a_named_preset_gets_its_own_reason():
    minilm = run("presets", "minilm").stdout
    assert "bench/losses.py" in row(minilm, "loss")  # PRESET_NOTES["minilm"].why["loss"]
    assert "set by this preset; default 0.2,0.15" in row(minilm, "dropouts")  # a value set without a reason of its own
    assert "--set fusion.FIELD=VALUE" in run("presets", "blend").stdout


def test_unknown_preset_name_is_one_line():
    result = run("presets", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == f"smartprice: error: unknown preset 'nope'; choose one of {', '.join(presets.PRESETS)}"


# --- versions -------------------------------------------------------------------------------------

def test_a_version_that_is_not_a_string_is_a_damaged_config():
    from sharedcore.about import newer_version_note
    from sharedcore.errors import UserError

    assert newer_version_note(None, "MU model m") is None  # written before versions were recorded
    with pytest.raises(UserError, match=r"MU model m: damaged config, 'smartprice_version' is 999, expected a version"):
        newer_version_note(999, "MU model m")


def test_versions_come_from_the_package_metadata():
    version = metadata.version("smartprice")
    assert run("--version").stdout.strip() == f"smartprice {version}"
    assert run("--version", module="mu").stdout.strip() == f"mu (smartprice {version})"


@pytest.mark.parametrize("written, running, newer", [
    ("0.1.0", "0.1.0", False), ("0.2.0", "0.1.0", True), ("0.10.0", "0.9.1", True), ("0.1.0rc1", "0.1.0", False),
    ("1.0", "0+unknown", False), ("", "0.1.0", False),
])
def test_is_newer(written, running, newer):
    assert is_newer(written, running) is newer


@pytest.fixture(scope="module")
def cpu_model(tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("ux") / "model"
    result = run("-q", "train", str(EXAMPLES / "train.csv"), "--out", str(model), *FAST)
    assert result.returncode == 0, result.stderr
    return model


def test_model_records_its_version_and_a_newer_one_warns(cpu_model, tmp_path):
    config = json.loads((cpu_model / "config.json").read_text())
    assert config["smartprice_version"] == metadata.version("smartprice")
    out = tmp_path / "p.csv"
    quiet = run("-q", "predict", str(cpu_model), str(EXAMPLES / "test.csv"), "--out", str(out))
    assert quiet.returncode == 0 and "newer" not in quiet.stderr

    (cpu_model / "config.json").write_text(json.dumps({**config, "smartprice_version": "999.0"}))
    try:
        result = run("-q", "predict", str(cpu_model), str(EXAMPLES / "test.csv"), "--out", str(out))
        assert result.returncode == 0, result.stderr  # a warning, not a failure
        assert "written by smartprice 999.0, newer than this smartprice" in result.stderr
        assert out.exists() and "Traceback" not in result.stderr
    finally:
        (cpu_model / "config.json").write_text(json.dumps(config))


# --- blend: inner presets' fields as --set fusion.KEY / cpu.KEY -----------------------------------

def test_blend_inner_keys_are_checked_through_the_cli(tmp_path):
    train = ["train", str(EXAMPLES / "train.csv"), "--out", str(tmp_path / "m"), "--preset", "blend"]
    bogus = run(*train, "--set", "fusion.bogus=1")
    assert bogus.returncode == 2
    assert "unknown preset field(s) fusion.bogus for preset 'minilm'" in bogus.stderr and "valid fields:" in bogus.stderr
    assert "max_length" in bogus.stderr and "Traceback" not in bogus.stderr
    prefix = run(*train, "--set", "gpu.loop.epochs=1")
    assert prefix.returncode == 2 and "cpu.FIELD, fusion.FIELD" in prefix.stderr
    not_blend = run("train", str(EXAMPLES / "train.csv"), "--out", str(tmp_path / "m"), "--set", "fusion.loop.epochs=2")
    assert not_blend.returncode == 2 and "unknown preset field(s) fusion.loop.epochs for preset 'cpu'" in not_blend.stderr
    flat = run(*train, "--set", "fusion.epochs=2")  # a loop setting given flat: the error says where it lives
    assert flat.returncode == 2 and "--set fusion.loop.epochs=VALUE" in flat.stderr and "Traceback" not in flat.stderr
    # valid inner keys pass the check, so the next error is the missing file
    valid = run("train", "missing.csv", "--out", str(tmp_path / "m"), "--preset", "blend", "--set", "fusion.loop.epochs=2",
                "--set", "fusion.max_length=96", "--set", "cpu.trees=500", cwd=tmp_path)
    assert valid.returncode == 2 and "missing.csv: file not found" in valid.stderr


def test_blend_inner_overrides_are_typed_and_survive_json():
    preset = presets.resolve_preset("blend", {"fusion.loop.epochs": "2", "fusion.max_length": "96", "cpu.trees": "500"})
    assert preset.inner == (("fusion.loop.epochs", 2), ("fusion.max_length", 96), ("cpu.trees", 500))
    assert presets.inner_overrides(preset, "fusion") == {"loop.epochs": 2, "max_length": 96}
    assert preset_from_dict(json.loads(json.dumps(presets.preset_to_dict(preset)))) == preset


def test_blend_config_written_with_fusion_sets_still_loads():
    old = {"kind": "blend", "cpu_preset": "cpu", "fusion_preset": "minilm", "fusion_sets": "epochs=2;max_length=96",
           "valid_fraction": 0.15, "seed": 0}
    preset = preset_from_dict(old)
    assert presets.inner_overrides(preset, "fusion") == {"loop.epochs": "2", "max_length": "96"}


def test_fusion_config_saved_with_flat_loop_fields_still_loads():
    """Saved before the loop's settings were nested: epochs, batch_size, ... at the top, warmup in epochs."""
    old = {**{k: v for k, v in presets.preset_to_dict(presets.PRESETS["minilm"]).items() if k != "loop"},
           "epochs": 4, "batch_size": 16, "grad_accum": 2, "lr": 5e-5, "warmup": 1.0, "weight_decay": 0.01,
           "mixed_precision": "auto", "num_workers": 0, "max_steps_per_epoch": 0, "time_budget_s": 0.0,
           "progress": False, "log_with": ""}
    preset = preset_from_dict(json.loads(json.dumps(old)))
    assert preset.loop == presets.LoopConfig(epochs=4, batch_size=16, grad_accum=2, lr=5e-5, warmup=0.25,
                                             progress=False)
    assert preset.encoder == "minilm" and preset.head == (256, 64)
    blend = preset_from_dict({"kind": "blend", "fusion_preset": "minilm",
                                      "inner": [["fusion.epochs", 2], ["fusion.warmup", 1.0], ["cpu.trees", 50]]})
    assert presets.inner_overrides(blend, "fusion") == {"loop.epochs": 2, "loop.warmup": 0.5}
    assert presets.resolve_preset("minilm", presets.inner_overrides(blend, "fusion")).loop.warmup == 0.5


# --- mu -------------------------------------------------------------------------------------------

# Runs `python -m MODULE ARGS` with torch hidden from the import system, as on a base install.
WITHOUT_TORCH = textwrap.dedent("""
    import runpy, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


def run_without_torch(*args: str, module: str = "mu") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, module, *args], capture_output=True, text=True)


def test_smartprice_presets_on_a_base_install():
    listing = run_without_torch("presets", module="smartprice")
    assert listing.returncode == 0, listing.stderr
    assert "base install" in listing.stdout and "nn extra" in listing.stdout
    assert run_without_torch("presets", "minilm", module="smartprice").returncode == 0


def test_mu_help_and_version_without_torch():
    result = run_without_torch("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: mu" in result.stdout and "presets" in result.stdout
    note = [line for line in result.stdout.splitlines() if "nn extra" in line]
    assert note == ["note: mu needs the nn extra (torch is not installed): pip install torch==2.13.0 && "
                    "pip install 'smartprice[nn]'"]
    assert run_without_torch("--version").stdout.startswith("mu (smartprice ")


@pytest.mark.parametrize("args", [["train", "--train", "a.txt", "--out", "m"], ["presets"], ["eval", "m", "a.txt"]])
def test_mu_commands_without_torch_say_what_to_install(args):
    result = run_without_torch(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == ("mu: error: mu needs the nn extra (torch is not installed): "
                                     "pip install torch==2.13.0 && pip install 'smartprice[nn]'")


def test_importing_mu_cli_does_not_import_torch():
    code = "import sys, mu, mu.cli; mu.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_mu_presets_read_the_table():
    pytest.importorskip("torch")
    from mu import train as mu_train

    listing = run("presets", module="mu")
    assert listing.returncode == 0, listing.stderr
    for name in mu_train.PRESETS:
        assert any(line.split(" ", 1)[0] == name for line in listing.stdout.splitlines())
    full = run("presets", "full", module="mu")
    assert full.returncode == 0, full.stderr
    for key in setting_names(mu_train.PRESETS["full"]):  # fields added to MUPreset show up unasked
        line = row(full.stdout, key)
        reason = field_reason(type(mu_train.PRESETS["full"]), key) if "." not in key else ""
        if reason and get_field(mu_train.PRESETS["full"], key) == get_field(mu_train.MUPreset(), key):
            assert reason in line
    assert "set by this preset; default 6" in row(full.stdout, "n_layers")
    assert "set by this preset; default 500" in row(full.stdout, "loop.warmup_max_steps")
    unknown = run("presets", "huge", module="mu")
    assert unknown.returncode == 2 and "unknown preset 'huge'" in unknown.stderr


# --- quiet defaults: closed pipes, library log lines, reasons for every field, cv progress ---------

def test_presets_into_head_ends_quietly():
    shell = subprocess.run(f"set -o pipefail; {sys.executable} -m smartprice presets | head -1",
                           shell=True, executable="/bin/bash", capture_output=True, text=True)
    assert shell.stdout.split()[:2] == ["preset", "kind"]
    assert "Traceback" not in shell.stderr and "BrokenPipeError" not in shell.stderr
    assert shell.returncode in (0, 141)  # 0 when everything fitted in the pipe before head left


def test_a_closed_pipe_exits_141_without_a_word():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before smartprice writes: its first write fails
    try:
        result = subprocess.run([sys.executable, "-m", "smartprice", "presets", "cpu"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""


@pytest.mark.parametrize("flags, level", [([], "WARNING"), (["-v"], "INFO"), (["-q", "-v"], "WARNING")])
def test_library_info_lines_only_with_verbose(flags, level):
    import logging

    from smartprice.cli import LIBRARY_LOGGERS, _configure_logging, build_parser

    saved = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    try:
        _configure_logging(build_parser().parse_args([*flags, "presets"]))
        assert {logging.getLevelName(logging.getLogger(n).level) for n in LIBRARY_LOGGERS} == {level}
        assert not logging.getLogger("accelerate.checkpointing").isEnabledFor(logging.INFO) or level == "INFO"
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


HISTORY_WORDS = ("as before", "previous", "last round", "the laptop", "unmeasured", "today")


@pytest.mark.parametrize("cls", [presets.CpuPreset, presets.FusionPreset, presets.BlendPreset, presets.LoopConfig])
def test_every_preset_field_has_a_reason_without_history(cls):
    from sharedcore.settings import field_reasons

    reasons = field_reasons(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not reasons.get(f.name, "").strip()]
    assert missing == []
    notes = [why for n in presets.PRESET_NOTES.values() for why in (n.purpose, n.cost, *n.why.values())]
    dated = [text for text in [*reasons.values(), *notes] if any(word in text.lower() for word in HISTORY_WORDS)]
    assert dated == []


def test_every_reason_a_preset_gives_is_for_a_field_it_has():
    for name, notes in presets.PRESET_NOTES.items():
        assert set(notes.why) <= set(setting_names(presets.PRESETS[name])), name
    assert set(presets.PRESET_NOTES) == set(presets.PRESETS)


def test_cv_draws_a_fold_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    from conftest import make_catalog
    from smartprice.cli import main

    make_catalog(40).to_csv(tmp_path / "train.csv", index=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["cv", str(tmp_path / "train.csv"), "--folds", "2", "--set", "trees=30", "--set", "folds=2"]) == 0
    err = capsys.readouterr().err
    assert "cv cpu" in err and "2/2" in err and "folds" in err


def test_training_prints_library_info_lines_only_with_verbose(tmp_path):
    pytest.importorskip("transformers", reason="needs the nn extra")
    from conftest import tiny_encoder

    encoder = tiny_encoder("distilroberta", tmp_path / "encoder")
    sets = [f"--set={pair}" for pair in (f"encoder={encoder}", "loop.epochs=1", "max_length=32", "loop.num_workers=0",
                                         "loop.progress=false", "loop.batch_size=8", "loop.grad_accum=1")]
    train = ["train", str(EXAMPLES / "train.csv"), "--out", str(tmp_path / "m"), "--preset", "blazing", *sets]
    quiet, verbose = run(*train), run("-v", *train)
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "epoch 1:" in quiet.stderr  # our own INFO lines stay
    assert "Saving current state" not in quiet.stderr and "Loading weights" not in quiet.stderr
    assert "Saving current state" in verbose.stderr  # Accelerate's checkpoint lines
