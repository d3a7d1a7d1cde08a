"""Fusion presets on tiny random encoders: structure, losses, round trips, resume after SIGKILL, 2 processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="fusion presets need the nn extra")
transformers = pytest.importorskip("transformers", reason="fusion presets need the nn extra")

from conftest import EXAMPLES, kill_after_first_epoch, kill_during, make_catalog, tiny_encoder  # noqa: E402
from smartprice import PricePredictor  # noqa: E402
from smartprice.fusion import FusionNet  # noqa: E402
from smartprice.losses import price_loss  # noqa: E402
from smartprice.presets import resolve_preset  # noqa: E402

QUICK = {"loop.epochs": 1, "loop.batch_size": 8, "loop.grad_accum": 1, "max_length": 48, "loop.progress": False,
         "loop.num_workers": 0, "eval_batch_size": 16}
PRESET_ENCODER = {"ultra": "deberta", "optimized": "deberta", "fast": "roberta", "blazing": "distilroberta"}


def _encoder(kind: str, directory, width: dict | None = None):
    return tiny_encoder(kind, directory, width)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {kind: _encoder(kind, root / kind) for kind in ("deberta", "roberta", "distilroberta")}


@pytest.mark.parametrize("preset, width", [("ultra", 793), ("fast", 783), ("blazing", 788), ("optimized", 790)])
def test_head_input_width_with_768_wide_encoders(tmp_path, preset, width):
    from transformers import AutoModel

    config = resolve_preset(preset)
    kind = PRESET_ENCODER[preset]
    location = _encoder(kind, tmp_path / kind, {"hidden_size": 768, "num_attention_heads": 12})
    net = FusionNet(AutoModel.from_pretrained(location), config.feature_set, config, "cls", 3.0)
    assert net.head[0].in_features == width
    widths = [m.out_features for m in net.head if isinstance(m, torch.nn.Linear)]
    assert widths == [*config.head, 1]
    norm = torch.nn.BatchNorm1d if config.norm == "batch" else torch.nn.LayerNorm
    assert sum(isinstance(m, norm) for m in net.head) == len(config.head)
    assert [m.p for m in net.head if isinstance(m, torch.nn.Dropout)] == list(config.dropouts)


@pytest.mark.parametrize("preset", ["ultra", "fast", "blazing", "optimized"])
def test_fit_predict_save_load_round_trip(tmp_path, encoders, preset):
    catalog = make_catalog(48)
    model = PricePredictor(preset, encoder=encoders[PRESET_ENCODER[preset]], **QUICK).fit(catalog)
    prices = model.predict(catalog)
    assert np.isfinite(prices).all() and (prices > 0).all()
    model.save(tmp_path / "m")
    assert not any(p.suffix in (".pkl", ".bin", ".pt") for p in (tmp_path / "m").rglob("*"))
    np.testing.assert_array_equal(PricePredictor.load(tmp_path / "m").predict(catalog), prices)


def test_losses_against_hand_computed_values():
    z = torch.log1p(torch.tensor([110.0, 50.0]))
    price = torch.tensor([100.0, 100.0])
    terms = [10 / 105, 50 / 75]
    assert float(price_loss(z, price, "smape")) == pytest.approx(100 * sum(terms) / 2, rel=1e-4)
    assert float(price_loss(z, price, "focal_smape", gamma=2.0)) == pytest.approx(
        100 * sum(t ** 3 for t in terms) / 2, rel=1e-4)
    logs = [abs(np.log1p(110) - np.log1p(100)), abs(np.log1p(50) - np.log1p(100))]
    assert float(price_loss(z, price, "l1")) == pytest.approx(sum(logs) / 2, rel=1e-5)
    huber = [0.5 * d * d if d < 0.5 else 0.5 * (d - 0.25) for d in logs]  # delta 0.5
    assert float(price_loss(z, price, "huber", delta=0.5)) == pytest.approx(sum(huber) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        price_loss(z, price, "mse")


def test_loss_override_from_cli_string():
    assert resolve_preset("blazing", {"loss": "l1"}).loss == "l1"


def test_blend_round_trip(tmp_path, encoders):
    catalog = make_catalog(60)
    sets = {"fusion.encoder": encoders["distilroberta"], "fusion.loop.epochs": "1", "fusion.loop.batch_size": "8",
            "fusion.loop.grad_accum": "1", "fusion.max_length": "48", "fusion.loop.progress": "false",
            "cpu.trees": "60"}
    model = PricePredictor("blend", fusion_preset="blazing", valid_fraction=0.2, **sets).fit(catalog)
    assert 0.0 <= model.model_.weight_ <= 1.0
    assert model.model_.fusion_.preset.max_length == 48 and model.model_.cpu_.preset.trees == 60
    model.save(tmp_path / "b")
    loaded = PricePredictor.load(tmp_path / "b")
    assert loaded.config_ == model.config_  # the inner overrides survive the JSON config
    np.testing.assert_array_equal(loaded.predict(catalog), model.predict(catalog))


def _train_cmd(out, encoder, *extra, preset="blazing", data=EXAMPLES / "train.csv"):
    """The preset's own settings (DataLoader workers, batch, accumulation, precision); only sizes made small."""
    return [sys.executable, "-m", "smartprice", "train", str(data), "--out", str(out),
            "--preset", preset, "--set", f"encoder={encoder}", "--set", "loop.epochs=3", "--set", "max_length=48", *extra]


def _predict(model, out):
    subprocess.run([sys.executable, "-m", "smartprice", "-q", "predict", str(model), str(EXAMPLES / "test.csv"),
                    "--out", str(out)], check=True)
    return pd.read_csv(out)


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    """A catalog long enough (20 micro-batches an epoch) that a kill can land inside an epoch."""
    path = tmp_path_factory.mktemp("resume") / "train.csv"
    make_catalog(360).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, encoders, resume_data):
    """Predictions of an uninterrupted blazing run with the preset's defaults."""
    root = tmp_path_factory.mktemp("straight")
    assert resolve_preset("blazing").loop.num_workers > 0  # the setting that used to break resume
    subprocess.run(_train_cmd(root / "model", encoders["distilroberta"], data=resume_data), check=True,
                   capture_output=True)
    return _predict(root / "model", root / "a.csv")


def test_iterating_the_loader_leaves_the_global_rng_alone():
    """Creating a DataLoader iterator draws a worker base seed; it must come from the loader's own generator."""
    from trainloop import LoopConfig, train

    seen = []

    def loss_fn(model, batch):
        seen.append(torch.get_rng_state())  # the global RNG as dropout would find it
        return model(batch.float().unsqueeze(-1)).mean(), len(batch)

    config = LoopConfig(epochs=1, batch_size=4, grad_accum=1, num_workers=1, progress=False, max_steps_per_epoch=1)
    torch.manual_seed(0)
    expected = torch.get_rng_state()
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        train(torch.nn.Linear(1, 1), list(range(8)), torch.tensor, loss_fn, config, scratch)
    torch.manual_seed(0)
    assert torch.equal(seen[0], expected)


@pytest.mark.parametrize("moment", ["first-epoch", "later-epoch", "checkpoint-write"])
def test_sigkill_then_resume_matches_with_preset_defaults(tmp_path, encoders, resume_data, straight_run, moment):
    killed = tmp_path / "killed"
    command = _train_cmd(killed, encoders["distilroberta"], data=resume_data)
    for _ in range(3):  # a checkpoint write lasts milliseconds: a busy machine can let one slip past the poll
        shutil.rmtree(killed, ignore_errors=True)
        shutil.rmtree(tmp_path / "killed.work", ignore_errors=True)
        kill_during(command, tmp_path / "killed.work" / "checkpoint", moment, tmp_path / "killed.log")
        if not (killed / "config.json").exists():
            break
    assert not (killed / "config.json").exists(), "the run finished before it could be killed, three times"
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "killed.work").exists()  # checkpoints removed once the model is written
    b = _predict(killed, tmp_path / "b.csv")
    assert (b.sample_id == straight_run.sample_id).all()
    largest = float(np.max(np.abs(b.price / straight_run.price - 1)))
    print(f"resume after a kill at {moment}: largest relative prediction difference {largest:.3g}")
    np.testing.assert_allclose(b.price, straight_run.price, rtol=1e-6, atol=0)


def test_resume_after_a_kill_between_the_checkpoint_renames(tmp_path, encoders, resume_data, straight_run):
    """Killed after the old checkpoint was moved aside but before the new one took its place."""
    killed = tmp_path / "killed"
    command = _train_cmd(killed, encoders["distilroberta"], data=resume_data)
    checkpoint = tmp_path / "killed.work" / "checkpoint"
    kill_after_first_epoch(command, checkpoint)
    os.replace(checkpoint, checkpoint.with_name("checkpoint.old"))
    subprocess.run([*command, "--resume"], check=True, capture_output=True)
    b = _predict(killed, tmp_path / "b.csv")
    np.testing.assert_allclose(b.price, straight_run.price, rtol=1e-6, atol=0)


def test_two_processes_with_accelerate_launch(tmp_path, encoders):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "smartprice",
           *_train_cmd(out, encoders["distilroberta"], "--set", "loop.epochs=1")[3:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = _predict(out, tmp_path / "p.csv")
    assert len(predictions) == len(pd.read_csv(EXAMPLES / "test.csv")) and (predictions.price > 0).all()


def test_sampler_never_yields_a_single_row_batch():
    from trainloop.sampling import EpochSampler

    for lengths in (None, list(range(17))):
        sampler = EpochSampler(17, 8, seed=0, length_of=lengths.__getitem__ if lengths else None)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 2
        assert sorted(i for b in batches for i in b) == list(range(17)) and min(map(len, batches)) > 1


def test_log_with_tensorboard_writes_loss_lr_and_validation_smape(tmp_path, encoders, monkeypatch):
    """`--set loop.log_with=tensorboard` (the README's option): event files under ./runs/smartprice read back."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed: pip install -e '.[dev]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from smartprice.cli import main
    from smartprice.presets import resolve_preset
    from trainloop.config import warmup_steps
    from trainloop.loop import _lr_lambda

    monkeypatch.chdir(tmp_path)  # the tracker writes under the working directory, as for a user
    sets = {"encoder": encoders["distilroberta"], "loop.epochs": 2, "loop.batch_size": 8, "loop.grad_accum": 2,
            "max_length": 32, "loop.num_workers": 0, "loop.progress": False, "loop.log_with": "tensorboard"}
    assert main(["train", str(EXAMPLES / "train.csv"), "--out", "m", "--preset", "blazing",
                 *(f"--set={k}={v}" for k, v in sets.items())]) == 0
    runs = [p.parent for p in (tmp_path / "runs" / "smartprice").rglob("events.out.tfevents.*")]
    assert runs, f"no event files under {tmp_path / 'runs'}: {sorted(map(str, tmp_path.rglob('*')))}"
    scalars: dict[str, list] = {}
    for run_dir in set(runs):
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(events.Scalars(tag))
    loss, lr, valid = (sorted(scalars.get(tag, []), key=lambda e: e.step) for tag in ("train_loss", "lr", "valid_smape"))
    total = len(loss)  # one point per optimizer step, both epochs
    assert total >= 4 and [e.step for e in loss] == list(range(1, total + 1)) == [e.step for e in lr]
    assert all(np.isfinite(e.value) and e.value > 0 for e in loss)
    loop = resolve_preset("blazing", sets).loop  # each step's LR is the schedule's, from warmup to decay
    factor = _lr_lambda(warmup_steps(loop, total), total, loop.schedule)
    np.testing.assert_allclose([e.value for e in lr], [loop.lr * factor(e.step - 1) for e in lr], rtol=1e-5)
    assert len(valid) == 2 and all(0 < e.value <= 200 for e in valid)  # validation SMAPE, once per epoch
