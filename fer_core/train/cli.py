"""``fer train``, ``fer evaluate`` and ``fer ladder``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import FerError
from ..progress import say
from ..storage import redact


def add_parsers(sub) -> None:
    _train_parser(sub)
    _evaluate_parser(sub)
    _ladder_parser(sub)


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one model from a YAML config (+ --set overrides)",
        description="Train one model. Precedence: code defaults < 'preset: <ladder model>' < the YAML file < "
        "--set. Writes config.yaml, metrics.jsonl, checkpoint/, best.pt and result.json to --out. "
        "Every config key: 'fer train --keys'.",
    )
    p.add_argument("--config", help="YAML file of config keys (optional: defaults and --set suffice)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set lr=3e-4 --set model_args.filters=[32,64,128]; repeatable",
    )
    p.add_argument("--out", help="run folder (default: runs/train/<model>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (same config and data)",
    )
    p.add_argument("--evaluate", action="store_true", help="evaluate the best weights on the test split afterwards")
    p.add_argument("--keys", action="store_true", help="print every config key with its default and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from ..storage import working_copy
    from .config import TrainConfig, dump_config, load_config

    if args.keys:
        print(dump_config(TrainConfig()), end="")
        return 0
    cfg = load_config(args.config, overrides=args.overrides)
    with working_copy(args.out or f"runs/train/{cfg.model}", download=args.resume) as (out, remote):
        return _train_into(args, cfg, out, remote)


def _train_into(args, cfg, out: Path, remote) -> int:
    """``fer train`` into the run folder ``out`` (a local working copy of ``remote`` when --out is a URI: the
    run's files are uploaded there after every epoch, so a killed run resumes from it with --resume)."""
    from ..safepaths import check_writable
    from .trainer import CHECKPOINT_FILE, train

    resume = None
    if args.resume:
        resume = out / "checkpoint" / CHECKPOINT_FILE
        if not resume.is_file():
            raise FerError(f"--resume: {resume} does not exist; train without --resume first")
    elif (out / "checkpoint").exists():
        raise FerError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    elif (out.exists() and (not out.is_dir() or any(out.iterdir()))) or (remote is not None and remote.is_dir()):
        raise FerError(
            f"--out {remote or out}: already exists and is not empty; 'fer train' writes a new run folder "
            "and never replaces files in it: choose another --out"
        )
    if remote is None:
        check_writable(out, target=out)

    def report(m: dict, _ckpt) -> None:
        if remote is not None:
            remote.upload_dir(out)
        if not args.quiet:
            say(
                f"epoch {m['epoch']:>3}/{cfg.epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}  "
                f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f} (best {m['best_val_acc']:.4f} @ "
                f"{m['best_epoch']})  lr {m['lr']:.3g}  {m['images_per_s']:.0f} img/s"
            )

    result = train(cfg, report=report, run_dir=out, resume=resume, progress=False if args.quiet else None)
    print(json.dumps(result.summary(), indent=2))
    if args.evaluate and result.status != "diverged":
        _print_eval(out, "test", "best")
    if remote is not None:
        remote.upload_dir(out, last=("result.json",))
    print(f"run folder: {remote or out}")
    return 1 if result.status == "diverged" else 0


def _evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained run on its test split",
        description="Evaluate a run folder written by 'fer train': accuracy, macro-F1, per-class "
        "report and confusion matrix, written to RUN_DIR/eval-<split>/ (JSON + PNG).",
    )
    p.add_argument("run_dir", help="a run folder written by 'fer train'")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate")
    p.add_argument(
        "--weights",
        default="best",
        choices=("best", "final"),
        help="best: the epoch with the best val accuracy (best.pt); final: the last checkpoint",
    )
    p.add_argument("--data", help="evaluate on this data set instead of the run's (its version must match)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=lambda a: _print_eval(a.run_dir, a.split, a.weights, a.data, a.device))


def _print_eval(run_dir, split, weights, data=None, device="auto") -> int:
    from ..storage import working_copy
    from .evaluate import evaluate_run
    from .metrics import format_report

    with working_copy(run_dir) as (local, remote):  # a run folder on a storage URI: a local copy
        result = evaluate_run(local, split=split, weights=weights, data=data, device=device)
        out = result["out_dir"]
        if remote is not None:
            out = remote.child(f"eval-{split}")
            out.upload_dir(result["out_dir"])
    print(f"{result['model']} on {split} ({result['n']} images, {weights} weights from epoch {result['epoch']}):")
    print(format_report(result, result["classes"]))
    print(f"wrote {redact(str(out))}/metrics.json, report.txt, confusion.json, confusion.png")
    return 0


def _ladder_parser(sub) -> None:
    p = sub.add_parser(
        "ladder",
        help="train the capstone notebook's model ladder and print its table",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train Model 0, A, B, C, B+, B++ and D with the notebook's settings and print "
        "the notebook's results table (val accuracy, train-val gap, final vs peak).",
    )
    p.add_argument("--data", default="runs/default/data", help="data set folder or URI from 'fer data ingest'")
    p.add_argument("--out", default="runs/ladder", help="folder for one run folder per model, ladder.json, ladder.md")
    p.add_argument("--models", help="comma-separated rungs (0,a,b,c,bplus,bplusplus,d); default: all")
    p.add_argument("--epochs", type=int, help="epochs per model (default: the notebook's, 75)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every rung (e.g. --set batch_size=128 --set device=cuda)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the selected rungs' run folders from an earlier ladder in --out",
    )
    p.set_defaults(func=_run_ladder)


def _run_ladder(args) -> int:
    import shutil

    from ..safepaths import check_replaceable, check_writable
    from ..storage import check_folder, working_copy
    from .data import load_train_data
    from .ladder import format_ladder, run_ladder, select_rungs

    models = args.models.split(",") if args.models else None
    presets = [preset for preset, _, _ in select_rungs(models)]
    with working_copy(args.out, download=False) as (out, remote):
        for preset in presets:  # every rung's folder is checked before anything is trained or removed
            if remote is not None:
                check_folder(
                    remote.child(preset).uri, overwrite=args.overwrite, kind="training run", markers=("config.yaml",)
                )
            else:
                check_replaceable(
                    out / preset,
                    kind="training run",
                    markers=("config.yaml",),
                    overwrite=args.overwrite,
                    protect=(args.data,),
                )
        if remote is None:
            check_writable(out)
        data = load_train_data(args.data, splits=("train", "val"))
        for preset in presets:
            if remote is not None:
                remote.child(preset).delete()
            elif (out / preset).is_dir() and any((out / preset).iterdir()):
                shutil.rmtree(out / preset)
        rows = run_ladder(
            args.data,
            out,
            models=models,
            epochs=args.epochs,
            overrides=args.overrides,
            data=data,
            progress=False if args.quiet else None,
        )
        if remote is not None:
            remote.upload_dir(out, last=("ladder.json", "ladder.md"))
    print(format_ladder(rows))
    print(f"wrote {remote or redact(args.out)}/ladder.md, ladder.json and one run folder per model")
    return 0
