"""The page `serve` answers a browser with, through FastAPI's test client: answers, files, limits, escaping.

Every bad input must come back as the page with a message next to its control (4xx), never a
traceback; listing text (pasted, from the training file, file names) must come back as text.
"""

from __future__ import annotations

import bz2
import gzip
import html as markup
import io
import re
import zipfile

import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'smartprice[serve]'")
pytest.importorskip("jinja2", reason="the serve extra is not installed: pip install 'smartprice[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import make_catalog  # noqa: E402
from smartprice import PricePredictor  # noqa: E402
from smartprice.serve import MAX_BODY_BYTES, MAX_ITEMS, MAX_TEXT_CHARS, create_app  # noqa: E402
from smartprice.web.routes import paste_bytes  # noqa: E402

SCRIPT = "<script>alert('x')</script>"
TRAINING_SCRIPT_NAME = f"Evil Hot Sauce {SCRIPT} 12 Ounce"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small cpu model whose training listings include one with markup in its name."""
    frame = make_catalog(60)
    frame.loc[len(frame)] = {"sample_id": "evil", "image_link": "",
                             "catalog_content": f"Item Name: {TRAINING_SCRIPT_NAME}\nValue: 12\nUnit: Ounce\n", "price": 9.5}
    path = tmp_path_factory.mktemp("page") / "model"
    PricePredictor(preset="cpu", trees=30, folds=3, hash_bits=16).fit(frame).save(path)
    return path


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir)) as test_client:
        yield test_client


def error_of(html: str, field: str) -> str:
    """The text of the message shown next to control `field`."""
    found = re.search(rf'id="{field}-error"[^>]*>(.*?)</p>', html, re.S)
    assert found, f"no message next to {field!r}"
    return markup.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def no_traceback(html: str) -> None:
    assert "Traceback" not in html and 'File "' not in html


def upload(client, name: str, content: bytes, **data):
    return client.post("/price-file", files={"file": (name, content)}, data=data)


def test_the_page_opens_offline_with_a_label_for_every_control(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert len(response.content) < 100_000
    assert "Content-Security-Policy" in response.headers and "script-src 'self'" in response.headers["Content-Security-Policy"]
    links = re.findall(r'(?:src|href|action)="([^"]+)"', html)
    assert not [link for link in links if re.match(r"(https?:)?//", link)], links  # nothing from another host
    for asset in ("/static/page.css", "/static/page.js"):
        assert client.get(asset).status_code == 200
    controls = re.findall(r'<(?:input|textarea|select)\b[^>]*\bid="([^"]+)"', html)
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    assert controls and not set(controls) - labels, set(controls) - labels
    assert "Training listings</dt><dd>61</dd>" in html  # the model card
    assert client.get("/static/nothing.txt").status_code == 404
    for form in ("/price", "/price-file"):  # a bookmarked or reloaded answer leads back to the page
        response = client.get(form, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/"


def test_a_pasted_listing_is_answered_on_the_page(client, model_dir):
    text = make_catalog(1, labelled=False).catalog_content[0]
    response = client.post("/price", data={"listing": text})
    assert response.status_code == 200, response.text
    html = response.text
    expected = PricePredictor.load(model_dir).predict(pd.DataFrame({"catalog_content": [text]}))[0]
    assert re.search(r'class="price" data-price="([\d.]+)"', html).group(1) == f"{expected:.2f}"
    assert "La Victoria Green Taco Sauce" in html  # parsed item name, and neighbours from the training file
    assert "Training listings it resembles most" in html and "What moved the price" in html
    assert re.search(r"(raised|lowered) it by \d+%", html)
    assert "<dt>Quantity</dt><dd>72 Fl Oz (volume)" in html
    assert response.headers["server-timing"].startswith("app;dur=")


def test_typed_parts_are_priced_like_the_same_pasted_listing(client):
    typed = client.post("/price", data={"listing": "", "item_name": "Salerno Butter Cookies, 8 Ounce (Pack of 4)",
                                         "bullets": "Tasty\nCrisp", "value": "32", "unit": "Ounce"})
    pasted = client.post("/price", data={"listing": "Item Name: Salerno Butter Cookies, 8 Ounce (Pack of 4)\n"
                                                    "Bullet Point 1: Tasty\nBullet Point 2: Crisp\nValue: 32\nUnit: Ounce\n"})
    assert typed.status_code == pasted.status_code == 200
    price = re.compile(r'data-price="([\d.]+)"')
    assert price.search(typed.text).group(1) == price.search(pasted.text).group(1)


def test_listing_text_is_shown_as_text_never_markup(client):
    response = client.post("/price", data={"listing": f"Item Name: Evil Hot Sauce {SCRIPT} 12 Ounce\nValue: 12\nUnit: Ounce"})
    assert response.status_code == 200
    html = response.text
    assert "<script>alert" not in html
    assert html.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") >= 3  # the textarea, the item read, the neighbour
    neighbours = html[html.index("Training listings it resembles most"):]
    assert "Evil Hot Sauce &lt;script&gt;" in neighbours  # the training listing, escaped


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"listing": "  \n "}, "listing", "paste a listing"),
    ({"listing": "x" * (MAX_TEXT_CHARS + 1)}, "listing", f"the limit is {MAX_TEXT_CHARS:,}"),
    ({"listing": "", "bullets": "only bullets"}, "item_name", "type the item name"),
    ({"listing": "", "item_name": "Tea", "value": "a dozen"}, "value", "must be a number above 0"),
    ({"listing": "", "item_name": "Tea", "value": "-3"}, "value", "must be a number above 0"),
    ({"listing": "", "item_name": "Tea <b>", "value": "<script>"}, "value", "got &#39;&lt;script&gt;&#39;"),
])
def test_bad_listings_get_a_message_next_to_the_field(client, data, field, message):
    response = client.post("/price", data=data)
    assert response.status_code == 422
    no_traceback(response.text)
    assert 'aria-invalid="true"' in response.text
    found = re.search(rf'id="{field}-error"[^>]*>(.*?)</p>', response.text, re.S)
    assert found and message in found.group(1), response.text[:3000]
    assert "<script>" not in response.text


def test_a_paste_body_over_the_limit_is_refused_before_parsing(client):
    response = client.post("/price", content=b"listing=" + b"x" * paste_bytes(MAX_TEXT_CHARS),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert "over the limit" in error_of(response.text, "listing")
    assert client.post("/price", data={"listing": "Item Name: Tea"}).status_code == 200  # and the server still answers


def csv_bytes(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def zipped(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


FORMATS = {
    "shop.csv": lambda f: csv_bytes(f), "shop.tsv": lambda f: csv_bytes(f, "\t"), "shop.parquet": parquet_bytes,
    "shop.csv.gz": lambda f: gzip.compress(csv_bytes(f)), "shop.tsv.bz2": lambda f: bz2.compress(csv_bytes(f, "\t")),
    "shop.csv.zip": lambda f: zipped("shop.csv", csv_bytes(f)),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_an_uploaded_file_comes_back_priced_as_predict_writes_it(client, model_dir, tmp_path, name):
    from smartprice.stream import predict_file

    frame = make_catalog(25, labelled=False)
    response = upload(client, name, FORMATS[name](frame))
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="shop-priced.csv"' in response.headers["content-disposition"]
    source = tmp_path / "shop.csv"
    source.write_bytes(csv_bytes(frame))
    predict_file(PricePredictor.load(model_dir), source, tmp_path / "out.csv")
    assert response.content == (tmp_path / "out.csv").read_bytes()  # the same rows, order and digits


@pytest.mark.parametrize(("name", "content", "message"), [
    ("notes.txt", b"just some words\nand more", "missing required column 'sample_id', 'catalog_content'"),
    ("empty.csv", b"", "empty.csv: file is empty"),
    ("header.csv", b"sample_id,catalog_content\n", "has a header but no rows"),
    ("dupes.csv", b"sample_id,catalog_content\n1,a\n1,b\n", "dupes.csv, row 2, column 'sample_id': duplicate"),
    ("broken.csv.gz", b"\x1f\x8b\x08\x00garbage", "cannot decompress"),
    ("photo.parquet", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "cannot read as Parquet"),
    ("<img src=x onerror=alert(1)>.csv", b"a,b\n1,2\n", "<img src=x onerror=alert(1)>.csv: missing required column"),
])
def test_a_file_that_is_not_a_catalog_gets_a_message(client, name, content, message):
    response = upload(client, name, content)
    assert response.status_code == 422, response.text[:2000]
    no_traceback(response.text)
    assert message in error_of(response.text, "file")
    assert "smartprice-upload-" not in response.text  # the server's own temporary path is never shown
    assert "<img src=x" not in response.text  # shown as text: &lt;img ...


def test_no_file_chosen_gets_a_message(client):
    response = client.post("/price-file", files={"file": ("", b"")})
    assert response.status_code == 422 and "choose a file" in error_of(response.text, "file")


def test_files_over_the_limits_are_refused(client):
    rows = MAX_ITEMS + 1
    many = csv_bytes(pd.DataFrame({"sample_id": [str(i) for i in range(rows)], "catalog_content": ["Item Name: Tea"] * rows}))
    response = upload(client, "many.csv", many)
    assert response.status_code == 413 and f"more than {MAX_ITEMS:,} rows" in error_of(response.text, "file")
    lines = b"sample_id,catalog_content\n" + b"".join(b"%d,x\n" % i for i in range(MAX_BODY_BYTES // 8))
    for size in (MAX_BODY_BYTES + 1, len(lines)):  # just over (the file's size), far over (the body, while it streams)
        response = upload(client, "huge.csv", lines[:size])
        assert response.status_code == 413 and "over the limit of 20 MB" in error_of(response.text, "file")
    assert upload(client, "ok.csv", csv_bytes(make_catalog(3, labelled=False))).status_code == 200


@pytest.fixture(scope="module")
def client_without_ranges(tmp_path_factory):
    """A model fitted with range_method=none: no calibrated ranges, as models saved before they existed."""
    path = tmp_path_factory.mktemp("page") / "no-ranges"
    PricePredictor(preset="cpu", trees=30, folds=3, hash_bits=16, range_method="none").fit(make_catalog(40)).save(path)
    with TestClient(create_app(path)) as test_client:
        yield test_client


def test_without_ranges_the_page_says_so_and_refuses_range_columns(client_without_ranges):
    client = client_without_ranges
    page = client.get("/").text
    assert "<fieldset disabled>" in page and "This model has no calibrated ranges" in page
    answer = client.post("/price", data={"listing": "Item Name: Tea 20 Count\nValue: 20\nUnit: Count"}).text
    assert 'class="price"' in answer and "Likely between" not in answer
    response = upload(client, "shop.csv", csv_bytes(make_catalog(3, labelled=False)), ranges="yes", coverage="0.8")
    assert response.status_code == 422 and "no price ranges" in error_of(response.text, "ranges")
    assert upload(client, "shop.csv", csv_bytes(make_catalog(3, labelled=False))).status_code == 200


def test_ranges_are_shown_and_written_as_predict_writes_them(client, model_dir, tmp_path):
    """The range beside one price, and price_low/price_high in a priced file, as `smartprice predict --interval`."""
    from smartprice.stream import predict_file

    model = PricePredictor.load(model_dir)
    assert model.describe()["ranges"]
    frame = make_catalog(6, labelled=False)
    html = client.post("/price", data={"listing": frame.catalog_content[0]}).text
    low, high = (float(v.replace(",", "")) for v in re.search(r"Likely between <strong>([\d,.]+)</strong> and\s*"
                                                              r"<strong>([\d,.]+)</strong>", html).groups())
    expected = model.predict_interval(frame.iloc[:1], coverage=0.8).iloc[0]
    assert (f"{low:.2f}", f"{high:.2f}") == (f"{expected.price_low:.2f}", f"{expected.price_high:.2f}")
    assert low <= float(re.search(r'data-price="([\d.]+)"', html).group(1)) <= high
    response = upload(client, "shop.csv", csv_bytes(frame), ranges="yes", coverage="0.9")
    assert response.status_code == 200, response.text[:2000]
    source = tmp_path / "shop.csv"
    source.write_bytes(csv_bytes(frame))
    predict_file(model, source, tmp_path / "out.csv", interval=0.9)
    assert response.content == (tmp_path / "out.csv").read_bytes()
    assert response.content.startswith(b"sample_id,price,price_low,price_high\n")
    response = upload(client, "shop.csv", csv_bytes(frame), ranges="yes", coverage="1.5")
    assert response.status_code == 422 and "between 0 and 1" in error_of(response.text, "coverage")


def test_a_defect_of_ours_is_a_page_with_a_notice_not_a_traceback(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app.state.predictor, "explain", broken)
    response = client.post("/price", data={"listing": "Item Name: Tea"})
    assert response.status_code == 500 and "went wrong on our side (RuntimeError)" in response.text
    assert "secret internals" not in response.text
    no_traceback(response.text)


def test_the_json_api_keeps_its_body_guard(client):
    assert client.post("/predict", data={"items": "x"}).status_code == 415  # forms are the page's, not the API's
    assert client.post("/price", json={"listing": "x"}).status_code == 415
