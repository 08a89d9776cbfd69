"""Packed trials (``fer_core.train.packed``): K trials as one batched network compute what K ``train()`` runs do.

Tolerances, measured on CPU:

- Without BatchNorm (``fer_cnn_tiny`` with ``bn=none``): batched convolutions and matrix products give
  the same per-trial numbers up to float rounding: per-epoch losses within 1e-3 relative (measured over 3
  epochs: at most 4e-5 on a CPU with AVX-512, 1.7e-4 on one without, where the batched convolution sums
  in another order), accuracies within one image (measured: equal). This is the test of everything the
  pack does per trial: seeds, data order, augmentation, dropout masks, losses, optimizers, L2, schedules.
  Weights: Adam divides each step by the gradient's running RMS, so where a gradient is near zero a
  rounding difference moves a weight by up to lr per step; the same trial trained with 2 threads instead
  of 1 (another summation order, nothing else) ends 1.3e-3 away in its largest weight difference. So the
  Adam trials' weights are compared by the relative norm of the difference per tensor (measured: at most
  9e-3; the same trial with another seed: 1.6), the SGD trial's element by element.
- With BatchNorm: ``train()``'s own channels_last BatchNorm kernel is off by ~2e-5 relative per call
  (against float64; the batched one by ~1e-7), and a small BatchNorm net amplifies that; with Adam at
  lr 1e-3 the losses agree within 3% (training) and 5% (validation, through the running statistics) over
  2 epochs (measured: up to 1.5%); accuracies are not compared (measured: 4 of 256 training and 8 of 64
  validation predictions flip, this tiny net's outputs sit near the decision boundaries). BatchNorm
  statistics and running buffers are per trial: shared or frozen ones would be far off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fer_core.errors import FerError
from fer_core.train import TrainData, load_checkpoint, load_config, train, trainer as trainer_module
from fer_core.train.packed import PackedTrainer, train_packed

ONE_IMAGE = 1 / 64  # of the val split (a train image is 1/256)
# fp32 rounding, relative, of a loss after 3 epochs of Adam: the packed network runs other fp32 convolution
# kernels than the single one, and training amplifies their rounding. Largest seen: 1.07e-3 (3 trials) and
# 1.2e-4 (one trial leaving) on an Intel Xeon (AVX-512, AMX); within 1e-3 and 1e-4 on an AMD EPYC (Zen 4).
# A wrong data order, lr or shared optimizer state moves these losses by percents.
PACKED_REL = 3e-3
ALONE_REL = 5e-4
NO_BN = ["model_args.bn=none", "model_args.dense_bn=false"]
# fp32: the tolerances below are fp32 rounding (precision=auto is bf16 on a CPU with native bf16).
BASE = ["model=fer_cnn_tiny", "batch_size=32", "eval_batch_size=64", "device=cpu", "threads=1", "precision=fp32"]

# Three trials that differ in everything a pack lets them differ in.
A = ["lr=1e-3", "label_smoothing=0.1", "augment=soft", "seed=0"]
B = [
    "optimizer=adamw",
    "lr=2e-3",
    "weight_decay=0.05",
    "loss=focal",
    "focal_gamma=1.5",
    "focal_alpha=0.25",
    "dropout_scale=0.5",
    "augment=strong",
    "l2=1e-4",
    "l2_scope=all_but_classifier",
    "seed=1",
]
C = ["optimizer=sgd", "lr=0.01", "l2=1e-3", "l2_scope=dense", "dropout_scale=0", "lr_schedule=cosine", "seed=2"]
D = ["lr=3e-3", "sampler=weighted", "class_weight=none", "dropout_scale=1.5", "seed=3"]


@pytest.fixture(scope="module")
def data():
    """256 train / 64 val images whose brightness encodes the class (learnable in a few epochs)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 4, n)
        x = rng.normal(60 + 40 * y[:, None, None], 25, (n, 48, 48)).clip(0, 255).astype(np.uint8)
        return x[..., None], y.astype(np.int64)

    (xt, yt), (xv, yv) = make(256), make(64)
    return TrainData(
        classes=["happy", "neutral", "sad", "surprise"],
        version="vpack",
        uri="memory",
        images={"train": xt, "val": xv},
        labels={"train": yt, "val": yv},
    )


def cfg(*overrides):
    return load_config(overrides=[*BASE, *overrides])


def assert_same_history(packed, separate, *, loss_rel: float, acc_abs: float | None, val_loss_rel: float | None = None):
    assert len(packed) == len(separate)
    for p, s in zip(packed, separate, strict=True):
        assert p["epoch"] == s["epoch"]
        assert p["train_loss"] == pytest.approx(s["train_loss"], rel=loss_rel), p["epoch"]
        assert p["val_loss"] == pytest.approx(s["val_loss"], rel=val_loss_rel or loss_rel), p["epoch"]
        if acc_abs is not None:
            assert abs(p["train_acc"] - s["train_acc"]) <= acc_abs + 1e-9
            assert abs(p["val_acc"] - s["val_acc"]) <= acc_abs + 1e-9
        assert p["lr"] == s["lr"] and p["l2_penalty"] == pytest.approx(s["l2_penalty"], rel=max(loss_rel, 1e-5))


def test_three_packed_trials_give_the_metrics_of_three_separate_runs(data):
    configs = [cfg(*NO_BN, *t, "epochs=3") for t in (A, B, C)]
    separate = [train(c, data, progress=False) for c in configs]
    reported: list[list[dict]] = [[], [], []]
    packed = train_packed(configs, data, [lambda m, _c, i=i: reported[i].append(m) for i in range(3)])
    for p, s, r, c in zip(packed, separate, reported, configs, strict=True):
        assert (p.status, p.best_epoch) == (s.status, s.best_epoch) == ("completed", s.best_epoch)
        assert_same_history(p.history, s.history, loss_rel=PACKED_REL, acc_abs=ONE_IMAGE)
        assert [m["epoch"] for m in r] == [1, 2, 3] and r[-1]["status"] == "completed"
        assert p.model is not None and s.model is not None
        for (name, w), w_sep in zip(p.model.state_dict().items(), s.model.state_dict().values(), strict=True):
            if c.optimizer == "sgd":
                torch.testing.assert_close(w, w_sep, rtol=1e-3, atol=1e-5, msg=name)
            elif w_sep.float().norm() > 0:
                rel = ((w.float() - w_sep.float()).norm() / w_sep.float().norm()).item()
                assert rel <= 0.05, f"{c.optimizer} trial, {name}: relative difference {rel:.2e}"


def test_packed_batchnorm_trials_agree_with_separate_runs_within_rounding(data):
    configs = [cfg(*t, "epochs=2") for t in (["lr=1e-3", "seed=0"], ["lr=1e-3", "seed=5", "label_smoothing=0.1"])]
    separate = [train(c, data, progress=False) for c in configs]
    packed = train_packed(configs, data)
    for p, s in zip(packed, separate, strict=True):
        assert_same_history(p.history, s.history, loss_rel=3e-2, val_loss_rel=5e-2, acc_abs=None)


def test_a_trial_leaving_and_one_joining_do_not_disturb_the_others(data, tmp_path):
    """B leaves after epoch 1 and D takes its slot, initialized as its own run; A and C see nothing of it."""
    ca, cb, cc = (cfg(*NO_BN, *t, "epochs=3") for t in (A, B, C))
    cd = cfg(*NO_BN, *D, "epochs=2")
    pack = PackedTrainer(data, capacity=3)
    slots = {name: pack.add(c) for name, c in (("a", ca), ("b", cb), ("c", cc))}
    assert pack.step_epoch() == {}
    left = pack.remove(slots["b"])
    assert (left.status, len(left.history), left.message) == ("stopped", 1, "left the pack after epoch 1")
    assert pack.free_slots == [slots["b"]]
    slot_d = pack.add(cd, run_dir=tmp_path / "d")
    assert slot_d == slots["b"]
    ended = {}
    while pack.trials:
        ended.update({slot: res for slot, res in pack.step_epoch().items()})
    for name, c, result in (("a", ca, ended[slots["a"]]), ("c", cc, ended[slots["c"]]), ("d", cd, ended[slot_d])):
        separate = train(c, data, progress=False)
        assert result.status == "completed", name
        assert_same_history(result.history, separate.history, loss_rel=ALONE_REL, acc_abs=ONE_IMAGE)
    b_alone = train(cb.replace(epochs=1), data, progress=False)
    assert_same_history(left.history, b_alone.history, loss_rel=ALONE_REL, acc_abs=ONE_IMAGE)

    # D's files hold D alone (its slot, not the pack's stacked tensors), in the format train() resumes from.
    ckpt = load_checkpoint(tmp_path / "d")
    d_model = ended[slot_d].model
    assert d_model is not None and ckpt["epoch"] == 2
    for name, w in d_model.state_dict().items():
        assert torch.equal(ckpt["model"][name], w), name
        assert ckpt["model"][name].untyped_storage().nbytes() == w.numel() * w.element_size()
    resumed = train(cd, data, resume=tmp_path / "d", progress=False)
    assert resumed.history == ended[slot_d].history


def test_a_trial_whose_report_raises_leaves_and_the_others_go_on(data):
    class Pruned(Exception):
        pass

    def prune(metrics, _ckpt):
        if metrics["epoch"] == 1:
            raise Pruned("pruned at epoch 1")

    configs = [cfg(*NO_BN, *A, "epochs=2"), cfg(*NO_BN, *C, "epochs=2")]
    pack = PackedTrainer(data, capacity=2)
    pruned, kept = pack.add(configs[0], prune), pack.add(configs[1])
    first = pack.step_epoch()
    assert list(first) == [pruned] and first[pruned].status == "stopped"
    assert first[pruned].message == "report raised Pruned: pruned at epoch 1"
    last = pack.step_epoch()
    assert last[kept].status == "completed"
    assert_same_history(
        last[kept].history, train(configs[1], data, progress=False).history, loss_rel=ALONE_REL, acc_abs=ONE_IMAGE
    )


def test_trials_that_report_without_a_run_folder_leave_no_checkpoint_folder(data, tmp_path, monkeypatch):
    """``report`` without ``run_dir`` gets its checkpoints in a temp folder of the run's own: gone once the trial
    has ended, whether it completed, was pruned by its report or was removed (as ``train()`` leaves nothing)."""
    import tempfile

    node_tmp = tmp_path / "tmp"
    node_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(node_tmp))
    seen: dict[str, set[str]] = {"completed": set(), "pruned": set(), "removed": set(), "alone": set()}

    def keep(name: str, stop_at: int | None = None):
        def report(metrics, checkpoint_dir):
            assert (Path(checkpoint_dir) / "checkpoint.pt").is_file()
            seen[name].add(checkpoint_dir)
            if metrics["epoch"] == stop_at:
                raise RuntimeError("pruned")

        return report

    configs = [cfg(*NO_BN, *t, "epochs=2") for t in (A, B, C)]
    pack = PackedTrainer(data, capacity=3)
    done = pack.add(configs[0], keep("completed"))
    pruned = pack.add(configs[1], keep("pruned", stop_at=1))
    removed = pack.add(configs[2], keep("removed"))
    assert list(pack.step_epoch()) == [pruned]
    pack.remove(removed)
    assert list(pack.step_epoch()) == [done]
    train(configs[0], data, report=keep("alone"), progress=False)
    assert all(len(folders) == 1 for folders in seen.values()), seen  # one folder per run, reused every epoch
    assert sorted(p.name for p in node_tmp.iterdir() if not p.name.startswith("torchinductor_")) == []  # torch's cache


def _state_layouts_match(optimizer) -> list[str]:
    """The optimizer state tensors whose strides differ from their parameter's (fused CUDA steps refuse them)."""
    return [
        f"{tuple(p.shape)} {key}: {tuple(v.stride())} vs {tuple(p.stride())}"
        for group in optimizer.param_groups
        for p in group["params"]
        for key, v in optimizer.state.get(p, {}).items()
        if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride()
    ]


def test_a_resume_between_packed_and_separate_runs_gives_the_moments_their_parameters_layout(data, tmp_path):
    """train()'s parameters are channels_last, a packed trial's are contiguous slices of the pack: a checkpoint of
    one resumed by the other had Adam moments in the other layout, which CUDA's fused Adam refuses."""
    config = cfg("epochs=2", "optimizer=adam", "seed=4")

    def stop_after_1(_m, _ckpt):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a separate run's checkpoint after epoch 1, resumed in a pack
        train(config, data, run_dir=tmp_path / "alone", report=stop_after_1, progress=False)
    pack = PackedTrainer(data, capacity=2)
    slot = pack.add(config, resume=tmp_path / "alone")
    assert pack.trials[slot].state.optimizer.state and _state_layouts_match(pack.trials[slot].state.optimizer) == []

    pack = PackedTrainer(data, capacity=2)  # a packed trial's checkpoint after epoch 1, resumed alone
    pack.add(config, run_dir=tmp_path / "packed", report=lambda *_: None)
    pack.step_epoch()
    run, state = trainer_module._setup(config, data)
    trainer_module._resume(run, state, tmp_path / "packed")
    assert state.optimizer.state and _state_layouts_match(state.optimizer) == []


def test_what_a_pack_refuses(data):
    pack = PackedTrainer(data, capacity=1)
    pack.add(cfg("epochs=1"))
    with pytest.raises(FerError, match="all 1 slots are taken; remove a trial first"):
        pack.add(cfg("epochs=1"))
    pack = PackedTrainer(data, capacity=2)
    pack.add(cfg("epochs=1"))
    with pytest.raises(FerError, match=r"this trial has batch_size=16 \(the pack's: 32\)"):
        pack.add(cfg("epochs=1", "batch_size=16"))
    with pytest.raises(FerError, match=r"this trial has compile=True \(the pack's: False\)"):
        pack.add(cfg("epochs=1", "compile=true"))
    with pytest.raises(FerError, match="slot 1 holds no trial"):
        pack.remove(1)
    with pytest.raises(FerError, match="capacity must be an integer >= 1; got 0"):
        PackedTrainer(data, capacity=0)


def test_a_trial_joins_from_its_checkpoint_and_continues_as_train_would(data, tmp_path):
    """``add(resume=...)``: a Tune trial restored into a pack (``--resume``, a retried trial) goes on from its
    checkpoint exactly as ``train(resume=...)`` does, beside a trial that starts fresh."""

    class Interrupted(Exception):
        pass

    def stop_after_2(metrics, _ckpt):
        if metrics["epoch"] == 2:
            raise Interrupted

    cb, ca = cfg(*NO_BN, *B, "epochs=3"), cfg(*NO_BN, *A, "epochs=2")
    with pytest.raises(Interrupted):
        train(cb, data, report=stop_after_2, run_dir=tmp_path / "b", progress=False)
    pack = PackedTrainer(data, capacity=2)
    resumed = pack.add(cb, resume=tmp_path / "b" / "checkpoint")
    fresh = pack.add(ca)
    ended = pack.run()
    assert [h["epoch"] for h in ended[resumed].history] == [1, 2, 3]
    assert_same_history(
        ended[resumed].history, train(cb, data, progress=False).history, loss_rel=ALONE_REL, acc_abs=ONE_IMAGE
    )
    assert_same_history(
        ended[fresh].history, train(ca, data, progress=False).history, loss_rel=ALONE_REL, acc_abs=ONE_IMAGE
    )


def test_an_emptied_pack_takes_another_architecture(data):
    """Once its last trial has left, a pack (a Tune pack actor) may train a group with another batch size or
    model; until then it refuses one."""
    pack = PackedTrainer(data, capacity=2)
    slot = pack.add(cfg(*NO_BN, "epochs=1"))
    with pytest.raises(FerError, match="batch_size=16"):
        pack.add(cfg(*NO_BN, "epochs=1", "batch_size=16"))
    pack.remove(slot)
    other = cfg("epochs=2", "batch_size=16", "model=fer_cnn_small", "dropout_scale=0.5")
    slot = pack.add(other)
    result = pack.run()[slot]
    new = PackedTrainer(data, capacity=2)  # the same trial in a new pack of the same size: the same, to the bit
    fresh_slot = new.add(other)
    fresh = new.run()[fresh_slot]
    assert result.status == fresh.status == "completed"
    timing = ("images_per_s", "epoch_time_s")
    assert [{k: v for k, v in h.items() if k not in timing} for h in result.history] == [
        {k: v for k, v in h.items() if k not in timing} for h in fresh.history
    ]


class _CountOps(TorchDispatchMode):
    """Counts the tensor operations dispatched while active (what a GPU would launch, views included)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(run, data) -> float:
    """Operations of one training step: an epoch over 128 images minus one over 64 (batch 32: 2 steps more)."""
    counts = []
    for n in (64, 128):
        part = TrainData(
            classes=data.classes,
            version=data.version,
            uri=data.uri,
            images={"train": data.images["train"][:n], "val": data.images["val"]},
            labels={"train": data.labels["train"][:n], "val": data.labels["val"]},
        )
        with _CountOps() as ops:
            run(part)
        counts.append(ops.n)
    return (counts[1] - counts[0]) / 2


def test_a_packed_step_shares_its_host_work_between_trials(data, monkeypatch):
    """A launch-bound GPU gains from a pack only what the pack saves in dispatched operations per trial. With
    8 trials (different losses, augmentations, dropout, L2 and optimizers; fused, as on CUDA) a packed step
    dispatches per trial under half of what one train() step does (measured: 65 of 177 for this tiny net;
    131 before the batches, losses, L2, gradients and dropout masks were shared). B++ and resnet18, with
    more layers to share: benchmarks/packed_host_ops.py."""
    build = trainer_module._build_optimizer  # fused, as the trainer builds it on CUDA (CPU: a loop per tensor)
    monkeypatch.setattr(trainer_module, "_build_optimizer", lambda *a, **kw: build(*a, **{**kw, "fused": True}))
    configs = [cfg(*NO_BN, *t, f"seed={i}", "epochs=1") for i, t in enumerate([A, B, C, D] * 2)]
    alone = _ops_per_step(lambda d: train(configs[0], d, progress=False), data)
    packed = _ops_per_step(lambda d: train_packed(configs, d), data) / len(configs)
    assert packed < alone / 2, f"{packed:.0f} operations per trial and step packed, {alone:.0f} alone"


def _join_and_leave(data, *extra) -> dict[str, list[dict]]:
    """Trials A, B, C packed (``extra`` settings for all) for 2 epochs, C leaving after the first and D taking
    its slot; each trial's history by name."""
    pack = PackedTrainer(data, capacity=3)
    names = {pack.add(cfg(*NO_BN, *t, "epochs=2", *extra)): name for name, t in zip("ABC", (A, B, C), strict=True)}
    pack.step_epoch()
    results = {"C": pack.remove(2)}
    names[pack.add(cfg(*NO_BN, *D, "epochs=1", *extra))] = "D"
    ended = pack.step_epoch()
    results.update({names[slot]: r for slot, r in ended.items()})
    assert set(results) == set("ABCD") and not pack.trials
    return {name: r.history for name, r in results.items()}


@pytest.mark.slow
def test_compiled_packed_trials_train_as_the_eager_pack_does(data):
    """``compile=true``: the batched forward and backward go through torch.compile (inductor on CPU); the
    dropout masks are inputs drawn as in eager mode, so only the kernels' rounding differs, across a trial
    leaving and one joining (same shapes, no recompilation of the step). Tolerances: those of the eager pack
    against ``train()``."""
    from torch._dynamo.utils import counters

    eager = _join_and_leave(data)
    counters.clear()
    compiled = _join_and_leave(data, "compile=true")
    # one graph for the whole pack's life: no graph break, no recompilation when D joined
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    for name in "ABCD":
        assert_same_history(compiled[name], eager[name], loss_rel=PACKED_REL, acc_abs=ONE_IMAGE)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_packed_trials_on_cuda_graphs_learn_like_the_eager_pack(data):
    """CUDA graphs replay the compiled step with the stacked tensors as static inputs; bf16: loose tolerance."""
    settings = ("device=cuda", "precision=auto")
    eager = _join_and_leave(data, *settings)
    compiled = _join_and_leave(data, *settings, "compile=true")
    for name in "ABCD":
        assert compiled[name][-1]["train_loss"] == pytest.approx(eager[name][-1]["train_loss"], rel=0.1), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_trials_on_cuda_learn_like_separate_ones(data):
    """bf16 and CUDA's own dropout kernel: the same learning, not the same rounding (loose tolerance)."""
    configs = [cfg(*t, "epochs=3", "device=cuda", "precision=auto") for t in (A, D)]
    packed = train_packed(configs, data)
    separate = [train(c, data, progress=False) for c in configs]
    for p, s in zip(packed, separate, strict=True):
        assert p.status == "completed"
        assert p.history[-1]["train_loss"] == pytest.approx(s.history[-1]["train_loss"], rel=0.2)
