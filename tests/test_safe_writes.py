"""What may be written, replaced or deleted (issue: safety): names, --overwrite, crash-safe folder swaps,
writability checked before the work, files that are not ours.

Each test here failed on the code before the fix: ``--name ../victim --overwrite`` deleted a folder
beside the storage, a typo in ``--data`` deleted the previous experiment, a kill between the two
renames of a folder replace left ``--out`` missing, ``--overwrite`` replaced any folder, and
``--out`` files of other programs were overwritten.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fer_core import atomic
from fer_core.errors import FerError
from fer_core.safepaths import check_file_replaceable, check_name, check_replaceable, check_writable, child
from subprocs import clean_env, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def _fer(*args, cwd=ROOT, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fer_cli", *map(str, args)],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _sweep(*args, timeout=300) -> subprocess.CompletedProcess:
    return run_sweep(*args, timeout=timeout, check=False)


def _one_line_error(proc: subprocess.CompletedProcess, prog: str = "fer") -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../victim", ".", "..", "a/b", "", "-rf", ".hidden", "x" * 129, "a b", "a\x00b", "/abs", "..\\x"]
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(FerError, match="--name"):
        check_name(name)


@pytest.mark.parametrize("name", ["reg1", "a.b_c-d", "regularization-20261130-120000", "X" * 128])
def test_safe_names_pass(name):
    assert check_name(name) == name


def test_a_name_that_is_a_symlink_out_of_the_storage_is_refused(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (storage / "exp").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FerError, match="outside"):
        child(str(storage), "exp")
    assert child(str(storage), "fine") == f"{storage}/fine"
    assert child("s3://bucket/sweeps/", "fine") == "s3://bucket/sweeps/fine"


# ----------------------------------------------------------------------------------------------
# The sweep's --overwrite (fast: every case fails before Ray starts, except the GPU check)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def storage_with_victims(tmp_path):
    storage = tmp_path / "storage"
    exp = storage / "reg1"
    exp.mkdir(parents=True)
    (exp / "sweep.json").write_text('{"name": "reg1"}\n')
    (exp / "trials.parquet").write_bytes(b"previous results")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    return storage, exp, victim


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("name", ["../victim", "."])
def test_sweep_overwrite_cannot_reach_outside_its_storage(storage_with_victims, ingested, name):
    storage, exp, victim = storage_with_victims
    before = _tree(storage.parent)
    line = _one_line_error(
        _sweep("--data", ingested, "--storage", storage, "--name", name, "--overwrite"), "regularization.py"
    )
    assert "--name" in line
    assert _tree(storage.parent) == before


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_overwrite_with_a_bad_data_path_keeps_the_previous_experiment(storage_with_victims):
    storage, exp, _ = storage_with_victims
    before = _tree(exp)
    line = _one_line_error(
        _sweep(
            "--data",
            storage.parent / "typo",
            "--storage",
            storage,
            "--name",
            "reg1",
            "--overwrite",
            "--wandb-mode",
            "disabled",
        ),
        "regularization.py",
    )
    assert "typo" in line
    assert _tree(exp) == before


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_overwrite_keeps_the_experiment_when_ray_refuses_the_request(storage_with_victims, ingested):
    """The last check before anything is removed: the Ray cluster (no GPUs here) cannot run the sweep."""
    storage, exp, _ = storage_with_victims
    before = _tree(exp)
    line = _one_line_error(
        _sweep(
            "--data",
            ingested,
            "--storage",
            storage,
            "--name",
            "reg1",
            "--overwrite",
            "--gpus-per-trial",
            "1",
            "--num-cpus",
            "1",
            "--wandb-mode",
            "disabled",
        ),
        "regularization.py",
    )
    assert "GPU" in line
    assert _tree(exp) == before


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_overwrite_replaces_only_an_experiment(tmp_path, ingested):
    storage = tmp_path / "storage"
    photos = storage / "holiday"
    photos.mkdir(parents=True)
    (photos / "beach.jpg").write_bytes(b"jpeg")
    line = _one_line_error(
        _sweep(
            "--data", ingested, "--storage", storage, "--name", "holiday", "--overwrite", "--wandb-mode", "disabled"
        ),
        "regularization.py",
    )
    assert "not a sweep experiment" in line
    assert (photos / "beach.jpg").read_bytes() == b"jpeg"


# ----------------------------------------------------------------------------------------------
# --out folders: what --overwrite may replace, and what never
# ----------------------------------------------------------------------------------------------


def test_overwrite_replaces_only_its_own_kind(tmp_path):
    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")
    assert check_replaceable(mine, kind="data set", markers=("manifest.json",), overwrite=True) == mine
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(FerError, match="not a data set"):
        check_replaceable(other, kind="data set", markers=("manifest.json",), overwrite=True)
    with pytest.raises(FerError, match="not empty"):
        check_replaceable(mine, kind="data set", markers=("manifest.json",), overwrite=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_replaceable(empty, kind="data set", markers=("manifest.json",), overwrite=False) == empty


def test_never_replaced_whatever_they_hold(tmp_path, monkeypatch):
    src = tmp_path / "project" / "faces"
    src.mkdir(parents=True)
    (tmp_path / "project" / "manifest.json").write_text("{}")  # even with the marker
    for target, why in (
        (tmp_path / "project", "input"),
        (src, "input"),
        (Path("/"), "root"),
        (Path.home(), "home"),
        (Path.cwd(), "current folder"),
    ):
        with pytest.raises(FerError, match=why):
            check_replaceable(target, kind="data set", markers=("manifest.json",), overwrite=True, protect=(src,))
    monkeypatch.chdir(src)
    with pytest.raises(FerError, match="current folder"):
        check_replaceable(tmp_path / "project", kind="data set", markers=("manifest.json",), overwrite=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_ingest_never_replaces_its_own_source(synth_dir, tmp_path):
    import shutil

    src = tmp_path / "raw"
    shutil.copytree(synth_dir, src)
    (src / "manifest.json").write_text("{}")
    before = _tree(src)
    line = _one_line_error(_fer("data", "ingest", src, "--out", src, "--overwrite", "--no-mislabels", "--quiet"))
    assert "input" in line
    assert _tree(src) == before


@pytest.mark.slow
@pytest.mark.e2e
def test_overwrite_never_replaces_a_folder_holding_the_commands_own_input_file(synth_dir, ingested, tmp_path):
    """The README's review loop edits ``DATA/report/mislabels.csv`` and passes it back with ``--relabels``; a
    ``--overwrite`` of DATA itself would replace the reviewed file with a fresh one (and the manifest would name a
    file that no longer holds the relabels). The same for ``fer retrain`` of a config kept in its own --out."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ingested, data)
    reviewed = data / "report" / "reviewed.csv"
    reviewed.parent.mkdir(exist_ok=True)
    reviewed.write_text("id,new_label\nhappy/x.png,drop\n")
    before = _tree(data)
    args = ("data", "ingest", synth_dir, "--out", data, "--overwrite", "--relabels", reviewed, "--no-mislabels")
    line = _one_line_error(_fer(*args, "--quiet"))
    assert "holds this command's input" in line and str(reviewed.resolve()) in line
    assert _tree(data) == before

    release = tmp_path / "release"
    release.mkdir()
    (release / "MODEL_CARD.md").write_text("# an earlier retrain")
    mine = release / "my-best.yaml"
    mine.write_text(f"data: {ingested}\nmodel: fer_cnn_tiny\nepochs: 1\n")
    line = _one_line_error(_fer("retrain", mine, "--out", release, "--overwrite", "--quiet"))
    assert "holds this command's input" in line and mine.read_text().startswith("data:")


@pytest.mark.slow
@pytest.mark.e2e
def test_ingest_overwrite_refuses_a_folder_that_is_not_a_data_set(synth_dir, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "me.jpg").write_bytes(b"jpeg")
    line = _one_line_error(_fer("data", "ingest", synth_dir, "--out", out, "--overwrite", "--no-mislabels", "--quiet"))
    assert "not a data set" in line and "manifest.json" in line
    assert (out / "me.jpg").read_bytes() == b"jpeg"


@pytest.mark.slow
@pytest.mark.e2e
def test_train_never_writes_into_a_folder_with_other_files(ingested, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "config.yaml").write_text("my own config\n")
    line = _one_line_error(
        _fer(
            "train",
            "--set",
            f"data={ingested}",
            "--set",
            "model=fer_cnn_tiny",
            "--set",
            "epochs=1",
            "--out",
            out,
            "--quiet",
        )
    )
    assert "not empty" in line
    assert (out / "config.yaml").read_text() == "my own config\n"


@pytest.mark.slow
@pytest.mark.e2e
def test_retrain_overwrite_refuses_a_folder_that_is_not_a_retrained_model(ingested, tmp_path):
    cfg = tmp_path / "best.yaml"
    cfg.write_text(f"data: {ingested}\nmodel: fer_cnn_tiny\nepochs: 1\n")
    out = tmp_path / "release"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the shipped model")
    line = _one_line_error(_fer("retrain", cfg, "--out", out, "--overwrite", "--quiet"))
    assert "not a retrained model folder" in line and "MODEL_CARD.md" in line
    assert (out / "model.onnx").read_bytes() == b"the shipped model"


@pytest.mark.slow
@pytest.mark.e2e
def test_ladder_overwrite_replaces_only_run_folders(ingested, tmp_path):
    out = tmp_path / "ladder"
    rung = out / "fer_cnn_0"
    rung.mkdir(parents=True)
    (rung / "notes.txt").write_text("mine")
    line = _one_line_error(
        _fer("ladder", "--data", ingested, "--out", out, "--models", "0", "--epochs", "1", "--overwrite", "--quiet")
    )
    assert "not a training run" in line
    assert (rung / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# --out files
# ----------------------------------------------------------------------------------------------


def test_out_files_replace_only_what_fer_wrote(tmp_path):
    from dashboards.html import is_our_page, page

    ours = tmp_path / "report.html"
    ours.write_text(page("t", "<p>x</p>"))
    assert check_file_replaceable(ours, is_ours=is_our_page, what="a dashboard page") == ours
    theirs = tmp_path / "index.html"
    theirs.write_text("<!DOCTYPE html><html><body>my homepage</body></html>")
    with pytest.raises(FerError, match="not a dashboard page"):
        check_file_replaceable(theirs, is_ours=is_our_page, what="a dashboard page")
    with pytest.raises(FerError, match="is a folder"):
        check_file_replaceable(tmp_path, is_ours=is_our_page, what="a dashboard page")


def test_export_best_does_not_overwrite_a_foreign_file(tmp_path):
    from release.export import is_export

    good = tmp_path / "best.yaml"
    good.write_text("model: x\nprovenance:\n  trial_id: abc\n")
    assert is_export(good)
    foreign = tmp_path / "train.yaml"
    foreign.write_text("model: fer_cnn_b\nlr: 0.001\n")
    assert not is_export(foreign)
    bad = tmp_path / "bad.yaml"
    bad.write_text("{{{{ not yaml")
    with pytest.raises(FerError, match="not a config exported"):
        check_file_replaceable(bad, is_ours=is_export, what="a config exported by 'fer export-best'")


# ----------------------------------------------------------------------------------------------
# Crash-safe folder replace: a kill at every step
# ----------------------------------------------------------------------------------------------

_KILLER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from fer_core import atomic
    out, step, fallback = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    if fallback:
        atomic._exchange = lambda a, b: False          # a file system without RENAME_EXCHANGE
    atomic._step = lambda name: os._exit(9) if name == step else None
    with atomic.atomic_dir(out, overwrite=True, kind="data set", markers=("manifest.json",)) as tmp:
        (tmp / "manifest.json").write_text("new")
        (tmp / "shard").write_bytes(b"N" * 1000)
    sys.exit(0)
""")


def _old_set(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "manifest.json").write_text("old")
    (out / "shard").write_bytes(b"O" * 1000)


@pytest.mark.parametrize(
    "fallback,step,expect",
    [
        (False, "built", "old"),
        (False, "swapped", "new"),
        (True, "built", "old"),
        (True, "moved-old", "old"),
        (True, "swapped", "new"),
    ],
)
def test_a_kill_at_every_step_of_a_folder_replace_loses_nothing(tmp_path, fallback, step, expect):
    out = tmp_path / "data"
    _old_set(out)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(out), step, "1" if fallback else "0"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "data"]
    assert leftovers, "the kill should have left a temp or old folder behind"
    atomic.recover(out)  # what the next command writing data/ does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert (out / "manifest.json").read_text() == expect
    assert (out / "shard").read_bytes() == (b"N" if expect == "new" else b"O") * 1000
    with atomic.atomic_dir(out, overwrite=True, kind="data set", markers=("manifest.json",)) as tmp:
        (tmp / "manifest.json").write_text("third")
    assert (out / "manifest.json").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("fallback", [False, True])
def test_a_folder_another_command_wrote_meanwhile_is_not_replaced_without_overwrite(tmp_path, monkeypatch, fallback):
    """Two commands write the same new ``--out`` without ``--overwrite`` (two ``fer data ingest`` of a team, say):
    the check before the work passes for both; the one that finishes second must not replace the first one's
    folder. It fails, saying so, and leaves nothing behind."""
    if fallback:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = tmp_path / "data"
    with pytest.raises(FerError, match="was written by another command while this one ran") as err:
        with atomic.atomic_dir(out, kind="data set", markers=("manifest.json",)) as tmp:
            (tmp / "manifest.json").write_text("second")
            _old_set(out)  # the other command finished first
    assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    assert (out / "manifest.json").read_text() == "old" and (out / "shard").read_bytes() == b"O" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    out.joinpath("manifest.json").unlink()
    out.joinpath("shard").unlink()  # an empty folder made meanwhile holds nothing to lose: it is taken
    with atomic.atomic_dir(out, kind="data set", markers=("manifest.json",)) as tmp:
        (tmp / "manifest.json").write_text("mine")
    assert (out / "manifest.json").read_text() == "mine"


def test_leftovers_of_a_running_process_or_another_host_are_left_alone(tmp_path):
    out = tmp_path / "data"
    _old_set(out)
    live = tmp_path / f".data.tmp-{atomic._HOST}-{os.getppid()}"  # our parent process is alive
    live.mkdir()
    foreign = tmp_path / ".data.tmp-otherhost-1"
    foreign.mkdir()
    atomic.recover(out)
    assert live.is_dir() and foreign.is_dir()
    os.rename(out, tmp_path / ".data.old-otherhost-1")  # another host's interrupted swap
    with pytest.raises(FerError, match="rename it back"):
        atomic.recover(out)


def test_a_killed_file_write_leaves_nothing_for_good(tmp_path):
    target = tmp_path / "metrics.json"
    stale = tmp_path / f".metrics.json.tmp-{atomic._HOST}-999999999"  # no such process
    stale.write_text("half")
    atomic.write_text(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# ----------------------------------------------------------------------------------------------
# Writability: checked before the work
# ----------------------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder no one can write in: a read-only tmpfs (as root), else a 0555 folder (as a user)."""
    where = tmp_path / "ro"
    if _mount_tmpfs(where, "ro,size=1m"):
        yield where
        subprocess.run(["umount", str(where)], capture_output=True)
    elif os.geteuid() != 0:
        where.mkdir(exist_ok=True)
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
    else:
        pytest.skip("needs a read-only location: root here, and mounting a tmpfs was refused")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount permission)."""
    where = tmp_path / "tiny"
    if not _mount_tmpfs(where, "size=256k"):
        pytest.skip("needs root and permission to mount a tmpfs, to fill a disk")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.slow
@pytest.mark.e2e
def test_writability_is_checked_before_reading_anything(synth_dir, readonly_dir):
    proc = _fer("data", "ingest", synth_dir, "--out", readonly_dir / "data", "--no-mislabels")
    line = _one_line_error(proc)
    assert "cannot write" in line and str(readonly_dir) in line
    assert "reading" not in proc.stderr and "hashing" not in proc.stderr
    with pytest.raises(FerError, match="cannot write"):
        check_writable(readonly_dir / "deeper" / "still")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_full_disk_is_one_line_and_leaves_nothing(synth_dir, tiny_disk):
    proc = _fer("data", "ingest", synth_dir, "--out", tiny_disk / "data", "--no-mislabels", "--quiet")
    line = _one_line_error(proc)
    assert os.strerror(errno.ENOSPC) in line and "free some space" in line
    assert list(tiny_disk.iterdir()) == []
