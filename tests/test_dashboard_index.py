"""``fer dashboard index ROOT`` and ``fer dashboard serve ROOT``: every experiment of a team on one page.

Experiments are fabricated through the experiment store, as a sweep writes them (no sweep runs):
finished ones (``sweep.json`` with ``finished``, the tables), a running one (the launch's record and
Tune trial folders written just now), an interrupted one (the same, written an hour ago) and an
unreadable one (a damaged ``sweep.json``).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import threading
import time
from pathlib import Path

import pytest

import test_dashboard
from experiment_store import DataRef, ExperimentStore, SweepRecord

browser = test_dashboard.browser  # the fixture: headless Chromium, as for the experiment page's tests

CLASSES = ["happy", "neutral", "sad", "surprise"]
MAX_EPOCHS = 6
SPACE = {
    "fixed": {"optimizer": "adam", "model": "fer_cnn_tiny"},
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "dropout_scale": {"type": "float", "low": 0.0, "high": 1.6, "log": False},
        "loss": {"type": "categorical", "choices": ["ce", "focal"]},
    },
}
XSS = "<img src=x onerror=alert(3)>"
DATA_A, DATA_B = "runs/default/data", "s3://team/data/fer-clean"


def _history(tid: str, rng: random.Random, epochs: int, config: dict) -> list[dict]:
    skill, rows, best, best_epoch = rng.uniform(0.35, 0.7), [], 0.0, 0
    for e in range(1, epochs + 1):
        acc = skill * (1 - math.exp(-e / 2)) + rng.gauss(0, 0.01)
        if acc > best:
            best, best_epoch = acc, e
        window = [r["val_acc"] for r in rows[-2:]] + [acc]
        rows.append(
            {
                "trial_id": tid,
                "epoch": e,
                "val_acc": acc,
                "val_loss": 1.4 - acc,
                "train_acc": acc + 0.05,
                "score": sum(window) / len(window),
                "peak": best,
                "peak_epoch": best_epoch,
                "final": acc,
                "trial_status": "completed" if e == MAX_EPOCHS else "running",
                "time_total_s": 2.0 * e,
                "done": e == MAX_EPOCHS,
                "config": config,
                "timestamp": 1_790_000_000 + e,
                **{f"val_recall_{c}": acc for c in CLASSES},
            }
        )
    return rows


def _config(rng: random.Random) -> dict:
    return {"lr": 10 ** rng.uniform(-4, -2), "dropout_scale": rng.uniform(0, 1.6), "loss": rng.choice(["ce", "focal"])}


def _record(name: str, data: str, *, finished: bool, user: str = "ana") -> SweepRecord:
    return SweepRecord(
        name=name,
        command=f"python sweeps/regularization.py --name {name} --data {data}",
        data=DataRef(uri=data, version="v1abc" if data == DATA_A else "v2def", classes=CLASSES, train=400, val=100),
        space=SPACE,
        base_config={"seed": 0, "epochs": MAX_EPOCHS},
        max_epochs=MAX_EPOCHS,
        space_file="space.yaml",
        user=user,
        started="2026-11-30T10:00:00Z",
        finished="2026-11-30T11:00:00Z" if finished else None,
        wall_s=3600.0 if finished else None,
    )


def finished_experiment(
    root: Path, name: str, data: str = DATA_A, n: int = 5, seed: int = 0, confirm: bool = False
) -> Path:
    """A finished sweep: its tables and the record with ``finished`` (sweeps.results rows, the store's writes)."""
    from sweeps.results import epoch_rows, trial_rows

    rng = random.Random(seed)
    trials = []
    for i in range(n):
        tid = f"{name[:3]}_{i:03d}"
        config = _config(rng)
        history = _history(tid, rng, MAX_EPOCHS if i % 4 else 2, config)
        trials.append(
            {
                "trial_id": tid,
                "config": config,
                "last": history[-1],
                "errored": False,
                "finished": True,
                "time_s": history[-1]["time_total_s"],
                "history": history,
            }
        )
    store = ExperimentStore(str(root / name))
    rows = trial_rows(trials, MAX_EPOCHS)
    store.write_tables(rows, epoch_rows(trials))
    store.write_record(_record(name, data, finished=True))
    if confirm:
        from experiment_store import confirm_table

        best = max(rows, key=lambda r: r["score"])["trial_id"]
        store.write_confirm(
            confirm_table(
                [
                    {"trial_id": best, "seed": 1000 + s, "score": v, "status": "completed"}
                    for s, v in enumerate((0.50, 0.60, 0.55))
                ]
            ),
            {"top": 1},
        )
        from experiment_store import Decision, record_decisions

        record_decisions(
            store,
            [
                Decision("export-best", best, "score", 1, 0.51, 0.51, "/tmp/old.yaml", "2026-11-29T10:00:00Z", "ben"),
                Decision(
                    "export-best", best, "confirmed", 1, 0.55, 0.51, "/tmp/best.yaml", "2026-11-30T09:00:00Z", "ana"
                ),
            ],
        )
    return root / name


def live_experiment(root: Path, name: str, *, age_s: float = 0.0, data: str = DATA_B, seed: int = 1) -> Path:
    """A sweep still running (``age_s`` 0) or interrupted (its files last written ``age_s`` ago): the launch's
    record, Tune's state and trial folders (params.json, result.json), no tables."""
    rng = random.Random(seed)
    exp = root / name
    exp.mkdir(parents=True)
    ExperimentStore(str(exp)).write_record(_record(name, data, finished=False, user="ben"))
    (exp / "experiment_state-2026-11-30_10-00-00.json").write_text("{}")
    (exp / "tuner.pkl").write_bytes(b"\x80\x04N.")
    for i, epochs in enumerate((MAX_EPOCHS, 3, 1)):
        tid = f"{name[:3]}_{i:03d}"
        folder = exp / f"trainable_{tid}_{i}_lr=0.001"
        folder.mkdir()
        config = _config(rng)
        (folder / "params.json").write_text(json.dumps(config))
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in _history(tid, rng, epochs, config)))
    if age_s:
        then = time.time() - age_s
        for p in exp.rglob("*"):
            os.utime(p, (then, then))
    return exp


def broken_experiment(root: Path, name: str = "broken") -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "sweep.json").write_text("{not json")
    return root / name


@pytest.fixture
def team(tmp_path) -> Path:
    """A root: two finished experiments (two data sets, one confirmed), a running, an interrupted and a broken one,
    and a folder that is not an experiment."""
    root = tmp_path / "sweeps"
    finished_experiment(root, "alpha", DATA_A, seed=0, confirm=True)
    finished_experiment(root, "beta", DATA_B, n=4, seed=2)
    live_experiment(root, "gamma")
    live_experiment(root, "delta", age_s=3600)
    broken_experiment(root)
    (root / "wandb").mkdir()
    (root / "wandb" / "notes.txt").write_text("not an experiment")
    return root


# -- state rules ---------------------------------------------------------------------------------------


def test_state_rules():
    from dashboards.index import FINISHED, INTERRUPTED, RUNNING, RUNNING_WINDOW_S, Activity, experiment_state

    now = 1_800_000_000.0
    done = Activity(
        has_record=True,
        record_finished=True,
        trials_table=now - 5000,
        epochs_table=now - 5000,
        newest_result=now - 5010,
        trial_folders=3,
        tune_state=now - 4990,
        record_written=now - 5000,
    )
    assert experiment_state(done, now) == FINISHED
    # resumed or extended: the record says finished, but trials reported after the tables were written
    resumed = Activity(**{**done.__dict__, "newest_result": now - 30})
    assert experiment_state(resumed, now) == RUNNING
    assert experiment_state(Activity(**{**done.__dict__, "newest_result": now - 4000}), now) == INTERRUPTED
    # no finished record: running while something is written within the window, interrupted after it
    live = Activity(has_record=True, newest_result=now - 60, trial_folders=2, record_written=now - 3000)
    assert experiment_state(live, now) == RUNNING
    assert experiment_state(live, now + RUNNING_WINDOW_S) == INTERRUPTED
    assert experiment_state(live, now + RUNNING_WINDOW_S, window_s=2 * RUNNING_WINDOW_S) == RUNNING
    # a launch that has written only its record (no trial yet) is running; Tune's snapshot counts as activity
    assert experiment_state(Activity(has_record=True, record_written=now - 10), now) == RUNNING
    assert experiment_state(Activity(tune_state=now - 10), now) == RUNNING
    # a finished record without trials.parquet is not finished; nothing at all is interrupted
    unfinished = Activity(has_record=True, record_finished=True, record_written=now - 9999)
    assert experiment_state(unfinished, now) == INTERRUPTED
    assert experiment_state(Activity(), now) == INTERRUPTED


def test_rows_of_a_root_by_path_and_file_uri(team):
    from dashboards.index import experiment_names, open_root, read_rows

    for given in (str(team), team.as_uri()):  # a local folder, and the same as file:///...
        root = open_root(given)
        names, other = experiment_names(root)
        assert names == ["alpha", "beta", "broken", "delta", "gamma"] and other == ["wandb"]
        rows = {r.folder: r for r in read_rows(root, names)}
        assert {k: r.state for k, r in rows.items()} == {
            "alpha": "finished",
            "beta": "finished",
            "broken": "unreadable",
            "delta": "interrupted",
            "gamma": "running",
        }
        a = rows["alpha"]
        assert (a.trials, a.outcomes) == (5, {"completed": 3, "stopped by ASHA": 2})
        assert a.best is not None and a.best["score"] == max(
            r["score"]
            for r in ExperimentStore(str(team / "alpha")).read_rows("trials.parquet")
            if r["score"] is not None
        )
        assert a.confirmed is not None and a.confirmed["mean"] == pytest.approx(0.55) and a.confirmed["n"] == 3
        assert a.compute_s == pytest.approx(3 * 12.0 + 2 * 4.0)
        assert (a.user, a.data_uri, a.data_version, a.space_file) == ("ana", DATA_A, "v1abc", "space.yaml")
        assert a.command and "--name alpha" in a.command and a.finished and a.started
        g = rows["gamma"]  # Tune's trial folders: 1 done, 2 still running
        assert g.outcomes == {"completed": 1, "running": 2} and g.user == "ben" and g.finished is None
        assert rows["delta"].outcomes == {"completed": 1, "running": 2}
        assert "not valid JSON" in rows["broken"].error
        assert rows["beta"].confirmed is None and rows["beta"].data_uri == DATA_B
        assert a.decisions == 2 and a.decision is not None and (a.decision.by, a.decision.user) == ("confirmed", "ana")
        assert rows["beta"].decision is None


def test_unreadable_experiment_is_a_row_not_a_failure(team, tmp_path):
    from dashboards.index import build_index, open_root, read_rows

    (team / "alpha" / "trials.parquet").write_bytes(b"PAR1 truncated")
    root = open_root(str(team))
    rows = {r.folder: r for r in read_rows(root)}
    assert rows["alpha"].state == "unreadable" and "Parquet" in rows["alpha"].error
    assert rows["broken"].state == "unreadable" and rows["beta"].state == "finished"
    html = build_index(root, list(rows.values()), link_base="")
    assert "cannot be read:" in html and "not valid JSON" in html and "beta" in html


def test_index_page_is_escaped_offline_and_links(team, tmp_path, capsys):
    from fer_cli.main import main

    record = json.loads((team / "beta" / "sweep.json").read_text())
    record["name"], record["user"], record["data"]["uri"] = XSS, XSS, XSS
    (team / "beta" / "sweep.json").write_text(json.dumps(record))
    (team / "alpha" / "dashboard.html").write_text("<!DOCTYPE html>")  # alpha's page is "built"
    assert main(["dashboard", "index", str(team), "--out", str(tmp_path / "out" / "index.html")]) == 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert XSS not in html and "&lt;img src=x onerror=alert(3)&gt;" in html
    assert "plotly.js v" not in html and 'src="http' not in html and len(html) < 200_000
    assert 'href="../sweeps/alpha/dashboard.html"' in html  # relative to where the index is written
    assert 'href="../sweeps/beta/' not in html  # no page built yet: no broken link
    assert "fer dashboard build" in html and "Folders that are not experiments: wandb" in html
    assert "by confirmed (0.5500), 2026-11-30, ana (+1 earlier)" in html  # alpha's latest promotion
    assert main(["dashboard", "index", team.as_uri()]) == 0  # default --out: <root>/index.html
    assert 'href="alpha/dashboard.html"' in (team / "index.html").read_text()
    (tmp_path / "mine.html").write_text("<html>someone's page</html>")
    assert main(["dashboard", "index", str(team), "--out", str(tmp_path / "mine.html")]) == 2  # not replaced
    assert "someone's page" in (tmp_path / "mine.html").read_text()


@pytest.mark.slow
def test_rows_of_a_root_on_s3(team, s3_server, s3_bucket, monkeypatch):
    """The same reads on an object store (the session's local S3 server): prefixes are the folders."""
    from dashboards.index import build_index, open_root, read_rows
    from fer_core.storage import locate

    s3_server.apply(monkeypatch)
    for name in ("alpha", "beta", "broken"):
        locate(f"s3://{s3_bucket}/sweeps/{name}").upload_dir(team / name, last=("sweep.json",))
    root = open_root(f"s3://{s3_bucket}/sweeps")
    rows = {r.folder: r for r in read_rows(root)}
    assert {k: r.state for k, r in rows.items()} == {"alpha": "finished", "beta": "finished", "broken": "unreadable"}
    assert rows["alpha"].confirmed is not None and rows["alpha"].where == f"s3://{s3_bucket}/sweeps/alpha"
    html = build_index(root, list(rows.values()), link_base=None)
    assert f"fer dashboard build s3://{s3_bucket}/sweeps/alpha" in html


def test_index_of_a_missing_root_is_one_clear_line(tmp_path, capsys):
    from fer_cli.main import main

    assert main(["dashboard", "index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


@pytest.mark.slow
def test_build_pages_builds_missing_and_stale_pages_only(team, tmp_path, capsys):
    from fer_cli.main import main

    assert main(["dashboard", "index", str(team), "--build-pages"]) == 0
    assert "page built" in capsys.readouterr().err
    built = {n for n in ("alpha", "beta", "gamma", "delta") if (team / n / "dashboard.html").exists()}
    assert built == {"alpha", "beta", "gamma", "delta"} and not (team / "broken" / "dashboard.html").exists()
    html = (team / "index.html").read_text()
    for n in sorted(built):
        assert f'href="{n}/dashboard.html"' in html
    assert main(["dashboard", "index", str(team), "--build-pages"]) == 0
    assert "page built" not in capsys.readouterr().err  # every page is current: nothing rebuilt


# -- serve ROOT -----------------------------------------------------------------------------------------


def _request(port: int, path: str, method: str = "GET") -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", f"127.0.0.1:{port}")
    conn.endheaders()
    r = conn.getresponse()
    out = r.status, r.read(), dict(r.getheaders())
    conn.close()
    return out


@pytest.fixture
def served(team):
    from dashboards.serve import IndexServer, make_server

    server = make_server(team, port=0, quiet=True)
    assert isinstance(server.app, IndexServer)  # type: ignore[attr-defined]
    server.app.ttl_s = 0.0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_serve_root_refuses_traversal_and_other_paths(served, team):
    port = served
    (team.parent / "outside").mkdir()
    finished_experiment(team.parent, "sibling")  # an experiment next to the root, not under it
    status, body, _ = _request(port, "/")
    assert status == 200 and b'href="e/alpha/"' in body and b"compare" in body
    for path in (
        "/e/../sibling/",
        "/e/%2e%2e/",
        "/e/%2E%2E/sweep.json",
        "/e/..%2Fsibling/",
        "/e/%2e%2e%2fsibling/",
        "/e/alpha/../../sibling/",
        "/e/wandb/",
        "/e/.hidden/",
        "/e/alpha/sweep.json",
        "/e/alpha/trials.parquet",
        "/e/alpha%2Fsweep.json",
        "/e/%ff/",
        "/e/",
        "/e//",
        "/sweep.json",
        "/alpha/sweep.json",
        "/compare?a=alpha&b=..",
        "/compare?a=alpha&b=%2e%2e%2fsibling",
        "/compare?a=alpha",
        "/compare?a=alpha&b=beta&b=gamma",
        "/e/sibling/",
    ):
        status, body, _ = _request(port, path)
        assert status == 404, (path, status)
    assert _request(port, "/", "POST")[0] == 405
    status, _, headers = _request(port, "/e/alpha")
    assert status == 301 and headers["Location"] == "alpha/"


@pytest.mark.slow
def test_serve_root_pages_compare_and_new_experiments(served, team):
    port = served
    status, body, _ = _request(port, "/e/alpha/")
    assert status == 200 and b'<h1 class="exp-name">alpha</h1>' in body and b"fetch('version'" in body
    assert b'href="../../"' in body  # back to the index
    status, body, _ = _request(port, "/e/alpha/version")
    assert status == 200 and json.loads(body)["version"]
    status, body, _ = _request(port, "/e/gamma/")
    assert status == 200 and b"live: sweep running" in body
    status, body, _ = _request(port, "/compare?a=alpha&b=beta")
    assert status == 200 and b"alpha vs beta" in body.split(b"</title>")[0]
    assert b"epsilon" not in _request(port, "/")[1]
    finished_experiment(team, "epsilon", seed=5)  # created after the server started
    status, body, _ = _request(port, "/")
    assert status == 200 and b'href="e/epsilon/"' in body
    assert _request(port, "/e/epsilon/")[0] == 200


def test_serve_one_experiment_is_unchanged(team):
    """``serve EXPERIMENT`` (and a folder that does not exist yet) still serves that one experiment."""
    from dashboards.serve import DashboardServer, IndexServer, make_server, serves_index

    assert serves_index(team) and not serves_index(team / "alpha") and not serves_index(team / "nope")
    assert not serves_index(team / "wandb")  # no experiment under it: today's behaviour (waits)
    for where, kind in ((team / "alpha", DashboardServer), (team / "nope", DashboardServer), (team, IndexServer)):
        server = make_server(where, port=0, quiet=True)
        try:
            assert isinstance(server.app, kind)  # type: ignore[attr-defined]
        finally:
            server.server_close()
    server = make_server(team / "wandb", port=0, quiet=True, index=True)
    try:
        assert isinstance(server.app, IndexServer)  # type: ignore[attr-defined]
    finally:
        server.server_close()


# -- in the browser -----------------------------------------------------------------------------------


def _rows(driver, col: int) -> list[str]:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#experiments tbody tr')).filter(r => !r.hidden)"
        f".map(r => r.cells[{col}].getAttribute('data-v'))"
    )


@pytest.mark.slow
@pytest.mark.browser
def test_index_in_the_browser_sorts_filters_links_and_compares(served, team, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from dashboards.index import DATA_COLUMN, HEADERS

    port = served
    browser.get(f"http://127.0.0.1:{port}/")
    assert browser.title.startswith("Experiments in")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")) == 5
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    score = HEADERS.index("best score")
    header = browser.find_elements(By.CSS_SELECTOR, "#experiments th")[score]
    header.click()
    up = [float(v) for v in _rows(browser, score) if v]
    assert len(up) == 4 and up == sorted(up)
    header.click()
    assert [float(v) for v in _rows(browser, score) if v] == sorted(up, reverse=True)

    select = Select(browser.find_element(By.ID, "dataset-filter"))
    select.select_by_value(DATA_B)
    assert set(_rows(browser, 1)) == {"beta", "gamma", "delta"} and set(_rows(browser, DATA_COLUMN)) == {DATA_B}
    assert browser.find_element(By.ID, "shown-count").text == "3 of 5 experiments shown"
    select.select_by_value("")
    assert len(_rows(browser, 1)) == 5

    browser.find_element(By.LINK_TEXT, "alpha").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1.exp-name"))
    assert browser.find_element(By.CSS_SELECTOR, "h1.exp-name").text == "alpha"
    assert browser.current_url.endswith("/e/alpha/")
    browser.find_element(By.LINK_TEXT, "← all experiments").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "experiments"))

    for name in ("alpha", "beta"):
        browser.find_element(By.CSS_SELECTOR, f'input.pick[value="{name}"]').click()
    link = browser.find_element(By.CSS_SELECTOR, "#compare-box a.compare")
    assert link.is_displayed() and link.get_attribute("href").endswith("/compare?a=alpha&b=beta")
    link.click()
    WebDriverWait(browser, 120).until(lambda d: "vs" in d.title)
    assert browser.find_element(By.TAG_NAME, "h1").text == "A: alpha vs B: beta"
    assert "Outcomes and best results" in browser.find_element(By.TAG_NAME, "body").text


@pytest.mark.slow
@pytest.mark.browser
def test_static_index_from_a_file_uri_shows_the_compare_command(team, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from dashboards.index import build_index, link_base_for, open_root, read_rows
    from fer_core.storage import locate

    (team / "alpha" / "dashboard.html").write_text("<!DOCTYPE html><title>alpha page</title><h1>alpha page</h1>")
    root = open_root(team.as_uri())
    out = locate(str(team / "index.html"))
    out.write_text(build_index(root, read_rows(root), link_base=link_base_for(root, out)))
    browser.get((team / "index.html").as_uri())
    assert browser.find_element(By.ID, "shown-count").text == "5 of 5 experiments shown"
    state = {
        r.find_elements(By.TAG_NAME, "td")[1].text: r.find_elements(By.TAG_NAME, "td")[2].text
        for r in browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")
    }
    assert state == {
        "alpha": "finished",
        "beta": "finished",
        "gamma": "running",
        "delta": "interrupted",
        "broken": "unreadable",
    }
    box = browser.find_element(By.ID, "compare-box")
    browser.find_element(By.CSS_SELECTOR, 'input.pick[value="alpha"]').click()
    assert "1 picked" in box.text
    browser.find_element(By.CSS_SELECTOR, 'input.pick[value="delta"]').click()
    assert box.find_element(By.TAG_NAME, "code").text == (
        f"fer dashboard compare {team / 'alpha'} {team / 'delta'} --out compare.html"
    )
    browser.find_element(By.LINK_TEXT, "alpha").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "alpha page"
