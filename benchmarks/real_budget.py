"""Real faces, equal compute: the README's sweep against the models a team would train by hand.

    REAL=$(mktemp -d) && tar -xzf ../shared/data/fer2013-train.tar.gz -C "$REAL"
    .venv/bin/python benchmarks/real_budget.py --images "$REAL/fer2013-train" --classes 4 --out "$REAL/b4"
    .venv/bin/python benchmarks/real_budget.py --images "$REAL/fer2013-train" --classes 7 --out "$REAL/b7" \\
        --budget-min 12 --arms plain_cnn          # one arm; the table shows every arm already in --out

What it does, with the ``fer`` commands a user runs (each a subprocess, timed as a whole):

1. **Data**: ``fer data ingest IMAGES`` (4 classes: happy, neutral, sad, surprise; or all 7), 80/10/10
   stratified group split, duplicates removed (a near-duplicate group never straddles splits), no
   mislabel search (speed). Its test split is *sealed*: every training command reads ``data-sealed/``,
   the same data set (same manifest and version) without the test shards, so no sweep, calibration or
   training run can read it; only the final evaluations read ``data/``. Not counted in any arm's compute.
2. **Arms**, each with the same compute budget ``--budget-min`` (wall-clock minutes on this machine):

   - ``sweep``: ``fer sweep`` exactly as the README runs it (default space, samples, epochs, ASHA,
     collapse rule; W&B off) with ``--time-budget-s`` = the budget less ``--retrain-share`` of it, then
     ``fer export-best``; then the winner is trained the way a baseline is: a one-epoch calibration
     (``fer train --config best.yaml --set epochs=1``, counted) and ``fer retrain --on train+val --epochs N``
     for as many epochs as the rest of the budget holds (the Tuning Playbook's "tune on short runs, train
     the final one longer"; ``--set data=`` the unsealed set, so its one test evaluation can run;
     ``threads`` = this machine's cores, as for the baselines). Compute = sweep + export + calibration +
     retrain. Its val columns are the winning trial's (val held out; the retrain trains on val).
   - ``model_b``: the capstone notebook's Model B recipe (``preset: fer_cnn_b``: Adam 5e-4, soft
     augmentation, plateau lr, balanced class weights, batch 64).
   - ``plain_cnn``: a plain hand-written CNN (``preset: fer_cnn_plain``: Conv-BN-ReLU x2 blocks 32-64-128,
     Dense 256, Adam 1e-3, label smoothing .1, flips, cosine, batch 64).
   - ``plain_noreg`` (only when named in ``--arms``): the plain CNN with every regularizer off (no dropout,
     smoothing or augmentation; constant lr): does an unregularized model overfit and collapse on real
     faces within the budget?
   - ``plain_strong`` (only when named in ``--arms``): the plain CNN's recipe with the augmentation the
     default CPU space fixes (``strong``): the control that tells how much of the sweep's result is that
     augmentation rather than what the sweep searched.
   - ``synthetic`` (not a contender, not counted): the plain CNN's recipe on the main job's procedural
     faces (``fer data synth`` + ingest as ``scripts/main.sh`` does) for as many optimizer steps as
     ``plain_cnn`` took (the procedural set is smaller, so that is more epochs): its learning curve printed
     under the real ones, per epoch and at the same step counts.

   A baseline first trains one epoch (``fer train --set epochs=1``, counted in its compute) to measure
   its epoch time and its start-up, then trains from scratch for as many epochs as the rest of the budget
   holds (a cosine schedule needs its length up front), then ``fer evaluate`` on the test split, final and
   best-val weights (not counted). Equal compute is kept in the baselines' favour: when the sweep arm (run
   first, or already in ``OUT``) used more than the budget (its retrain is planned from one calibration
   epoch, and a host that slows down afterwards stretches it), a baseline gets the sweep arm's minutes as
   its budget (``--no-match-sweep`` turns that off).
3. **Table**: arm, model, compute (minutes), epochs, val accuracy (best, final), train accuracy (final),
   test accuracy (final weights; best-val weights beside it), peak epoch, drop from peak, whether the
   sweep's collapse rule (its default grace, window, margin) fires on the curve; then one line of
   per-epoch val accuracy per arm. ``OUT/real_budget.json`` and ``.csv`` hold the same; ``OUT/phases.json``
   logs every command with the splits it could read and the machine's load when it ended, in order.

``--sweep-args`` adds flags to the sweep (e.g. ``"--max-epochs 12"``); ``--threads`` caps torch threads.
Figures from this machine are in the README's "On real data".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_core.atomic import write_text  # noqa: E402
from fer_core.errors import FerError  # noqa: E402
from fer_core.jsonio import dumps  # noqa: E402

ARMS = ("sweep", "model_b", "plain_cnn", "plain_strong", "plain_noreg", "synthetic")
DEFAULT_ARMS = ("sweep", "model_b", "plain_cnn", "synthetic")
RETRAIN_EXTRA_S = 15.0  # a retrain's work after training: one test evaluation, ONNX + torch.export, checks
# arm -> (preset, overrides): the recipes a team runs by hand, and the plain CNN with every regularizer off
# (no dropout, smoothing or augmentation, constant lr): the probe of whether real faces overfit and collapse;
# and the recipe with the default CPU space's fixed augmentation (the control for the sweep's winner).
BASELINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "model_b": ("fer_cnn_b", ()),
    "plain_cnn": ("fer_cnn_plain", ()),
    "plain_strong": ("fer_cnn_plain", ("augment=strong",)),
    "plain_noreg": ("fer_cnn_plain", ("dropout_scale=0", "label_smoothing=0", "augment=none", "lr_schedule=constant")),
}
CLASSES_4 = "happy,neutral,sad,surprise"
COLUMNS = (
    "arm",
    "model",
    "compute_min",
    "epochs",
    "val_best",
    "val_final",
    "train_final",
    "test_acc",
    "test_acc_best_weights",
    "peak_epoch",
    "drop_from_peak",
    "collapsed",
)


class Bench:
    """The work folder: the data sets, one folder per arm, and the log of what read which split."""

    def __init__(self, out: Path, seed: int, threads: int):
        self.out = out
        self.data = out / "data"  # every split: read by the final evaluations only
        self.sealed = out / "data-sealed"  # train and val: what every training command reads
        self.seed = seed
        self.threads = threads
        self.phases_file = out / "phases.json"
        self.phases: list[dict] = json.loads(self.phases_file.read_text()) if self.phases_file.is_file() else []

    def fer(self, arm: str, step: str, args: list[str], *, reads: tuple[str, ...], quiet: bool = True) -> float:
        """Run ``fer ARGS`` (``python -m fer_cli``), log it; its wall seconds. A failure raises with its output."""
        env = dict(os.environ, FER_NO_PROGRESS="1", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
        env.pop("RAY_ADDRESS", None)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "fer_cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        end = time.time()
        load = os.getloadavg()[0]  # the 1-minute load at the end: other work on the machine skews the timings
        self.phases.append(
            {"arm": arm, "step": step, "reads": list(reads), "start": start, "end": end, "load_1min": load}
        )
        write_text(self.phases_file, dumps(self.phases, indent=1) + "\n")
        (self.out / "logs").mkdir(exist_ok=True)
        write_text(self.out / "logs" / f"{arm}-{step}.log", proc.stdout + proc.stderr)
        if not quiet:
            print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
            raise FerError(f"{arm}: fer {args[0]} ({step}) failed (exit {proc.returncode}):\n  " + "\n  ".join(tail))
        return end - start


# --- data ------------------------------------------------------------------------------------------


def prepare_data(bench: Bench, images: Path, classes: int) -> dict:
    """Ingest ``images`` once into ``data/`` (reused when present) and seal its test split in ``data-sealed/``."""
    manifest_file = bench.data / "manifest.json"
    if not manifest_file.is_file():
        args = ["data", "ingest", str(images), "--out", str(bench.data), "--split", "80/10/10"]
        args += ["--seed", str(bench.seed), "--no-mislabels", "--quiet"]
        if classes == 4:
            args += ["--classes", CLASSES_4]
        bench.fer("data", "ingest", args, reads=("images",))
    manifest = json.loads(manifest_file.read_text())
    if classes == 4 and list(manifest["classes"]) != CLASSES_4.split(","):
        raise FerError(f"{manifest_file}: classes {', '.join(manifest['classes'])}, not {CLASSES_4}; use another --out")
    if classes == 7 and len(manifest["classes"]) < 5:
        raise FerError(f"{manifest_file}: classes {', '.join(manifest['classes'])}, not all 7; use another --out")
    if not (bench.sealed / "manifest.json").is_file():
        seal(bench.data, bench.sealed, manifest)
    return manifest


def seal(data: Path, sealed: Path, manifest: dict) -> None:
    """``sealed``: the manifest and the train and val shards of ``data`` (hard links where possible), no test."""
    tmp = sealed.with_name(sealed.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for path in data.iterdir():
        if path.is_file() and (path.name == "manifest.json" or path.name.startswith(("train-", "val-"))):
            try:
                os.link(path, tmp / path.name)
            except OSError:
                shutil.copy2(path, tmp / path.name)
    if any(p.name.startswith("test-") for p in tmp.iterdir()):  # pragma: no cover - the filter above
        raise FerError(f"{tmp}: a test shard was copied")
    tmp.rename(sealed)


# --- arms ------------------------------------------------------------------------------------------


def run_sweep_arm(bench: Bench, folder: Path, budget_s: float, retrain_share: float, extra: list[str]) -> dict:
    sweep_budget = budget_s * (1 - retrain_share)
    args = ["sweep", "--data", str(bench.sealed), "--storage", str(folder), "--name", "sweep"]
    args += ["--seed", str(bench.seed), "--wandb-mode", "disabled", "--time-budget-s", f"{sweep_budget:.0f}", *extra]
    if bench.threads:
        args += ["--num-cpus", str(bench.threads)]
    print(f"[sweep] fer {' '.join(shlex.quote(a) for a in args)}", flush=True)
    sweep_s = bench.fer("sweep", "sweep", args, reads=("train", "val"))
    exp = folder / "sweep"
    record = json.loads((exp / "sweep.json").read_text())
    print(f"[sweep] {record['trials']} trials in {sweep_s / 60:.1f} min: {record['outcomes']}", flush=True)
    row: dict = {"arm": "sweep", "sweep_min": sweep_s / 60, "sweep": _sweep_facts(exp, record)}
    best = folder / "best.yaml"
    try:
        export_s = bench.fer("sweep", "export-best", ["export-best", str(exp), "--out", str(best)], reads=())
    except FerError as exc:
        print(f"[sweep] {exc}", flush=True)
        return {**row, "model": None, "compute_min": sweep_s / 60, "epochs": 0, "error": str(exc).splitlines()[0]}
    # The retrain fills what is left of the budget, as a baseline does: a one-epoch calibration (counted),
    # then the winner's config from scratch on train + val for as many epochs as the rest holds (its cosine
    # schedule needs the length up front: the Tuning Playbook's "tune on short runs, train the final longer").
    threads = bench.threads or os.cpu_count() or 1
    calib = folder / "calibration"
    calib_args = ["train", "--config", str(best), "--set", f"data={bench.sealed}", "--set", "epochs=1"]
    calib_args += ["--set", f"threads={threads}", "--out", str(calib), "--quiet"]
    calib_s = bench.fer("sweep", "calibration", calib_args, reads=("train", "val"))
    counts = _split_counts(bench)
    epoch_s = float(_history(calib)[0]["epoch_time_s"]) * (counts["train"] + counts["val"]) / counts["train"]
    startup_s = max(calib_s - float(_history(calib)[0]["epoch_time_s"]), 0.0)
    left_s = budget_s - sweep_s - export_s - calib_s
    epochs = max(1, math.floor((left_s - startup_s - RETRAIN_EXTRA_S) / epoch_s))
    print(
        f"[sweep] retrain the winner: {epoch_s:.1f}s per train+val epoch, {left_s:.0f}s left -> {epochs} epochs",
        flush=True,
    )
    retrain = folder / "retrain"
    args = ["retrain", str(best), "--out", str(retrain), "--set", f"data={bench.data}", "--wandb-mode", "disabled"]
    args += ["--on", "train+val", "--epochs", str(epochs), "--quiet", "--set", f"threads={threads}"]
    retrain_s = bench.fer("sweep", "retrain", args, reads=("train", "val", "test"))
    info = json.loads((retrain / "metrics.json").read_text())
    # The val columns describe the winning trial (val held out); the retrain trained on val, so its curve
    # only shows fit (kept as retrain_fit_curve).
    curve = _trial_curve(folder / "sweep", str((record.get("best") or {}).get("trial_id")))
    best_weights = None  # trained on train + val: no held-out val to pick "best" weights by
    return {
        **row,
        "model": info["config"]["model"],
        "compute_min": (sweep_s + export_s + calib_s + retrain_s) / 60,
        "retrain_min": (calib_s + retrain_s) / 60,
        "epochs": epochs,
        "trial_epochs": len(curve),
        "val_curve": curve,
        "retrain_fit_curve": [float(v) for v in info["val_curve"]],
        "train_final": info["val"]["final_train_acc"],
        "test_acc": info["test"]["accuracy"],
        "test_acc_best_weights": best_weights,
    }


def _trial_curve(exp: Path, trial_id: str) -> list[float]:
    """Per-epoch val accuracy of one trial of the sweep (``epochs.parquet``)."""
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(exp / "epochs.parquet").to_pylist() if r["trial_id"] == trial_id]
    return [float(r["val_acc"]) for r in sorted(rows, key=lambda r: r["epoch"])]


def _split_counts(bench: Bench) -> dict[str, int]:
    counts = json.loads((bench.data / "manifest.json").read_text()).get("counts") or {}
    return {s: sum(c.values()) if isinstance(c, dict) else int(c) for s, c in counts.items()}


def _sweep_facts(exp: Path, record: dict) -> dict:
    """What the sweep tried: trials by outcome and model, epochs, and the winner's sampled values."""
    import pyarrow.parquet as pq

    rows = pq.read_table(exp / "trials.parquet").to_pylist() if (exp / "trials.parquet").is_file() else []
    fixed_model = ((record.get("space") or {}).get("fixed") or {}).get("model")  # a space may fix the model
    models: dict[str, int] = {}
    for r in rows:
        model = str(r.get("config/model") or fixed_model)
        models[model] = models.get(model, 0) + 1
    best = record.get("best") or {}
    return {
        "trials": record.get("trials"),
        "outcomes": record.get("outcomes"),
        "epochs_total": record.get("epochs_total"),
        "max_epochs": record.get("max_epochs"),
        "models_tried": models,
        "best": {k.removeprefix("config/"): v for k, v in best.items() if k.startswith("config/")},
        "best_outcome": best.get("outcome"),
    }


def run_baseline_arm(bench: Bench, arm: str, folder: Path, budget_s: float) -> dict:
    preset, overrides = BASELINES[arm]
    common = ["--set", f"preset={preset}", "--set", f"data={bench.sealed}", "--set", f"seed={bench.seed}", "--quiet"]
    for override in overrides:
        common += ["--set", override]
    if bench.threads:
        common += ["--set", f"threads={bench.threads}"]
    calib = folder / "calibration"
    calib_s = bench.fer(
        arm, "calibration", ["train", *common, "--set", "epochs=1", "--out", str(calib)], reads=("train", "val")
    )
    epoch_s = float(_history(calib)[0]["epoch_time_s"])
    startup_s = max(calib_s - epoch_s, 0.0)
    epochs = max(1, math.floor((budget_s - calib_s - startup_s) / epoch_s))
    print(f"[{arm}] {preset}: one epoch {epoch_s:.1f}s + start-up {startup_s:.1f}s -> {epochs} epochs", flush=True)
    run = folder / "run"
    train_s = bench.fer(
        arm, "train", ["train", *common, "--set", f"epochs={epochs}", "--out", str(run)], reads=("train", "val")
    )
    history = _history(run)
    return {
        "arm": arm,
        "steps_per_epoch": _steps_per_epoch(run, _split_counts(bench)["train"]),
        "model": preset + (" (" + ", ".join(overrides) + ")" if overrides else ""),
        "compute_min": (calib_s + train_s) / 60,
        "calibration_min": calib_s / 60,
        "epoch_s": epoch_s,
        "epochs": len(history),
        "val_curve": [float(h["val_acc"]) for h in history],
        "train_final": float(history[-1]["train_acc"]),
        "test_acc": _evaluate(bench, arm, run, "final"),
        "test_acc_best_weights": _evaluate(bench, arm, run, "best"),
    }


def baseline_budget_s(out: Path, budget_s: float, match_sweep: bool = True) -> tuple[float, str]:
    """A baseline's budget: ``budget_s``, or the sweep arm's compute when that ran over it (and ``match_sweep``).

    The sweep arm's retrain is planned from one calibration epoch; a host that slows down later stretches
    it past the budget. Giving a baseline those minutes too keeps "equal compute" in the baseline's favour.
    """
    done = out / "arms" / "sweep" / "result.json"
    if not match_sweep or not done.is_file():
        return budget_s, ""
    sweep_s = 60 * float(json.loads(done.read_text())["compute_min"])
    if sweep_s <= budget_s:
        return budget_s, ""
    return sweep_s, f"the sweep arm's compute ({sweep_s / 60:.1f} min; it ran over the {budget_s / 60:g} min budget)"


def run_synthetic_arm(bench: Bench, folder: Path, steps: int, n: int | None) -> dict:
    """The plain CNN's recipe on the embedded procedural faces (the main job's data: ``fer data synth``, ingested
    as ``scripts/main.sh`` does), for at least ``steps`` optimizer steps (the real plain CNN's): its curve beside
    the real ones shows whether the demo data learns like real faces. Not a contender: its test split is
    synthetic."""
    from fer_core.data.synth.subjects import SUBJECT_PATTERN

    raw, data = folder / "raw", folder / "data"
    synth = ["data", "synth", "--out", str(raw)] + (["--n", str(n)] if n else [])  # the main job's faces
    bench.fer("synthetic", "synth", synth, reads=())
    ingest = ["data", "ingest", str(raw), "--out", str(data), "--group-by", SUBJECT_PATTERN, "--no-mislabels"]
    bench.fer("synthetic", "ingest", [*ingest, "--quiet"], reads=())
    counts = json.loads((data / "manifest.json").read_text())["counts"]
    per_epoch = math.ceil(sum(counts["train"].values()) / _preset_batch_size("fer_cnn_plain"))
    epochs = max(1, math.ceil(steps / per_epoch))
    print(f"[synthetic] {per_epoch} steps per epoch -> {epochs} epochs for {steps} steps", flush=True)
    run = folder / "run"
    args = ["train", "--set", "preset=fer_cnn_plain", "--set", f"data={data}", "--set", f"seed={bench.seed}"]
    args += ["--set", f"epochs={epochs}", "--out", str(run), "--quiet"]
    if bench.threads:
        args += ["--set", f"threads={bench.threads}"]
    train_s = bench.fer("synthetic", "train", args, reads=())
    history = _history(run)
    args = ["evaluate", str(run), "--split", "test", "--weights", "final", "--data", str(data)]
    bench.fer("synthetic", "evaluate-final", args, reads=())
    return {
        "arm": "synthetic",
        "steps_per_epoch": _steps_per_epoch(run, sum(counts["train"].values())),
        "model": "fer_cnn_plain (procedural faces)",
        "compute_min": train_s / 60,
        "epochs": len(history),
        "val_curve": [float(h["val_acc"]) for h in history],
        "train_final": float(history[-1]["train_acc"]),
        "test_acc": float(json.loads((run / "eval-test" / "metrics.json").read_text())["accuracy"]),
        "classes": json.loads((data / "manifest.json").read_text())["classes"],
    }


def _steps_per_epoch(run: Path, train_images: int) -> int:
    """Optimizer steps in one epoch of ``run`` (its batch size over the train split, the last batch partial)."""
    from fer_core.yamlio import read_yaml

    return math.ceil(train_images / int(read_yaml(run / "config.yaml", "run config")["batch_size"]))


def _preset_batch_size(preset: str) -> int:
    from fer_core.train.config import config_from_preset

    return int(config_from_preset(preset).batch_size)


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _evaluate(bench: Bench, arm: str, run: Path, weights: str, *, retrain_dir: bool = False) -> float | None:
    """Test accuracy of ``run``'s ``weights`` (``fer evaluate`` on the unsealed data set)."""
    args = ["evaluate", str(run), "--split", "test", "--weights", weights, "--data", str(bench.data)]
    try:
        bench.fer(arm, f"evaluate-{weights}", args, reads=("test",))
    except FerError as exc:
        if retrain_dir:  # a retrained model's folder is not a 'fer train' run on every version: say so, go on
            print(f"[{arm}] test with {weights} weights: {exc}", flush=True)
            return None
        raise
    return float(json.loads((run / "eval-test" / "metrics.json").read_text())["accuracy"])


# --- the table -------------------------------------------------------------------------------------


def finish_row(row: dict) -> dict:
    """Peak, drop and the sweep's collapse rule (its default settings) on the arm's val curve."""
    from sweeps.collapse import collapse_state
    from sweeps.settings import SweepConfig

    curve = row.get("val_curve") or []
    if not curve:
        return {**row, "val_best": None, "val_final": None, "peak_epoch": None, "drop_from_peak": None}
    peak = max(curve)
    state = collapse_state(curve, metric="val_acc", **SweepConfig.defaults().rules["collapse"])
    return {
        **row,
        "val_best": peak,
        "val_final": curve[-1],
        "peak_epoch": curve.index(peak) + 1,
        "drop_from_peak": peak - curve[-1],
        "collapsed": bool(state.stopped),
        "collapse_reason": state.epoch_reason() if state.stopped else "",
    }


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("val_best", "val_final", "train_final", "test_acc", "test_acc_best_weights"):
        return f"{100 * value:.2f}%"
    if key == "drop_from_peak":
        return f"{100 * value:.2f} pts"
    if key == "compute_min":
        return f"{value:.1f}"
    if key == "collapsed":
        return "yes" if value else "no"
    return str(value)


def format_table(rows: list[dict]) -> str:
    head = [
        "arm",
        "model",
        "compute (min)",
        "epochs",
        "val best",
        "val final",
        "train final",
        "test (final w.)",
        "test (best-val w.)",
        "peak epoch",
        "drop from peak",
        "collapsed",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(k, r.get(k)) for k in COLUMNS) + " |")
    return "\n".join(lines)


def format_curves(rows: list[dict]) -> str:
    width = max((len(r["arm"]) for r in rows), default=0)
    return "\n".join(
        f"{r['arm']:<{width}}  val acc per epoch: " + " ".join(f"{100 * v:.1f}" for v in r.get("val_curve") or [])
        for r in rows
    )


def val_at_steps(row: dict, marks: list[int]) -> list[float | None]:
    """The arm's val accuracy after each of ``marks`` optimizer steps: the epoch that ended last by then
    (None before its first epoch ends or past its last)."""
    per_epoch, curve = row.get("steps_per_epoch"), row.get("val_curve") or []
    if not per_epoch:
        return [None] * len(marks)
    return [curve[m // per_epoch - 1] if 1 <= m // per_epoch <= len(curve) else None for m in marks]


def format_steps(rows: list[dict], reference: str = "plain_cnn") -> str:
    """Val accuracy at the same optimizer step counts (the ends of ``reference``'s epochs, about ten of them)
    for every arm that knows its steps per epoch: data sets of different sizes side by side, step for step."""
    ref = next((r for r in rows if r["arm"] == reference and r.get("steps_per_epoch")), None)
    if ref is None:
        return ""
    epochs = len(ref["val_curve"])
    picks = sorted({1, 2, 3, 5, *range(10, epochs + 1, max(1, epochs // 8)), epochs} & set(range(1, epochs + 1)))
    marks = [e * ref["steps_per_epoch"] for e in picks]
    shown = [r for r in rows if r.get("steps_per_epoch") and r.get("val_curve")]
    width = max(len(r["arm"]) for r in shown)
    lines = [f"{'steps':<{width}}  " + " ".join(f"{m:>6}" for m in marks)]
    for r in shown:
        vals = val_at_steps(r, marks)
        lines.append(f"{r['arm']:<{width}}  " + " ".join(f"{'-':>6}" if v is None else f"{100 * v:6.1f}" for v in vals))
    return "val acc after the same number of optimizer steps (batch 64: 64 images a step):\n" + "\n".join(lines)


def write_results(bench: Bench, rows: list[dict], meta: dict) -> None:
    write_text(bench.out / "real_budget.json", dumps({**meta, "rows": rows}, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "val_curve"], extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "val_curve": " ".join(f"{v:.4f}" for v in r.get("val_curve") or [])})
    write_text(bench.out / "real_budget.csv", buf.getvalue())


# --- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, type=Path, help="class folders of face images (FER2013's train part)")
    ap.add_argument("--classes", type=int, choices=(4, 7), default=4, help="4: happy, neutral, sad, surprise; 7: all")
    ap.add_argument("--budget-min", type=float, default=45.0, help="compute budget of each arm, wall-clock minutes")
    ap.add_argument("--out", required=True, type=Path, help="work folder (data sets, one folder per arm, results)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the sweep and every training run")
    ap.add_argument(
        "--arms",
        default=",".join(DEFAULT_ARMS),
        help=f"comma-separated, of {', '.join(ARMS)} (plain_strong, the augmentation control, and plain_noreg, "
        "the collapse probe: not run by default)",
    )
    ap.add_argument(
        "--retrain-share",
        type=float,
        default=0.5,
        help="share of the sweep arm's budget kept for export-best and the winner's training (the sweep gets the "
        "rest): short trials find the recipe, the final training gets most of the compute",
    )
    ap.add_argument(
        "--no-match-sweep",
        dest="match_sweep",
        action="store_false",
        help="give a baseline the budget even when the sweep arm used more (default: the sweep arm's minutes then)",
    )
    ap.add_argument("--sweep-args", default="", help='more sweep flags, one string (e.g. "--max-epochs 12")')
    ap.add_argument("--threads", type=int, default=0, help="torch threads / Ray CPUs (default: all cores)")
    ap.add_argument(
        "--synthetic-n", type=int, default=None, help="procedural faces of the synthetic arm (default: the main job's)"
    )
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        ap.error(f"--arms: unknown {', '.join(unknown) or '(none given)'}; arms: {', '.join(ARMS)}")
    if not args.images.is_dir():
        ap.error(f"--images {args.images}: not a folder (class folders of face images)")
    if not args.budget_min > 0 or not 0 <= args.retrain_share < 1:
        ap.error("--budget-min must be > 0 and --retrain-share in [0, 1)")
    args.arm_list = [a for a in ARMS if a in arms]  # sweep first: a baseline's budget may match it (see above)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    out = args.out.resolve()
    if ROOT == out or ROOT in out.parents:
        raise SystemExit(f"--out {out}: inside the repository; the images must stay outside it (use a temp folder)")
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(out, args.seed, args.threads)
    for arm in args.arm_list:
        if (out / "arms" / arm / "result.json").exists():
            raise SystemExit(f"{out / 'arms' / arm}: this arm has run already; remove that folder or use another --out")
    manifest = prepare_data(bench, args.images, args.classes)
    counts = {s: sum(c.values()) if isinstance(c, dict) else c for s, c in (manifest.get("counts") or {}).items()}
    print(
        f"data {manifest['version']}: classes {', '.join(manifest['classes'])}; images per split {counts}", flush=True
    )
    budget_s = 60 * args.budget_min
    for arm in args.arm_list:
        folder = out / "arms" / arm  # done when its result.json is written (last)
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted run of this arm (no result.json): start it again
        folder.mkdir(parents=True)
        print(f"== {arm}: {args.budget_min:g} min", flush=True)
        if arm == "sweep":
            row = run_sweep_arm(bench, folder, budget_s, args.retrain_share, shlex.split(args.sweep_args))
        elif arm == "synthetic":
            plain = out / "arms" / "plain_cnn" / "result.json"
            done = json.loads(plain.read_text()) if plain.is_file() else {}
            steps = done["epochs"] * done["steps_per_epoch"] if done.get("steps_per_epoch") else 1000
            row = run_synthetic_arm(bench, folder, steps, args.synthetic_n)
        else:
            arm_budget_s, why = baseline_budget_s(out, budget_s, args.match_sweep)
            if why:
                print(f"[{arm}] budget {arm_budget_s / 60:.1f} min: {why}", flush=True)
            row = run_baseline_arm(bench, arm, folder, arm_budget_s)
            row["budget_min"] = arm_budget_s / 60
        row.setdefault("budget_min", args.budget_min)
        write_text(folder / "result.json", dumps(row, indent=2) + "\n")
    rows = [
        finish_row(json.loads((out / "arms" / a / "result.json").read_text()))
        for a in ARMS
        if (out / "arms" / a / "result.json").is_file()
    ]
    meta = {"data_version": manifest["version"], "classes": manifest["classes"], "counts": manifest.get("counts")}
    write_results(bench, rows, meta)
    print(f"\nFER, {len(manifest['classes'])} classes, test split sealed until the evaluations ({out}):")
    real = [r for r in rows if r["arm"] != "synthetic"]
    print(format_table(real))
    print(format_curves(rows))
    steps_table = format_steps(rows)
    if steps_table:
        print(steps_table)
    for r in rows:
        if r["arm"] == "synthetic":
            print(
                f"synthetic: the plain CNN on the main job's procedural faces ({len(r['classes'])} classes), "
                f"test {100 * r['test_acc']:.1f}%, train {100 * r['train_final']:.1f}% at the end: "
                "its curve above is to be read beside the real plain_cnn's"
            )
    loads = {
        r["arm"]: [p["load_1min"] for p in bench.phases if p["arm"] == r["arm"] and p.get("load_1min") is not None]
        for r in rows
    }
    if any(loads.values()):
        print(
            f"machine load (1-min average at the end of each step; {os.cpu_count()} cores): "
            + ", ".join(f"{a} {' '.join(f'{v:.1f}' for v in vs)}" for a, vs in loads.items() if vs)
        )
    for r in rows:
        if r["arm"] == "sweep" and r.get("sweep"):
            s = r["sweep"]
            print(
                f"sweep: {s['trials']} trials {s['outcomes']}, {s['epochs_total']} epochs of up to {s['max_epochs']}; "
                f"models tried {s['models_tried']}; winner {s['best']}"
                + (
                    f"; sweep {r['sweep_min']:.1f} min + retrain {r['retrain_min']:.1f} min"
                    if r.get("retrain_min")
                    else ""
                )
                + (f"; {r['error']}" if r.get("error") else "")
            )
    return rows


if __name__ == "__main__":
    try:
        main()
    except FerError as exc:
        raise SystemExit(str(exc)) from None
