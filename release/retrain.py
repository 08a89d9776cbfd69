"""Retrain an exported config from scratch and ship it: ``fer retrain best.yaml --out runs/retrain/reg1``.

    >>> info = retrain("best.yaml", on="train", out="runs/retrain/reg1")
    >>> info["test"]["accuracy"], info["export"]["onnx"]["path"]

What it does, in order:

1. Load the config (``fer export-best``'s YAML, or any trainer YAML; its ``provenance:`` block is
   kept for the model card) and the data set's train, val and test splits, version-checked.
2. Train from scratch with ``fer_core.train.train``. ``--on train`` (the default) trains exactly as
   the sweep's trial did: on CPU, same data, config and seed, the per-epoch validation curve equals
   the trial's in ``epochs.parquet`` (the trainer seeds data order, augmentation and dropout per
   (seed, epoch), and the exported config carries the trial's ``threads``).
   ``--on train+val`` trains on train and val concatenated (more data for the final model). The
   ``val_*`` metrics are then still computed on the val split for monitoring, but those images were
   trained on: they measure fit, not generalization, and ``metrics.json`` says ``val_held_out:
   false``. For the same reason ``--weights best`` (chosen by val accuracy) and val-driven early
   stopping or a ``plateau`` schedule are refused with train+val; the epoch budget is the sweep's.
3. Evaluate ONCE on the test split - the ``final`` weights by default (the sweep ranks what a run
   keeps at its end), or ``best`` (best val accuracy, ``best.pt``) with ``--on train``.
4. Write to the run folder (atomically: a failure leaves nothing): the trainer's ``config.yaml``,
   ``metrics.jsonl``, ``checkpoint/``, ``best.pt``; ``final.pt`` (the final weights, same format as
   ``best.pt``); ``model.pt2`` (``torch.export``) and ``model.onnx`` (the evaluated model in eval mode
   on CPU, input ``(N, C, H, W)`` float in [0, 1] with any N, output logits; class names, input size,
   color mode and scaling embedded; each checked to give PyTorch's logits: ``release.model_export``);
   ``metrics.json``; ``confusion.json`` / ``.png``; and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from fer_core.atomic import write_bytes, write_text
from fer_core.errors import FerError
from fer_core.jsonio import dumps
from fer_core.numbers import fmt
from fer_core.storage import folder_writer, redact
from fer_core.train.checkpoint import BEST_FILE, FINAL_FILE, load_weights, save_weights
from fer_core.train.config import TrainConfig, load_config
from fer_core.train.data import TrainData, load_train_data
from release.model_export import INFO_KEY, ONNX_FILE, PT2_FILE, export_model, model_info

from . import provenance

__all__ = ["retrain", "ON", "MODEL_FILES"]

ON = ("train", "train+val")
#: The files that make up the shipped model (what ``fer retrain`` logs as a W&B artifact of type model).
MODEL_FILES = (FINAL_FILE, PT2_FILE, ONNX_FILE, "config.yaml", "MODEL_CARD.md", "metrics.json", "confusion.json")
#: Config keys the model card lists (the full config is in config.yaml).
CARD_KEYS = (
    "model",
    "model_args",
    "dropout_scale",
    "loss",
    "focal_gamma",
    "focal_alpha",
    "label_smoothing",
    "class_weight",
    "sampler",
    "l2",
    "l2_scope",
    "weight_decay",
    "augment",
    "optimizer",
    "lr",
    "lr_schedule",
    "warmup_epochs",
    "batch_size",
    "epochs",
    "seed",
)


def _train_plus_val(data: TrainData) -> TrainData:
    """``data`` with its train split replaced by train + val (val kept as is, for monitoring only)."""
    images = dict(data.images, train=np.concatenate([data.images["train"], data.images["val"]]))
    labels = dict(data.labels, train=np.concatenate([data.labels["train"], data.labels["val"]]))
    return TrainData(classes=list(data.classes), version=data.version, uri=data.uri, images=images, labels=labels)


def _check_on(cfg: TrainConfig, on: str, weights: str) -> None:
    if on not in ON:
        raise FerError(f"--on: must be one of {', '.join(ON)}; got {on!r}")
    if weights not in ("final", "best"):
        raise FerError(f"--weights: must be final or best; got {weights!r}")
    if on != "train+val":
        return
    if weights == "best":
        raise FerError(
            "--weights best picks the epoch with the best val accuracy, but with --on train+val the "
            "val images are trained on; use --weights final (the default) or --on train"
        )
    if cfg.early_stopping_monitor is not None and cfg.early_stopping_monitor.startswith("val"):
        raise FerError(
            f"early_stopping_monitor={cfg.early_stopping_monitor}: with --on train+val the val split is "
            "trained on, so it cannot decide when to stop; retrain --on train, or set a fixed budget "
            "(--epochs N --set early_stopping_monitor=null --set early_stopping_patience=null)"
        )
    if cfg.lr_schedule == "plateau" and cfg.plateau_monitor.startswith("val"):
        raise FerError(
            f"lr_schedule=plateau watches {cfg.plateau_monitor}, which --on train+val trains on; "
            "retrain --on train, or use a schedule that does not watch the val split"
        )


# ----------------------------------------------------------------------------------------------
# Retrain
# ----------------------------------------------------------------------------------------------


def default_out(config_path: str | os.PathLike, on: str) -> Path:
    prov = provenance.read(config_path)
    stem = (
        f"{prov['experiment']}-{prov['trial_id']}"
        if prov.get("experiment") and prov.get("trial_id")
        else Path(str(config_path).split("?", 1)[0]).stem
    )
    return Path("runs/retrain") / (stem + ("-trainval" if on == "train+val" else ""))


def retrain(
    config_path: str | os.PathLike,
    *,
    on: str = "train",
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    weights: str = "final",
    overrides: list[str] | tuple = (),
    overwrite: bool = False,
    progress: bool | None = None,
    report=None,
    on_written=None,
) -> dict:
    """Retrain ``config_path`` from scratch, evaluate once on test, write the run folder; returns ``metrics.json``.

    ``report(metrics, checkpoint_dir)``: called after every epoch (the trainer's hook). ``on_written(folder,
    info)``: called with the local folder holding every output file (``MODEL_FILES`` among them) and the
    ``metrics.json`` content, just before that folder becomes ``out`` - e.g. to log the model as an artifact.
    """
    from fer_core.train.evaluate import evaluate_model
    from fer_core.train.metrics import save_confusion
    from fer_core.train.trainer import train

    overrides = list(overrides)
    if epochs is not None:
        overrides.append(f"epochs={epochs}")
    cfg = load_config(config_path, overrides=overrides)
    _check_on(cfg, on, weights)
    prov = provenance.read(config_path)
    out = str(out) if out is not None else str(default_out(config_path, on))  # a folder or a storage URI

    t0 = time.time()
    data = load_train_data(cfg.data, expected_version=cfg.data_version, splits=("train", "val", "test"))
    for split in ("train", "val", "test"):
        data.require(split)
    fit_data = _train_plus_val(data) if on == "train+val" else data

    # --overwrite replaces an earlier retrained model (it has a model card), never other folders or the data.
    with folder_writer(
        out,
        overwrite=overwrite,
        kind="retrained model folder",
        markers=("MODEL_CARD.md",),
        protect=(cfg.data, config_path, cfg.weights_path),  # never a folder holding an input
        last=("metrics.json", "MODEL_CARD.md"),
    ) as tmp:
        result = train(cfg, fit_data, report=report, run_dir=tmp, progress=progress)
        if result.status == "diverged":
            raise FerError(f"retrain of {config_path} diverged: {result.message}")
        model = result.model
        assert model is not None  # train() always returns the model it trained
        final_epoch = len(result.history)
        save_weights(
            tmp / FINAL_FILE,
            model,
            epoch=final_epoch,
            val_acc=result.final.get("val_acc"),
            config=cfg.recorded(),
            data_version=data.version,
            classes=data.classes,
        )
        eval_epoch = final_epoch
        if weights == "best":
            state = load_weights(tmp / BEST_FILE)
            model.load_state_dict(state["model"])
            eval_epoch = state["epoch"]
        # --- the one look at the test split ---------------------------------------------------
        test = evaluate_model(
            model, data, "test", device=cfg.device, batch_size=cfg.eval_batch_size, precision=cfg.precision
        )
        save_confusion(
            np.asarray(test["confusion"]),
            data.classes,
            tmp,
            title=f"{cfg.model} - test ({weights} weights, epoch {eval_epoch})",
        )
        # --- the shipped files: torch.export and ONNX, each checked against PyTorch ---------------
        exported = _export(model, data, prov, tmp, out)
        counts = {s: dict(zip(data.classes, data.counts(s), strict=False)) for s in ("train", "val", "test")}
        final = result.final
        info = {
            "config_file": str(config_path),
            "on": on,
            "val_held_out": on == "train",
            "weights": weights,
            "epoch": eval_epoch,
            "epochs": final_epoch,
            "status": result.status,
            "train_images": int(len(fit_data.labels["train"])),
            "data": {
                "uri": data.uri,
                "version": data.version,
                "classes": list(data.classes),
                "image_shape": list(data.image_shape),
                "counts": counts,
            },
            "test": {
                k: test[k]
                for k in (
                    "accuracy",
                    "macro_f1",
                    "macro_precision",
                    "macro_recall",
                    "loss",
                    "n",
                    "per_class",
                    "confusion",
                    "classes",
                )
            },
            "val": {
                "final_val_acc": final.get("val_acc"),
                "best_val_acc": result.best_val_acc,
                "best_epoch": result.best_epoch,
                "final_train_acc": final.get("train_acc"),
                "held_out": on == "train",
                "note": (
                    "val is held out"
                    if on == "train"
                    else "val images were trained on (train+val): val_* measure fit, not generalization"
                ),
            },
            "val_curve": [h["val_acc"] for h in result.history],
            "config": cfg.recorded(),
            "provenance": prov,
            "export": exported,
            "wall_s": time.time() - t0,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_text(tmp / "metrics.json", dumps(info, indent=2) + "\n")
        write_text(tmp / "MODEL_CARD.md", model_card(info, cfg))
        if on_written is not None:
            on_written(tmp, info)
    info["out_dir"] = redact(out)
    return info


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------


def _num(v, digits: int = 4) -> str:
    """A model card's number: ``0.6123``; tiny or non-finite floats ``.3g`` (``1e-05``); ``None`` as is."""
    return fmt(v, digits, missing="None", compact_below=1e-3)


def _export(model: torch.nn.Module, data: TrainData, prov: dict, tmp: Path, out) -> dict:
    """``model.pt2`` and ``model.onnx`` into ``tmp``; what each check measured, with the files' paths."""
    c, size = data.image_shape[2], data.image_shape[0]
    info = model_info(
        classes=list(data.classes),
        channels=c,
        size=size,
        extra={"data": {"uri": redact(data.uri), "version": data.version}, "provenance": provenance.identity(prov)},
    )
    sample = data.x("test")[:16].float().div(255.0)
    if len(sample) < 2:
        sample = torch.rand(2, c, size, size, generator=torch.Generator().manual_seed(0))
    exported = export_model(model, sample, info)
    write_bytes(tmp / PT2_FILE, exported.pt2)
    write_bytes(tmp / ONNX_FILE, exported.onnx)
    base = redact(out).rstrip("/")
    return {
        "pt2": {"path": f"{base}/{PT2_FILE}", **exported.checks["pt2"]},
        "onnx": {"path": f"{base}/{ONNX_FILE}", **exported.checks["onnx"]},
    }


def model_card(info: dict, cfg: TrainConfig) -> str:
    """``MODEL_CARD.md``: data, config, test metrics, provenance, intended use, how to load it."""
    d, t, prov, classes = info["data"], info["test"], info["provenance"], info["data"]["classes"]
    title = f"{cfg.model}" + (
        f", trial {prov['trial_id']} of sweep {prov['experiment']}" if prov.get("trial_id") else ""
    )
    lines = [
        f"# Model card: {title}",
        "",
        f"Retrained from scratch from `{info['config_file']}` on the **{info['on']}** split"
        f"{'s' if info['on'] == 'train+val' else ''} ({info['train_images']} images) for {info['epochs']} epochs "
        f"({info['status']}), evaluated once on the test split with the **{info['weights']}** weights "
        f"(epoch {info['epoch']}). Finished {info['finished']}.",
        "",
        "## Data",
        "",
        f"- data set: `{d['uri']}`, version `{d['version']}`",
        f"- classes (output order): {', '.join(classes)}",
        "",
        "| split | " + " | ".join(classes) + " | total |",
        "|---|" + "---|" * (len(classes) + 1),
    ]
    for split, counts in d["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts[c]) for c in classes) + f" | {sum(counts.values())} |")
    lines += ["", "## Configuration", "", "| key | value |", "|---|---|"]
    for k in CARD_KEYS:
        v = getattr(cfg, k)
        if k.startswith("focal_") and cfg.loss != "focal":
            continue
        if k == "model_args" and not v:
            continue
        lines.append(f"| {k} | {_num(v, 6) if isinstance(v, float) else v} |")
    lines += [
        "",
        "Every key: `config.yaml` (the trainer's resolved config).",
        "",
        f"## Test metrics ({t['n']} images, evaluated once)",
        "",
        f"- **test accuracy: {t['accuracy']:.4f}**",
        f"- macro-F1: {t['macro_f1']:.4f}",
        f"- loss (plain cross-entropy): {t['loss']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for c in classes:
        pc = t["per_class"][c]
        lines.append(f"| {c} | {pc['precision']:.4f} | {pc['recall']:.4f} | {pc['f1']:.4f} | {pc['support']} |")
    v = info["val"]
    lines += [
        "",
        f"Validation: final val accuracy {_num(v['final_val_acc'])}, best {_num(v['best_val_acc'])} at "
        f"epoch {v['best_epoch']} - "
        + (
            "held out."
            if v["held_out"]
            else "**not held out**: with train+val the val images were trained on, so these measure fit only."
        ),
        "Confusion matrix: `confusion.png`, `confusion.json`.",
        "",
        "## Provenance",
        "",
    ]
    if prov:
        m = prov.get("metrics") or {}
        lines += [
            f"- sweep experiment: {prov.get('experiment')} (`{prov.get('experiment_dir')}`)",
            f"- trial: {prov.get('trial_id')}, rank {prov.get('rank')} of {prov.get('candidates')} by "
            f"{prov.get('ranked_by')} ({prov.get('ranking')})",
            f"- in the sweep: score {_num(m.get('score'))}, peak {_num(m.get('peak'))} at epoch "
            f"{m.get('peak_epoch')}, final {_num(m.get('final'))}, {m.get('epochs')} epochs, {m.get('outcome')}",
        ]
        if prov.get("confirmed"):
            c = prov["confirmed"]
            lines.append(
                f"- confirmed with fresh seeds {c.get('seeds')}: mean score {_num(c.get('mean'))} "
                f"(std {_num(c.get('std'))}, min {_num(c.get('min'))}, max {_num(c.get('max'))}, "
                f"n {c.get('n')})"
            )
        lines += [f"- sweep command: `{prov.get('sweep_command')}`", f"- exported: {prov.get('exported_at')}"]
    else:
        lines.append(f"- not exported from a sweep (no provenance block in `{info['config_file']}`)")
    lines += [
        "",
        "## Intended use and limitations",
        "",
        f"Classifies a single pre-cropped, aligned face image ({', '.join(classes)}) as preprocessed by "
        f"`fer data ingest` ({_shape(d)}, pixels / 255) for research and for comparing regularization "
        "recipes. It is not validated for decisions about people (hiring, security, health, education): "
        "posed and synthetic training faces differ from faces in the wild, the classes are a small fixed set "
        "of expressions, not felt emotions, and accuracy varies across classes (see the table) and, "
        "untested here, across demographic groups, poses and lighting. The test split comes from the "
        "same source as the training data, so the test accuracy above is an in-distribution estimate.",
        "",
        "## Loading the model",
        "",
        f"`{ONNX_FILE}` (ONNX Runtime; a protobuf, safe to load from anywhere). Its metadata property "
        f"`{INFO_KEY}` holds the class names, input size, color mode and scaling:",
        "",
        "```python",
        "import json, numpy as np, onnxruntime as ort",
        f'session = ort.InferenceSession("{ONNX_FILE}")',
        f'info = json.loads(session.get_modelmeta().custom_metadata_map["{INFO_KEY}"])',
        'logits = session.run(None, {"pixels": x.astype(np.float32) / 255})[0]   # x: (N, C, H, W) uint8',
        "```",
        "",
        f"`fer predict {ONNX_FILE} face.jpg ...` prepares image files of any size and mode as ingest did and "
        "prints class probabilities.",
        "",
        f"`{PT2_FILE}` (`torch.export`; loading unpickles parts of the archive: load it only from a source you trust):",
        "",
        "```python",
        "import torch",
        f'model = torch.export.load("{PT2_FILE}").module()',
        "probs = model(x.float() / 255).softmax(1)   # columns in the class order above",
        "```",
        "",
    ]
    return "\n".join(lines)


def _shape(d: dict) -> str:
    h, w, c = d["image_shape"]
    return f"{h}x{w}, {'grayscale' if c == 1 else f'{c} channels'}, as an (N, {c}, {h}, {w}) float tensor"
