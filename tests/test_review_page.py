"""``fer data review``: the mislabel review page - its builder (fast) and a whole review in headless Chromium."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from fer_cli.main import main
from fer_core.data.loader import load_split
from fer_core.data.relabels import read_relabels
from fer_core.data.review_page import (
    GENERATOR,
    Candidate,
    Duplicate,
    png_data_uri,
    read_candidates,
    render_page,
    write_review_page,
)
from fer_core.errors import DataError, ManifestError

XSS_ID = "src:happy/x\"'><img src=x onerror=alert(1)>,&.png"
XSS_NAME = "<script>alert(2)</script>"
XSS_CLASS = "sad</script><script>alert(3)</script>"


def _all_rows(data: Path) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (class name, image) over every split of the data set at ``data``."""
    out = {}
    for split in ("train", "val", "test"):
        part = load_split(str(data), split)
        for i, y, img in zip(part.ids, part.labels, part.images, strict=True):
            out[i] = (part.classes[y], img)
    return out


def _write_report_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


MISLABEL_HEADER = ["rank", "id", "label", "suggested", "self_confidence", "suggested_confidence", "new_label"]


@pytest.fixture
def reviewed(ingested, tmp_path) -> tuple[Path, list[str], dict]:
    """A copy of the session's ingested set with a hand-written mislabels.csv (3 rows) and duplicates.csv."""
    data = tmp_path / "data"
    shutil.copytree(ingested, data)
    rows = _all_rows(data)
    ids = sorted(rows)[:4]
    label = {i: rows[i][0] for i in ids}
    other = {i: "surprise" if label[i] != "surprise" else "happy" for i in ids}
    _write_report_csv(
        data / "report" / "mislabels.csv",
        MISLABEL_HEADER,
        [[k + 1, i, label[i], other[i], f"0.0{k + 1}", "0.9000", ""] for k, i in enumerate(ids[:3])],
    )
    # ids[0]'s group: ids[3] (kept, in the shards) and a removed copy (no pixels in the data set).
    _write_report_csv(
        data / "report" / "duplicates.csv",
        ["group", "id", "label", "split", "exact", "conflict", "action"],
        [
            [7, ids[0], label[ids[0]], "", 0, 0, "kept"],
            [7, ids[3], label[ids[3]], "", 0, 0, "kept"],
            [7, "src:gone.png", "sad", "", 1, 0, "removed-duplicate"],
        ],
    )
    return data, ids, rows


# ----------------------------------------------------------------------------------------------
# The page builder


def _candidate(**kw) -> Candidate:
    img = png_data_uri(np.zeros((4, 4, 1), np.uint8))
    base = dict(
        rank=1,
        id="a",
        label="happy",
        suggested="sad",
        self_confidence=0.05,
        suggested_confidence=0.9,
        image=img,
    )
    return Candidate(**{**base, **kw})


def test_everything_from_the_data_set_is_escaped():
    manifest = {"name": XSS_NAME, "version": "v<1>", "classes": ["happy", XSS_CLASS]}
    dup = Duplicate(id=XSS_ID + "2", label=XSS_CLASS, action="<b>removed</b>", image=None)
    page = render_page(manifest, [_candidate(id=XSS_ID, suggested=XSS_CLASS, duplicates=[dup])])
    for raw in (XSS_ID, XSS_NAME, XSS_CLASS, "<b>removed</b>", "v<1>", "alert(1)>"):
        assert raw not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data and the page's own script
    assert "&lt;img src=x onerror=alert(1)&gt;,&amp;.png" in page  # shown as text
    assert 'data-id="src:happy/x&quot;&#x27;&gt;&lt;img' in page  # attribute values quoted and escaped
    assert "sad\\u003c/script\\u003e\\u003cscript\\u003ealert(3)" in page  # in the JSON for the script
    assert "http://" not in page and "https://" not in page  # nothing fetched: opens offline
    assert GENERATOR in page


def test_large_images_are_inlined_shrunk():
    import base64
    import io

    from PIL import Image

    uri = png_data_uri(np.zeros((512, 300, 3), np.uint8), max_side=128)
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        assert img.size == (75, 128)


def test_page_shows_key_map_classes_counts_and_duplicates():
    manifest = {
        "name": "d",
        "version": "v1",
        "classes": ["happy", "neutral", "sad", "surprise"],
        "quality": {"mislabels": {"candidates": 40, "expected_errors": 31}},
    }
    kept = Duplicate(id="d:kept.png", label="sad", action="kept", image=png_data_uri(np.ones((4, 4, 3), np.uint8)))
    gone = Duplicate(id="d:gone.png", label="happy", action="removed-duplicate", image=None)
    page = render_page(manifest, [_candidate(duplicates=[kept, gone]), _candidate(rank=2, id="b")])
    assert page.count('<article class="card"') == 2
    assert "2 candidates shown of 40 flagged; about 31 label errors expected" in page
    assert "<kbd>1</kbd> happy <kbd>2</kbd> neutral <kbd>3</kbd> sad <kbd>4</kbd> surprise" in page
    for key in ("A", "K", "D", "1-9", "U"):
        assert f"<kbd>{key}</kbd>" in page
    assert page.count('alt="near duplicate') == 1 and "image not kept" in page
    assert 'id="review-data">{"version": "v1", "classes": ["happy", "neutral", "sad", "surprise"]}' in page
    assert "Download relabels.csv" in page and "localStorage" in page


def test_read_candidates_takes_images_from_the_shards_and_duplicates_from_the_report(reviewed):
    data, ids, rows = reviewed
    manifest, cands = read_candidates(str(data), max_items=2)
    assert [c.id for c in cands] == ids[:2] and [c.rank for c in cands] == [1, 2]
    assert cands[0].image == png_data_uri(rows[ids[0]][1])
    assert cands[0].self_confidence == pytest.approx(0.01) and cands[0].suggested_confidence == pytest.approx(0.9)
    dups = cands[0].duplicates
    assert [(d.id, d.action) for d in dups] == [(ids[3], "kept"), ("src:gone.png", "removed-duplicate")]
    assert dups[0].image == png_data_uri(rows[ids[3]][1]) and dups[1].image is None  # 48 px: not shrunk
    assert cands[1].duplicates == []
    assert manifest["version"] == read_candidates(str(data))[0]["version"]


def test_cli_writes_the_page_into_the_report_and_refuses_other_files(reviewed, capsys):
    data, ids, _ = reviewed
    assert main(["data", "review", str(data), "--max", "2"]) == 0
    page = data / "report" / "review.html"
    assert f"wrote {page} (2 candidates)" in capsys.readouterr().out
    text = page.read_text()
    assert text.count('<article class="card"') == 2 and ids[2] not in text
    assert main(["data", "review", str(data)]) == 0  # its own page is replaced
    assert page.read_text().count('<article class="card"') == 3
    other = data / "report" / "notes.html"
    other.write_text("<html>mine</html>")
    with pytest.raises(DataError, match="notes.html: exists and is not a review page"):
        write_review_page(str(data), other)
    assert other.read_text() == "<html>mine</html>"


@pytest.mark.parametrize(
    "change, message",
    [
        ("missing", "mislabels.csv: no such file (the ingest did not search for mislabels: --no-mislabels"),
        ("unknown id", "mislabels.csv line 2: id 'nope' is not in the data set's shards"),
        ("unknown class", "mislabels.csv line 2: label 'angry' is not one of the data set's classes"),
        ("no id column", "mislabels.csv: lacks column(s) id"),
        ("bad number", "mislabels.csv line 2: rank or confidence is not a number"),
    ],
)
def test_bad_reports_are_one_line_errors(reviewed, change, message):
    data, ids, _ = reviewed
    path = data / "report" / "mislabels.csv"
    rows = list(csv.reader(path.open(newline="")))
    if change == "missing":
        path.unlink()
    elif change == "unknown id":
        rows[1][1] = "nope"
    elif change == "unknown class":
        rows[1][2] = "angry"
    elif change == "no id column":
        rows = [[c for k, c in enumerate(r) if k != 1] for r in rows]
    elif change == "bad number":
        rows[1][4] = "low"
    if change != "missing":
        _write_report_csv(path, rows[0], rows[1:])
    with pytest.raises(DataError) as err:
        read_candidates(str(data))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_not_a_data_set_and_bad_max(tmp_path, reviewed):
    with pytest.raises(ManifestError, match="is this a folder written by 'fer data ingest'"):
        read_candidates(str(tmp_path))
    with pytest.raises(DataError, match="--max: expected at least 1, got 0"):
        read_candidates(str(reviewed[0]), max_items=0)


# ----------------------------------------------------------------------------------------------
# A whole review in the browser: decide by keyboard, reload, download, re-ingest


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    import chromium

    driver = chromium.start(downloads=downloads)
    try:
        yield driver
    finally:
        driver.quit()


def _current(driver) -> int:
    return int(driver.execute_script("return document.querySelector('article.card.current').id.split('-')[1]"))


@pytest.mark.slow
@pytest.mark.browser
def test_review_by_keyboard_survives_reload_and_its_download_relabels_the_next_ingest(tmp_path, browser, downloads):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from fer_core.data.synth import SynthConfig, generate, write_folders

    raw = write_folders(generate(SynthConfig(n=400, seed=7, duplicate_share=0.0)), tmp_path / "raw")
    # Ids with a comma, quotes and markup: the page must escape them and the CSV must quote them.
    for f in sorted((raw / "sad").iterdir()):
        f.rename(f.with_name(f"s,\"<b>&'{f.name}"))
    data = tmp_path / "data"
    assert main(["data", "ingest", str(raw), "--out", str(data), "--quiet", "--max-candidates", "60"]) == 0
    assert main(["data", "review", str(data)]) == 0
    page = data / "report" / "review.html"
    before = _all_rows(data)

    browser.get(page.as_uri())
    cards = browser.execute_script(
        "return Array.from(document.querySelectorAll('article.card')).map(c => ({id: c.dataset.id, "
        "label: c.dataset.label, suggested: c.dataset.suggested, dups: !!c.querySelector('.dups')}))"
    )
    assert len(cards) == 60
    assert browser.find_element(By.ID, "progress").text == "0 of 60 reviewed"
    classes = browser.execute_script("return JSON.parse(document.getElementById('review-data').textContent).classes")
    # Five candidates without near duplicates (a relabel cannot turn them into a label conflict),
    # one of them an odd id; reached with the keys only.
    plain = [k for k, c in enumerate(cards) if not c["dups"]]
    odd = next(k for k in plain if '"' in cards[k]["id"])
    chosen = plain[:5] if odd in plain[:5] else sorted([*plain[:4], odd])
    third = {k: next(c for c in classes if c not in (cards[k]["label"], cards[k]["suggested"])) for k in chosen}
    keys = ["a", "d", str(classes.index(third[chosen[2]]) + 1), "k", "a"]
    body = browser.find_element(By.TAG_NAME, "body")
    for k, key in zip(chosen, keys, strict=True):
        here = _current(browser)
        body.send_keys(("j" if k > here else "p") * abs(k - here))
        assert _current(browser) == k
        body.send_keys(key)
    assert browser.find_element(By.ID, "progress").text == "5 of 60 reviewed"
    assert _current(browser) == chosen[-1] + 1  # a decision moves on
    body.send_keys("p")
    assert _current(browser) == chosen[-1]

    def decisions():
        return [browser.find_element(By.ID, f"card-{k}").find_element(By.CLASS_NAME, "decision").text for k in chosen]

    shown = decisions()
    c = [cards[k] for k in chosen]
    assert shown == [
        f"accept: {c[0]['label']} → {c[0]['suggested']}",
        "drop",
        f"relabel: {c[2]['label']} → {third[chosen[2]]}",
        f"keep {c[3]['label']}",
        f"accept: {c[4]['label']} → {c[4]['suggested']}",
    ]

    browser.refresh()  # progress lives in localStorage, under the data set version
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "progress").text == "5 of 60 reviewed")
    assert decisions() == shown
    assert _current(browser) == next(k for k in range(60) if k not in chosen)  # back at the first open one
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

    target = downloads / "relabels.csv"
    target.unlink(missing_ok=True)
    browser.find_element(By.ID, "download").click()
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.exists(), f"no download in {downloads}: {sorted(p.name for p in downloads.iterdir())}"
    expected = {
        c[0]["id"]: c[0]["suggested"],
        c[1]["id"]: None,
        c[2]["id"]: third[chosen[2]],
        c[4]["id"]: c[4]["suggested"],
    }
    assert read_relabels(target) == expected
    assert target.read_text().splitlines()[0] == "id,new_label"

    again = tmp_path / "again"
    assert (
        main(["data", "ingest", str(raw), "--out", str(again), "--quiet", "--no-mislabels", "--relabels", str(target)])
        == 0
    )
    after = _all_rows(again)
    assert c[1]["id"] in before and c[1]["id"] not in after  # dropped
    for k in (0, 2, 4):
        assert before[c[k]["id"]][0] == c[k]["label"]
        assert after[c[k]["id"]][0] == expected[c[k]["id"]]  # relabelled
    assert after[c[3]["id"]][0] == c[3]["label"]  # kept as it was
    assert len(after) == len(before) - 1
