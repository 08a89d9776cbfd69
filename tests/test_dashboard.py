"""``fer dashboard``: pages built from a real (small) sweep, opened in headless Chromium.

The sweep runs once per session as a subprocess (its own local Ray, nothing shared with other tests).
The browser checks need Debian's ``chromium`` and ``chromium-driver`` (CI installs them); without them
these tests fail saying how to install them, they do not skip.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import chromium
from experiment_store import ExperimentStore

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
XSS_NAME = "<script>alert(1)</script>"
XSS_CLASS = "sad<script>"
XSS_REASON = "<img src=x onerror=alert(2)>"

SPACE = """\
fixed: {optimizer: adam, model: fer_cnn_tiny}
params:
  l2: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  dropout_scale: {type: float, low: 0.0, high: 1.6}
  loss: {type: categorical, choices: [ce, focal]}
  focal_gamma: {type: float, low: 0.5, high: 4.0, when: {loss: focal}}
  lr: {type: float, low: 3.0e-4, high: 5.0e-3, log: true}
  batch_size: {type: categorical, choices: [64, 128]}
"""


MIX_SEEDS = (4, 5, 6, 7)


@pytest.fixture(scope="session")
def experiment(ingested, tmp_path_factory) -> Path:
    """A real 7-trial sweep (4 epochs, a sensitive collapse rule so that trials collapse).

    One trial at a time (``--concurrency 1``): ASHA's decisions then depend only on the (seeded, CPU-
    reproducible) results, not on which trial reports first, so the outcome mix is the same on every run.
    It needs 3 completed (fANOVA importance needs 3), ASHA-stopped and collapsed trials, so every view has data;
    which seed gives that mix depends on the CPU's fp32 kernels (seed 4 on an AMD EPYC, not on an Intel Xeon
    with AMX), so the seeds of ``MIX_SEEDS`` are tried in order and the first that gives it is used.
    """
    tried = []
    for seed in MIX_SEEDS:
        outcomes = _fixture_sweep(tmp := tmp_path_factory.mktemp(f"dash-sweep-{seed}"), ingested, seed)
        if outcomes.count("completed") >= 3 and {"stopped by ASHA", "collapsed"} <= set(outcomes):
            return tmp / "dash"
        tried.append(f"seed {seed}: {outcomes}")
    raise AssertionError(
        "the fixture sweep should produce >= 3 completed, ASHA-stopped and collapsed trials; got "
        + "; ".join(tried)
        + " (the trainer's numbers changed: add a --seed to MIX_SEEDS that gives all three)"
    )


def _fixture_sweep(tmp: Path, ingested, seed: int) -> list[str]:
    """The fixture's sweep with ``seed`` in ``tmp``; its trials' outcomes."""
    (tmp / "space.yaml").write_text(SPACE)
    cmd = [
        sys.executable,
        "sweeps/regularization.py",
        "--smoke",
        "--samples",
        "7",
        "--max-epochs",
        "4",
        "--concurrency",
        "1",
        "--seed",
        str(seed),
        "--space",
        str(tmp / "space.yaml"),
        "--data",
        str(ingested),
        "--storage",
        str(tmp),
        "--name",
        "dash",
        "--wandb-mode",
        "disabled",
        "--num-cpus",
        "2",
        "--collapse-margin",
        "0.03",
        "--collapse-grace",
        "2",
        "--collapse-window",
        "1",
        "--collapse-patience",
        "0",
        "--set",
        "precision=fp32",  # the outcome mix was picked in fp32; auto is bf16 on a CPU with native bf16
    ]
    env = dict(os.environ, FER_NO_PROGRESS="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (tmp / "sweep-output.txt").write_text(out.stdout + out.stderr)  # what the user saw (test_sweep_console)
    return [r["outcome"] for r in pq.read_table(tmp / "dash" / "trials.parquet").to_pylist()]


@pytest.fixture(scope="session")
def report(experiment) -> Path:
    from dashboards.report import write_report
    from sweeps.experiment import load_experiment

    return write_report(load_experiment(experiment), experiment.parent / "report.html")


@pytest.fixture(scope="module")
def browser():
    # software WebGL for parcoords
    driver = chromium.start(extra_args=("--use-angle=swiftshader", "--enable-unsafe-swiftshader"))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, path: Path) -> list[dict]:
    """Load a page, wait for every plot, assert they all rendered; returns the page's plot info."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    state = (
        "return Array.from(document.querySelectorAll('div.plot')).map(d => ({id: d.id, "
        "svg: !!d.querySelector('svg.main-svg'), container: !!d.querySelector('.plot-container'), "
        "error: d.classList.contains('plot-error') || !!d.querySelector('.no-webgl'), text: d.textContent}))"
    )
    WebDriverWait(driver, 60).until(lambda d: all(p["svg"] or p["error"] for p in d.execute_script(state)))
    plots = driver.execute_script(state)
    assert plots, "the page has no plots"
    for p in plots:
        assert p["svg"] and p["container"] and not p["error"], f"plot {p['id']} did not render: {p['text'][:300]}"
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"the page logged errors: {severe}"
    return plots


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.browser
def test_report_renders_every_plot_and_sorts(report, browser):
    from selenium.webdriver.common.by import By

    text = report.read_text()
    assert text.count("plotly.js v") == 1  # the library embedded once
    assert "cdn" not in text.lower().split("</head>")[0].split("<script>")[0]
    assert 'src="http' not in text and "src='http" not in text  # nothing fetched: opens offline
    plots = open_page(browser, report)
    ids = [p["id"] for p in plots]
    assert len(plots) == 6, ids  # curves, collapsed, parallel coordinates, axis plots, importance, confusion
    body = browser.find_element(By.TAG_NAME, "body").text
    for fact in (
        "dash",
        "class counts",
        "duplicate images removed",
        "stopped by ASHA",
        "collapsed",
        "sum of trial times",
        "python sweeps/regularization.py",
        "focal_gamma",
        "fixed:",
    ):
        assert fact in body, fact
    assert "validation confusion matrix at epoch" in body and "precision" in body

    col = "return Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.cells[2].dataset.v)"
    header = browser.find_elements(By.CSS_SELECTOR, "#leaderboard th")[2]
    assert header.text.startswith("score")
    header.click()
    up = [float(v) for v in browser.execute_script(col) if v]
    assert up == sorted(up) and len(up) >= 2 and up[0] < up[-1]
    header.click()
    down = [float(v) for v in browser.execute_script(col) if v]
    assert down == sorted(down, reverse=True)

    ARTIFACTS.mkdir(exist_ok=True)
    browser.set_window_size(1400, min(browser.execute_script("return document.body.scrollHeight"), 12000))
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    browser.set_window_size(1400, 1000)


def _xss_copy(experiment: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("trials.parquet", "epochs.parquet"):
        shutil.copy2(experiment / name, dest / name)
    meta = json.loads((experiment / "sweep.json").read_text())
    meta["name"] = XSS_NAME
    meta["data"]["classes"] = [XSS_CLASS if c == "sad" else c for c in meta["data"]["classes"]]
    assert XSS_CLASS in meta["data"]["classes"]
    (dest / "sweep.json").write_text(json.dumps(meta))
    trials = pq.read_table(dest / "trials.parquet").to_pylist()
    trials[0]["stop_reason"] = XSS_REASON
    pq.write_table(pa.Table.from_pylist(trials), dest / "trials.parquet")
    return dest


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.browser
def test_user_strings_are_escaped(experiment, browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    from dashboards.report import write_report
    from sweeps.experiment import load_experiment

    out = write_report(load_experiment(_xss_copy(experiment, tmp_path / "xss")), tmp_path / "xss.html")
    text = out.read_text()
    for raw in (XSS_NAME, XSS_CLASS, XSS_REASON, "<script>alert", "<img src=x"):
        assert raw not in text, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    open_page(browser, out)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.find_element(By.CSS_SELECTOR, "h1.exp-name").text == XSS_NAME
    assert browser.title.startswith(XSS_NAME)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert XSS_CLASS in body and XSS_REASON in body
    ticks = browser.execute_script(
        "return Array.from(document.querySelectorAll('div.plot text')).map(t => t.textContent)"
    )
    assert XSS_CLASS in ticks  # the confusion matrix's axis shows the name as text


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.browser
def test_compare_page(experiment, report, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from dashboards.compare import build_compare
    from sweeps.experiment import load_experiment

    a = load_experiment(experiment)
    b = load_experiment(_xss_copy(experiment, tmp_path / "b"))
    out = tmp_path / "compare.html"
    out.write_text(build_compare(a, b))
    assert XSS_NAME not in out.read_text()
    open_page(browser, out)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Outcomes and best results" in body and "best score" in body and "Score distributions" in body
    assert (
        len(browser.find_elements(By.CSS_SELECTOR, "table.sortable#leaderboard-a, table.sortable#leaderboard-b")) == 2
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_live_experiment_marks_unfinished_trials_running(experiment, tmp_path):
    """While a sweep runs there are no tables: Tune's trial folders are read instead."""
    from dashboards.report import build_report
    from experiment_store import ExperimentError
    from sweeps.experiment import load_experiment

    live = tmp_path / "live"
    shutil.copytree(experiment, live, ignore=shutil.ignore_patterns("*.parquet", "sweep.json", "checkpoint_*"))
    results = sorted(live.glob("*/result.json"))
    assert len(results) == 7
    longest = max(results, key=lambda r: len(r.read_text().splitlines()))  # a trial that ran past epoch 1
    lines = longest.read_text().splitlines()
    assert len(lines) >= 2
    longest.write_text("\n".join(lines[:1]) + "\n")  # one epoch so far, not done
    exp = load_experiment(live)
    assert exp.live and exp.outcome_counts()["running"] == 1 and len(exp.trials) == 7
    assert exp.classes and exp.params
    page = build_report(exp, live_version="abc")
    assert "live: sweep running" in page and "fetch('version'" in page

    # a finished experiment that lost epochs.parquet (and has no trial folders to fall back on) names that file
    lost = tmp_path / "lost"
    shutil.copytree(experiment, lost, ignore=shutil.ignore_patterns("epochs.parquet", "*_*"))
    with pytest.raises(ExperimentError, match=r"missing epochs\.parquet \(written by") as err:
        load_experiment(lost)
    assert "trials.parquet" not in str(err.value).split("(")[0]


def _crafted(n: int = 24):
    """An in-memory experiment whose score is driven by lr alone, with a conditional focal_gamma."""
    import random

    from sweeps.experiment import Experiment
    from sweeps.space import Param

    rng = random.Random(0)
    params = [
        Param("lr", "float", low=1e-4, high=1e-2, log=True),
        Param("dropout_scale", "float", low=0.0, high=1.6),
        Param("loss", "categorical", choices=("ce", "focal")),
        Param("focal_gamma", "float", low=0.5, high=4.0, when={"loss": ["focal"]}),
    ]
    trials = []
    for i in range(n):
        lr, loss = 10 ** rng.uniform(-4, -2), rng.choice(["ce", "focal"])
        trials.append(
            {
                "trial_id": f"t{i}",
                "outcome": "completed",
                "score": 0.3 + 0.2 * (math.log10(lr) + 4),
                "config/lr": lr,
                "config/dropout_scale": rng.uniform(0, 1.6),
                "config/loss": loss,
                "config/focal_gamma": rng.uniform(0.5, 4.0) if loss == "focal" else None,
            }
        )
    return Experiment(
        store=ExperimentStore("crafted"), name="crafted", trials=trials, epochs=[], params=params, fixed={}, classes=[]
    )


def test_importance_groups_conditional_parameters():
    from dashboards.figures import importance_bars
    from dashboards.importance import param_importances

    exp = _crafted()
    plain, focal = param_importances(exp)
    assert set(plain.values) == {"lr", "dropout_scale", "loss"} and max(plain.values, key=plain.values.get) == "lr"
    assert "focal_gamma" in focal.values and focal.trials == sum(t["config/loss"] == "focal" for t in exp.trials)
    assert importance_bars([plain, focal]) is not None
    exp.trials = exp.trials[:2]
    assert all(not g.values and "at least 3" in g.note for g in param_importances(exp))


def test_edge_warning_when_the_best_sit_at_a_bound():
    from dashboards.edges import edge_warnings

    exp = _crafted()  # score rises with lr: the best trials sit at lr's upper bound
    for t in sorted(exp.trials, key=lambda t: -t["score"])[:3]:
        t["config/lr"] = 0.0095  # within 5% of 1e-2 in log space (not in linear space: a log param)
    warnings = edge_warnings(exp)
    assert [(w.param, w.edge, w.count) for w in warnings] == [("lr", "upper", 3)]
    assert "within 5% of the upper bound 0.01" in warnings[0].message()
    for t in exp.trials:
        t["config/lr"] = 1e-3  # the middle of the range in log space
    assert not [w for w in edge_warnings(exp) if w.param == "lr"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.e2e
def test_serve_is_read_only_and_local(experiment):
    from dashboards.serve import make_server
    from fer_cli.main import get_parser

    assert get_parser().parse_args(["dashboard", "serve", str(experiment)]).host == "127.0.0.1"
    server = make_server(experiment, port=_free_port(), quiet=True)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/", timeout=60) as r:
            page = r.read().decode()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        assert '<h1 class="exp-name">dash</h1>' in page and "plotly.js v" in page and "fetch('version'" in page
        with urllib.request.urlopen(base + "/version", timeout=10) as r:
            assert json.loads(r.read())["version"]
        for method, path, code in (
            ("POST", "/", 405),
            ("PUT", "/", 405),
            ("DELETE", "/", 405),
            ("GET", "/sweep.json", 404),
            ("GET", "/../trials.parquet", 404),
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(
                    urllib.request.Request(base + path, data=b"x" if method != "GET" else None, method=method),
                    timeout=10,
                )
            assert err.value.code == code, (method, path)
    finally:
        server.shutdown()
        server.server_close()


def test_not_an_experiment_is_one_clear_line(tmp_path, capsys):
    from fer_cli.main import main

    (tmp_path / "empty").mkdir()
    assert main(["dashboard", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "x.html")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fer: error:") and "trials.parquet" in lines[0], lines
    assert not (tmp_path / "x.html").exists()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.browser
def test_confirmed_ranking_shows_the_spread(experiment, browser, tmp_path):
    from dashboards.report import write_report
    from sweeps.experiment import load_experiment

    dest = tmp_path / "confirmed"
    dest.mkdir()
    for name in ("trials.parquet", "epochs.parquet", "sweep.json"):
        shutil.copy2(experiment / name, dest / name)
    ids = [t["trial_id"] for t in pq.read_table(dest / "trials.parquet").to_pylist()][:2]
    rows = [
        {"trial_id": ids[0], "seed": 1000 + i, "score": s, "peak": s, "final": s, "epochs": 3}
        for i, s in enumerate((0.50, 0.60, 0.55))
    ]
    rows += [
        {"trial_id": ids[1], "seed": 1000 + i, "score": s, "peak": s, "final": s, "epochs": 3}
        for i, s in enumerate((0.40, 0.42, 0.44))
    ]
    pq.write_table(pa.Table.from_pylist(rows), dest / "confirm.parquet")
    before = write_report(load_experiment(experiment), tmp_path / "unconfirmed.html").read_text()
    assert "Not confirmed yet" in before
    page = write_report(load_experiment(dest), tmp_path / "confirmed.html")
    open_page(browser, page)
    from selenium.webdriver.common.by import By

    table = browser.find_element(By.ID, "confirmed").text
    assert "mean score" in table and "0.5500" in table and "0.0500" in table  # mean and std of ids[0]
    assert table.index(ids[0]) < table.index(ids[1])  # best mean first


def test_importance_of_a_big_sweep_is_fit_on_a_seeded_sample():
    from dashboards.importance import param_importances

    exp = _crafted(120)
    plain, focal = param_importances(exp, max_trials=40)
    assert (plain.trials, plain.of) == (40, 120) and plain.sampled
    assert max(plain.values, key=plain.values.get) == "lr"  # the sample still finds what drives the score
    assert focal.trials == min(40, focal.of) and focal.of == sum(t["config/loss"] == "focal" for t in exp.trials)
    again, _ = param_importances(exp, max_trials=40)
    assert again.values == plain.values  # the same sample on every build
    full, _ = param_importances(exp, max_trials=0)
    assert (full.trials, full.of, full.sampled) == (120, 0, False)


@pytest.mark.slow
@pytest.mark.browser
def test_a_big_leaderboard_pages_and_sorts_across_pages(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from dashboards.report import LEADERBOARD_PAGE, build_report

    exp = _crafted(250)
    page = tmp_path / "big.html"
    page.write_text(build_report(exp, importance_trials=40))
    assert "fit on 40 of 250 trials" in page.read_text()
    browser.get(page.as_uri())
    visible = (
        "return Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
        ".filter(r => !r.hidden).map(r => r.cells[1].textContent)"
    )
    where = (
        "return document.querySelector('table#leaderboard').parentNode.nextElementSibling"
        ".querySelector('.where').textContent"
    )
    ranked = [t["trial_id"] for t in sorted(exp.trials, key=lambda t: -t["score"])]
    assert browser.execute_script(visible) == ranked[:LEADERBOARD_PAGE]
    assert browser.execute_script(where) == f"rows 1-{LEADERBOARD_PAGE} of 250"
    pager = browser.find_element(By.CSS_SELECTOR, "section#leaderboard .pager")
    pager.find_element(By.CSS_SELECTOR, ".next").click()
    assert browser.execute_script(visible) == ranked[LEADERBOARD_PAGE : 2 * LEADERBOARD_PAGE]
    pager.find_element(By.CSS_SELECTOR, ".next").click()
    assert browser.execute_script(visible) == ranked[2 * LEADERBOARD_PAGE :]
    assert browser.execute_script(where) == f"rows {2 * LEADERBOARD_PAGE + 1}-250 of 250"
    assert not pager.find_element(By.CSS_SELECTOR, ".next").is_enabled()
    browser.find_elements(By.CSS_SELECTOR, "#leaderboard th")[2].click()  # sort by score, ascending
    assert browser.execute_script(visible) == ranked[::-1][:LEADERBOARD_PAGE]  # every row sorted; back to page 1
    assert not pager.find_element(By.CSS_SELECTOR, ".prev").is_enabled()


@pytest.mark.slow
@pytest.mark.e2e
def test_the_sweep_prints_compact_lines_not_ray_result_boxes(experiment):
    """7 trials: one line per trial start and end, status lines, the summary; none of Ray's tables or boxes."""
    text = (experiment.parent / "sweep-output.txt").read_text()
    trials = pq.read_table(experiment / "trials.parquet").to_pylist()
    lines = text.splitlines()
    for t in trials:
        assert sum(line.startswith(f"trial {t['trial_id']} started: ") for line in lines) == 1, t["trial_id"]
        ended = [line for line in lines if line.startswith(f"trial {t['trial_id']} {t['outcome']}: ")]
        assert len(ended) == 1 and f"score {t['score']:.4f}" in ended[0], t["trial_id"]
    assert any(" of 7 ended (" in line and "| best " in line and " of 28 epochs" in line for line in lines)
    for ray_output in (
        "╭",
        "│",
        "Trial status",
        "Configuration for experiment",
        "View detailed results",
        "Processing trial results took",
        "_storage interface",
    ):
        assert ray_output not in text, ray_output
    assert len(lines) < 70, len(lines)  # ~890 lines for 12 trials before
