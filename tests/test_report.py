"""The HTML report and per-listing explanations on a small CPU model; one-line errors for bad model directories."""

from __future__ import annotations

import base64
import builtins
import io
import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.cli import main
from smartprice.explain import NO_CONTRIBUTIONS_BLEND, NO_CPU_PART, NO_LISTINGS, explain_listings
from smartprice.modelio import FORMAT_VERSION
from smartprice.presets import BlendPreset, FusionPreset
from smartprice.report import SECTIONS, WORST

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    return PricePredictor(preset="cpu", trees=30, folds=3, neighbours=5).fit(make_catalog(60))


@pytest.fixture(scope="module")
def model_dir(fitted, tmp_path_factory):
    return fitted.save(tmp_path_factory.mktemp("report") / "model")


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "labelled.csv"
    make_catalog(45).to_csv(path, index=False)
    return path


class _Page(HTMLParser):
    """Collects section ids, image sources and whether any script, link or external reference appears."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.images, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link", "iframe") or any(str(v).startswith(("http:", "https:", "//"))
                                                       for k, v in attrs.items() if k in ("src", "href")):
            self.external.append(tag)


def test_report_html_parses_images_decode_sections_present(tmp_path, model_dir, labelled_csv):
    import matplotlib.image

    out, figures = tmp_path / "r" / "report.html", tmp_path / "figures.json"
    assert main(["-q", "report", str(model_dir), str(labelled_csv), "--out", str(out), "--json", str(figures)]) == 0
    page = _Page()
    page.feed(out.read_text(encoding="utf-8"))
    page.close()
    assert page.ids == list(SECTIONS) and not page.external
    assert len(page.images) == 7  # bands, scatter, log error, dimension, pack, range calibration, importance
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    data = json.loads(figures.read_text())
    assert data["rows"] == 45 and data["model"]["preset"] == "cpu" and data["model"]["training_rows"] == 60
    assert data["model"]["format_version"] == FORMAT_VERSION and data["model"]["fit_seconds"] > 0
    assert sum(b["rows"] for b in data["by_band"].values()) == 45
    assert sum(d["rows"] for d in data["by_dimension"].values()) == 45
    assert sum(p["rows"] for p in data["by_pack"].values()) == 45
    assert len(data["worst"]) == min(WORST, 45) and all(len(w["neighbours"]) == 3 for w in data["worst"])
    smapes = [w["smape"] for w in data["worst"]]
    assert smapes == sorted(smapes, reverse=True)
    assert data["importance"]["features"] and "ridge_word" in data["importance"]["features"]
    assert [p["nominal"] for p in data["ranges"]["calibration"]] == [50, 80, 90, 95]
    assert all(0 <= p["coverage"] <= 100 and p["rows"] == 45 for p in data["ranges"]["calibration"])
    assert sum(b["rows"] for b in data["ranges"]["by_band"].values()) == 45
    assert all(w["range"][0] <= w["predicted"] <= w["range"][1] for w in data["worst"])


def test_report_without_matplotlib_is_one_line(tmp_path, model_dir, labelled_csv, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["report", str(model_dir), str(labelled_csv), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "smartprice: error: the report needs matplotlib, which is not installed: pip install 'smartprice[report]'"
    assert not (tmp_path / "r.html").exists()


def test_explain_contributions_sum_to_the_logged_prediction(fitted):
    test = make_catalog(12, labelled=False)
    explanations = fitted.explain(test, k=4)
    prices = fitted.predict(test)
    assert [e["sample_id"] for e in explanations] == test["sample_id"].tolist()
    for entry, price in zip(explanations, prices):
        assert abs(sum(entry["contributions"].values()) - entry["log_price"]) < 1e-6
        assert not entry["clipped"] and abs(np.log1p(price) - entry["log_price"]) < 1e-6
        assert entry["price"] == pytest.approx(price, rel=1e-12)
        assert len(entry["neighbours"]) == 4 and entry["notes"] == []
        sims = [n["similarity"] for n in entry["neighbours"]]
        assert sims == sorted(sims, reverse=True) and 0 < sims[0] <= 1 + 1e-6
    first = explanations[0]
    assert first["parsed"] == {"item_name": "La Victoria Green Taco Sauce Mild, 12 Ounce (Pack of 6) v1", "value": 72.0,
                               "unit": "Fl Oz", "dimension": "volume", "pack_count": 6,
                               "total_quantity": pytest.approx(72 * 29.5735), "base_unit": "ml",
                               "brand": "la victoria", "category": "sauce"}
    assert first["neighbours"][0]["name"] == first["parsed"]["item_name"]  # the listing itself is in training
    assert first["neighbours"][0]["price"] == pytest.approx(14.9)


def test_explain_after_load_is_identical_and_names_stay_compact(fitted, model_dir):
    test = make_catalog(6, labelled=False)
    assert PricePredictor.load(model_dir).explain(test) == fitted.explain(test)
    with np.load(model_dir / "train_listings.npz", allow_pickle=False) as arrays:  # no object arrays: no pickle
        assert {a.dtype.kind for a in arrays.values()} <= {"u", "i", "f"}


def test_explain_on_a_model_saved_without_listings(tmp_path, fitted):
    directory = fitted.save(tmp_path / "old")
    (directory / "train_listings.npz").unlink()
    config = json.loads((directory / "config.json").read_text())
    del config["files"]["train_listings.npz"], config["fit_info"]
    (directory / "config.json").write_text(json.dumps(config))
    loaded = PricePredictor.load(directory)
    entry = loaded.explain(make_catalog(2, labelled=False))[0]
    assert entry["neighbours"] is None and entry["notes"] == [NO_LISTINGS]
    assert entry["contributions"] and entry["price"] > 0
    assert loaded.describe()["training_rows"] is None


class _Transformer:
    """Stands in for a fusion model (the PriceModel contract): it predicts, and nothing explains it."""

    preset = FusionPreset()

    def predict(self, texts):
        return np.full(len(texts), 2.0)

    def explainer(self):
        return None


class _Blend(_Transformer):
    preset = BlendPreset()

    def __init__(self, cpu):
        self.cpu_ = cpu

    def explainer(self):
        return self.cpu_


def test_explain_says_what_does_not_apply_to_fusion_and_blend(fitted):
    texts = make_catalog(3, labelled=False)["catalog_content"].tolist()
    fusion = explain_listings(_Transformer(), texts, np.expm1)
    assert fusion[0]["price"] == pytest.approx(np.expm1(2.0)) and fusion[0]["parsed"]["pack_count"] == 6
    assert fusion[0]["neighbours"] is None and fusion[0]["contributions"] is None and fusion[0]["notes"] == [NO_CPU_PART]
    blend = explain_listings(_Blend(fitted.model_), texts, np.expm1, k=2)
    assert len(blend[0]["neighbours"]) == 2 and blend[0]["contributions"] is None
    assert blend[0]["notes"] == [NO_CONTRIBUTIONS_BLEND]


def test_explain_cli_text_and_json(tmp_path, model_dir, labelled_csv, capsys):
    assert main(["-q", "explain", str(model_dir), str(labelled_csv), "--rows", "3", "--neighbours", "2", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["sample_id"] for e in entries] == ["1000", "1001", "1002"]
    assert main(["-q", "explain", str(model_dir), str(labelled_csv), "--rows", "2"]) == 0
    text = capsys.readouterr().out
    assert "predicted price" in text and "nearest training listings" in text and "contributions to log1p(price)" in text


def _damage(directory, how):
    if how == "truncated":
        artefact = directory / "lightgbm.txt"
        artefact.write_bytes(artefact.read_bytes()[:100])
        return "incomplete model, lightgbm.txt has 100 bytes"
    if how == "listings":
        artefact = directory / "train_listings.npz"
        artefact.write_bytes(b"\0" * artefact.stat().st_size)  # same size, damaged content
        return "damaged model, train_listings.npz does not match its checksum"
    (directory / "config.json").write_text("{not json")
    return "damaged config"


@pytest.mark.parametrize("command", ["report", "explain"])
@pytest.mark.parametrize("how", ["truncated", "listings", "config"])
def test_bad_model_directory_is_one_line(tmp_path, fitted, labelled_csv, command, how):
    directory = fitted.save(tmp_path / "m")
    message = _damage(directory, how)
    args = [str(directory), str(labelled_csv)] + (["--out", str(tmp_path / "r.html")] if command == "report" else [])
    result = subprocess.run([sys.executable, "-m", "smartprice", "-q", command, *args], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("smartprice: error: ") and message in result.stderr
