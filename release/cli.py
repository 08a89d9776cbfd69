"""``fer export-best``, ``fer retrain``, ``fer confirm``: from a finished sweep to a shipped model.

    fer export-best runs/sweeps/reg1 --out best.yaml [--by score|final|peak|confirmed] [--top K]
    fer retrain best.yaml [--on train|train+val] [--out RUN_DIR] [--epochs N] [--weights final|best]
    fer confirm runs/sweeps/reg1 --top 3 --seeds 3 [--concurrency C] [--address ...]

The work is in ``release.export``, ``release.retrain`` and ``release.confirm``; retrain and
confirm log W&B runs (job types ``retrain`` and ``confirm``) through ``sweeps.wandb_logging``.
"""

from __future__ import annotations

import json
import shlex

from fer_core.errors import FerError


def add_parsers(sub) -> None:
    _export_parser(sub)
    _retrain_parser(sub)
    _confirm_parser(sub)
    _predict_parser(sub)


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export-best",
        help="write a sweep's best trial as a complete trainer config (YAML)",
        description="Write the best trial of a finished sweep as a complete, validated trainer config with a "
        "provenance block; 'fer train --config' and 'fer retrain' take it. Only trials that ran their "
        "full epoch budget (outcome completed) can win: a trial stopped at epoch 3 has a score from "
        "epoch 3.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="a finished sweep's folder (<storage>/<name>)")
    p.add_argument("--out", required=True, help="the YAML to write (with --top K also OUT-2.yaml ... OUT-K.yaml)")
    p.add_argument(
        "--by",
        default="score",
        metavar="KEY",
        help="ranking key: score (mean val acc of the last epochs; the sweep's objective), final, peak, "
        "or confirmed (mean score over fresh seeds from 'fer confirm'); default: score",
    )
    p.add_argument(
        "--top",
        type=int,
        default=1,
        metavar="K",
        help="write the best K: OUT is rank 1, OUT-2.yaml rank 2, ... (default: 1)",
    )
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from .export import run_export

    return run_export(args)


def _retrain_parser(sub) -> None:
    p = sub.add_parser(
        "retrain",
        help="retrain an exported config from scratch, test it once, export TorchScript + model card",
        description="Retrain a config (from 'fer export-best') from scratch, evaluate it once on the test split, "
        "and write weights (best.pt, final.pt), model.pt2 + model.onnx (checked against PyTorch), "
        "metrics.json, confusion.json/png "
        "and MODEL_CARD.md to --out. --on train reproduces the sweep trial exactly (on CPU); "
        "--on train+val trains on both, so val metrics are no longer held out.",
    )
    p.add_argument("config", metavar="CONFIG_YAML", help="a trainer config, e.g. best.yaml from 'fer export-best'")
    p.add_argument(
        "--on",
        default="train",
        metavar="SPLITS",
        help="train (as the sweep; val stays held out) or train+val (more data; val is then only a "
        "fit check); default: train",
    )
    p.add_argument("--out", help="run folder (default: runs/retrain/<experiment>-<trial>[-trainval])")
    p.add_argument("--epochs", type=int, help="epoch budget (default: the config's, i.e. the sweep's)")
    p.add_argument(
        "--weights",
        default="final",
        metavar="WHICH",
        help="weights to test and export: final (default; what the sweep's score ranks) or best "
        "(best val accuracy; --on train only)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (e.g. --set device=cuda); repeatable",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    from sweeps.wandb_logging import add_arguments as add_wandb_arguments

    add_wandb_arguments(p, runs="one run, job type retrain, the model as an artifact")
    p.set_defaults(func=_run_retrain)


def _run_retrain(args) -> int:
    from pathlib import Path

    from fer_core.progress import say
    from fer_core.train.checkpoint import BEST_FILE
    from fer_core.train.config import load_config
    from release import provenance
    from release.retrain import MODEL_FILES, default_out, retrain
    from sweeps.wandb_logging import JOB_RETRAIN, RunLogger, epoch_metrics, prepare_environment, resolve_mode

    if args.epochs is not None and args.epochs < 1:
        raise FerError(f"--epochs: must be >= 1; got {args.epochs}")
    mode = resolve_mode(args.wandb_mode)
    prepare_environment(mode)
    overrides = [*args.overrides, *([f"epochs={args.epochs}"] if args.epochs is not None else [])]
    cfg = load_config(args.config, overrides=overrides)  # what retrain trains (its errors come first)
    prov = provenance.read(args.config)
    out = str(args.out) if args.out is not None else str(default_out(args.config, args.on))
    stem = Path(str(args.config).split("?", 1)[0]).stem
    # W&B: one run, started with the first epoch; its files land in <out>/wandb once the model folder is written
    tracker = RunLogger(
        mode,
        project=args.wandb_project,
        group=prov.get("experiment") or stem,
        job_type=JOB_RETRAIN,
        target=out,
        direct=False,
    )
    run = None

    def report(m: dict, _ckpt) -> None:
        nonlocal run
        if not args.quiet:
            say(
                f"epoch {m['epoch']:>3}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}  "
                f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f}  {m['images_per_s']:.0f} img/s"
            )
        if run is None:
            run = tracker.start(
                name=f"{prov.get('trial_id') or stem}-retrain-{args.on}",
                config={
                    **cfg.recorded(),
                    "retrain": {
                        "config_file": _redacted(str(args.config)),
                        "on": args.on,
                        "weights": args.weights,
                        "out": _redacted(out),
                    },
                    "provenance": provenance.identity(prov, "rank"),
                },
            )
        tracker.log_epoch(run, m)

    def written(folder, info: dict) -> None:
        files = MODEL_FILES + ((BEST_FILE,) if args.weights == "best" else ())
        t = info["test"]
        tracker.log_files(
            run,
            name=f"model-{prov.get('experiment') or ''}-{prov.get('trial_id') or stem}",
            type="model",
            folder=folder,
            files=files,
            metadata={
                "on": args.on,
                "weights": args.weights,
                "epoch": info["epoch"],
                "test_accuracy": t["accuracy"],
                "test_macro_f1": t["macro_f1"],
                "data_version": info["data"]["version"],
                "out": _redacted(out),
                "provenance": provenance.identity(prov),
            },
        )

    ok = False
    try:
        info = retrain(
            args.config,
            on=args.on,
            out=out,
            epochs=args.epochs,
            weights=args.weights,
            overrides=args.overrides,
            overwrite=args.overwrite,
            progress=False if args.quiet else None,
            report=report,
            on_written=written,
        )
        t = info["test"]
        tracker.finish(
            run,
            {
                **{f"test/{k}": t[k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "loss", "n")},
                **{f"test/f1_{c}": pc["f1"] for c, pc in t["per_class"].items()},
                **{f"val/{k}": v for k, v in epoch_metrics(info["val"]).items()},
                "epochs": info["epochs"],
                "status": info["status"],
                "evaluated_epoch": info["epoch"],
            },
        )
        ok = True
    finally:
        tracker.close(ok=ok)  # <out>/wandb; after a failure the runs stay on this node (and say where)
    t = info["test"]
    print(
        json.dumps(
            {
                "test_accuracy": t["accuracy"],
                "test_macro_f1": t["macro_f1"],
                "n": t["n"],
                "on": info["on"],
                "weights": info["weights"],
                "epoch": info["epoch"],
            },
            indent=2,
        )
    )
    print(
        f"wrote {info['out_dir']}: best.pt, final.pt, model.pt2, model.onnx, metrics.json, confusion.json/png, "
        "MODEL_CARD.md"
    )
    return 0


def _redacted(uri: str) -> str:
    from fer_core.storage import redact

    return redact(uri)


def _confirm_parser(sub) -> None:
    from release.confirm import SEED_OFFSET, add_arguments

    p = sub.add_parser(
        "confirm",
        help="re-train a sweep's top configurations with fresh seeds on Ray, rank by mean score",
        description="Re-train the top K completed trials of a sweep with N fresh seeds each (sweep seed + "
        f"{SEED_OFFSET} + i), as parallel Ray tasks, and rank them by mean score with std, min and max. "
        "Writes confirm.parquet and confirm.json into the experiment folder; then "
        "'fer export-best --by confirmed'. Also runs as a Ray job: python -m fer_cli confirm ...",
    )
    add_arguments(p)
    p.set_defaults(func=_run_confirm)


def _run_confirm(args) -> int:
    from release.confirm import run_confirm

    command = [f"fer confirm {shlex.quote(args.experiment)} --top {args.top} --seeds {args.seeds}"]
    for flag in ("concurrency", "address", "num_cpus", "cpus_per_task", "gpus_per_task"):
        if getattr(args, flag) is not None:
            command.append(f"--{flag.replace('_', '-')} {shlex.quote(str(getattr(args, flag)))}")
    for flag, default in (("wandb_mode", "auto"), ("wandb_project", None)):
        if getattr(args, flag) != default:
            command.append(f"--{flag.replace('_', '-')} {shlex.quote(str(getattr(args, flag)))}")
    return run_confirm(args, " ".join(command))


def _predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files with a model 'fer retrain' exported (ONNX)",
        description="Classify image files (any size and mode; folders expand to the images inside) with the "
        "model.onnx that 'fer retrain' wrote: prepared as 'fer data ingest' prepares images, run by "
        "ONNX Runtime; prints each file's label, its probability and the next likely classes.",
    )
    p.add_argument("model", metavar="MODEL", help="model.onnx, or the model folder of 'fer retrain --out'")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders of them")
    p.add_argument("--out", default=None, help="also write the class probabilities to a .csv or .json file")
    p.add_argument("--top", type=int, default=3, help="classes shown per image (default: 3)")
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    import sys

    from .predict import format_predictions, predict, write_predictions

    if args.top < 1:
        raise FerError(f"--top: must be >= 1; got {args.top}")
    rows, failures, info = predict(args.model, args.images)
    for file, reason in failures:
        print(f"fer predict: skipped {file}: {reason}", file=sys.stderr)
    if rows:
        print(format_predictions(rows, top=args.top))
    if args.out:
        path = write_predictions(args.out, rows, info["classes"])
        print(f"wrote {path} ({len(rows)} images)")
    return 0 if rows else 2
