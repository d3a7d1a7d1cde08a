"""The package's structure: the model-kind registry, the import graph, and bugs told apart from user mistakes."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_catalog, tiny_encoder
from smartprice import PricePredictor, UserError
from smartprice.cli import BUG_NOTE, main
from smartprice.kinds import KINDS, Explainer, kind_of, model_class
from smartprice.presets import resolve_preset

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "smartprice"
# Modules below the predictor (README, layout: cli / serve / report / integrations -> predictor -> kinds -> models
# -> features -> catalog): none of them may import it, not even inside a function.
BELOW_PREDICTOR = ("kinds", "errors", "presets", "catalog", "features", "units", "metrics", "modelio", "explain",
                   "blend", "fusion", "losses", "embeddings", "encoders", "cpu/views", "cpu/neighbours", "cpu/level1",
                   "cpu/trees", "cpu/model", "cpu/runtime", "cpu/parallel", "cpu/difficulty", "ranges")
NN = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


def _imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against the smartprice package."""
    package = ["smartprice", *path.relative_to(PACKAGE).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", BELOW_PREDICTOR)
def test_nothing_below_the_predictor_imports_it(module):
    assert "smartprice.predictor" not in _imports(PACKAGE / f"{module}.py"), f"{module}.py imports smartprice.predictor"


def _settings(kind: str, tmp_path: Path) -> tuple[str, dict]:
    """A preset of `kind` with its defaults, made small enough for a test (tiny random encoder, one epoch)."""
    if kind == "cpu":
        return "cpu", {"trees": 40}
    encoder = tiny_encoder("distilroberta", tmp_path / "encoder")
    small = {"encoder": encoder, "loop.epochs": 1, "loop.batch_size": 8, "loop.grad_accum": 1, "max_length": 48,
             "loop.progress": False}
    if kind == "fusion":
        return "blazing", small
    return "blend", {**{f"fusion.{k}": v for k, v in small.items()}, "cpu.trees": 40, "valid_fraction": 0.2}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registered_kind_fits_saves_loads_and_predicts(kind, tmp_path):
    entry = KINDS[kind]
    if entry.needs_nn and not NN:
        pytest.skip("this kind needs the nn extra")
    preset, settings = _settings(kind, tmp_path)
    config = resolve_preset(preset, settings)
    assert kind_of(config) is entry and isinstance(config, entry.preset_class)
    frame = make_catalog(60)
    model = PricePredictor(preset, **settings).fit(frame)
    assert type(model.model_) is model_class(config)
    explainer = model.model_.explainer()
    assert (explainer is not None) == entry.neighbours
    assert explainer is None or isinstance(explainer, Explainer)
    model.save(tmp_path / "m")
    loaded = PricePredictor.load(tmp_path / "m")
    assert type(loaded.model_) is type(model.model_)
    np.testing.assert_allclose(loaded.predict(frame), model.predict(frame), rtol=1e-6)
    explanation = loaded.explain(frame.iloc[:2], k=3)[0]
    assert (explanation["contributions"] is not None) == entry.explains_prices
    assert bool(explanation["neighbours"]) == entry.neighbours


def test_user_errors_are_one_family():
    from smartprice.catalog import CatalogError
    from smartprice.encoders import EncoderError
    from smartprice.errors import MissingExtraError, SettingsError
    from smartprice.modelio import ModelDirError

    for error in (CatalogError, EncoderError, MissingExtraError, SettingsError, ModelDirError):
        assert issubclass(error, UserError) and issubclass(error, ValueError)
    with pytest.raises(SettingsError, match="unknown preset field"):
        resolve_preset("cpu", {"nope": 1})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("structure") / "m"
    PricePredictor("cpu", trees=30).fit(make_catalog(60)).save(directory)
    return directory


def test_a_bug_is_shown_as_a_bug_on_the_cli(model_dir, tmp_path, capsys, monkeypatch):
    from smartprice.cpu.runtime import CpuStack

    def broken(self, texts):
        raise ZeroDivisionError("a deliberately broken model class")

    monkeypatch.setattr(CpuStack, "predict", broken)
    make_catalog(5, labelled=False).to_csv(tmp_path / "test.csv", index=False)
    assert main(["-q", "predict", str(model_dir), str(tmp_path / "test.csv"), "--out", str(tmp_path / "p.csv")]) == 1
    error = capsys.readouterr().err
    assert "Traceback (most recent call last)" in error and "ZeroDivisionError: a deliberately broken model class" in error
    assert error.rstrip().endswith(BUG_NOTE.format(version=__import__("smartprice").__version__))
    assert not (tmp_path / "p.csv").exists()


def test_a_user_mistake_stays_one_line(model_dir, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("sample_id,catalog_content\n1,a\n1,b\n")
    assert main(["-q", "predict", str(model_dir), str(tmp_path / "bad.csv"), "--out", str(tmp_path / "p.csv")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "duplicate sample_id" in error and "Traceback" not in error
    config = json.loads((model_dir / "config.json").read_text())
    assert config["format_version"] == 2


def test_a_bug_is_a_500_with_json_over_http(model_dir, monkeypatch, caplog):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from smartprice.cpu.runtime import CpuStack
    from smartprice.serve import create_app

    with TestClient(create_app(model_dir), raise_server_exceptions=False) as client:
        monkeypatch.setattr(CpuStack, "predict", lambda self, texts: 1 / 0)
        with caplog.at_level("ERROR", logger="smartprice.serve"):
            response = client.post("/predict", json={"items": [{"sample_id": "1", "catalog_content": "x"}]})
    assert response.status_code == 500 and "bug in smartprice" in response.json()["detail"]
    assert "Traceback" in caplog.text and "ZeroDivisionError" in caplog.text
