"""The team's index: every experiment under one root on one page (``fer dashboard index|serve ROOT``).

A root is a folder (local, ``file://``, ``s3://``, ...) whose subfolders are experiments; a subfolder
is one when it holds a sweep's record or Tune's state (``sweep.json``, ``trials.parquet``,
``tuner.pkl``, ``experiment_state-*.json``). Each experiment is read cheaply: one listing of its
folder, the ``result.json`` file info of its trial folders, ``sweep.json`` and the few columns of
``trials.parquet`` the row needs (never ``epochs.parquet``); Tune's ``result.json`` files are read only
for an experiment whose tables are missing or older than its trials (a running or interrupted
sweep). ``confirm.parquet`` adds the confirmed best when ``fer confirm`` has run.

The state of an experiment, from its files (``experiment_state``):

- **finished**: ``sweep.json`` has ``finished`` set and ``trials.parquet`` exists, and no trial's
  ``result.json`` is newer than the tables (a resumed or extended sweep's tables are older while it runs);
- **running**: otherwise, when its newest activity - a trial's ``result.json``, Tune's
  ``experiment_state-*.json`` snapshot or ``tuner.pkl``, or the launch's ``sweep.json`` - was written
  within ``RUNNING_WINDOW_S`` (a sweep writes a result every epoch and Tune snapshots its state often);
- **interrupted**: otherwise (the driver was killed or the machine went away; ``--resume`` continues it).

An experiment whose files cannot be read (a damaged ``sweep.json``, a truncated table) is a row that
says why, never a failure of the page.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

import pyarrow.fs as pafs

from experiment_store import (
    CONFIRM_TABLE,
    DECISIONS,
    DECISIONS_DIR,
    EPOCHS,
    RECORD,
    TRIALS,
    Decision,
    ExperimentStore,
    Outcome,
    SweepRecord,
    read_confirm,
    read_decisions,
    summarize,
)
from fer_core.errors import FerError
from fer_core.numbers import duration, fmt, is_finite
from fer_core.storage import Location, StorageError, locate, redact

from .html import INDEX_JS, Cell, Pick, esc, note, page, section, table

__all__ = [
    "RUNNING_WINDOW_S",
    "PAGE_NAME",
    "ExperimentRow",
    "Activity",
    "experiment_state",
    "is_experiment",
    "experiment_names",
    "read_row",
    "read_rows",
    "build_index",
    "safe_name",
    "FINISHED",
    "RUNNING",
    "INTERRUPTED",
    "UNREADABLE",
]

#: An experiment without a finished record is running when something in it was written this recently.
RUNNING_WINDOW_S = 10 * 60
#: The file ``fer dashboard build EXPERIMENT`` writes by default, and the index links to.
PAGE_NAME = "dashboard.html"
FINISHED, RUNNING, INTERRUPTED, UNREADABLE = "finished", "running", "interrupted", "unreadable"
#: Columns of trials.parquet a row needs (the rest - every sampled hyperparameter - is not read).
_COLUMNS = ("trial_id", "outcome", "score", "peak", "final", "time_s")
_STATE_FILES = ("tuner.pkl",)
_WORKERS = 8


def _mtime(info: pafs.FileInfo) -> float | None:
    return info.mtime.timestamp() if info.type == pafs.FileType.File and info.mtime is not None else None


def _is_marker(name: str) -> bool:
    return name in (RECORD, TRIALS, "tuner.pkl") or (name.startswith("experiment_state-") and name.endswith(".json"))


def safe_name(name: str) -> bool:
    """Whether ``name`` can be an experiment folder directly under a root (no separators, no ``.``/``..``)."""
    return (
        bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and len(name) <= 255
    )


def is_experiment(loc: Location) -> bool:
    """Whether the folder at ``loc`` is an experiment (it holds a record, a table or Tune's state)."""
    try:
        return any(_is_marker(i.base_name) for i in loc.list() if i.type == pafs.FileType.File)
    except StorageError:
        return False


def experiment_names(root: Location) -> tuple[list[str], list[str]]:
    """(experiment folder names, other folder names) directly under ``root``, sorted."""
    folders = sorted(i.base_name for i in root.list() if i.type == pafs.FileType.Directory and safe_name(i.base_name))
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        flags = list(pool.map(lambda n: is_experiment(root.child(n)), folders))
    pairs = list(zip(folders, flags, strict=True))
    return [n for n, f in pairs if f], [n for n, f in pairs if not f]


@dataclass
class Activity:
    """What the files of one experiment say about its state (file modification times, Unix seconds)."""

    has_record: bool = False
    record_finished: bool = False
    trials_table: float | None = None  # trials.parquet's mtime
    epochs_table: float | None = None
    newest_result: float | None = None  # the newest trial result.json
    trial_folders: int = 0
    tune_state: float | None = None  # the newest experiment_state-*.json / tuner.pkl
    record_written: float | None = None  # sweep.json's mtime
    page: float | None = None  # dashboard.html's mtime
    confirmed: bool = False
    decided: bool = False  # decisions/ or decisions.json (fer export-best's record)

    @property
    def tables_current(self) -> bool:
        """Tables exist and no trial reported after they were written (as ``ExperimentStore.tables_current``)."""
        if self.trials_table is None or self.epochs_table is None:
            return False
        return self.newest_result is None or self.newest_result <= self.trials_table + 1.0

    @property
    def last_activity(self) -> float | None:
        times = [self.newest_result, self.tune_state]
        if not self.record_finished:
            times.append(self.record_written)  # the launch's record: written when the sweep starts
        return max((t for t in times if t is not None), default=None)

    @property
    def newest_input(self) -> float:
        """The newest file an experiment's page is built from (a page older than this is stale)."""
        return max(
            (
                t
                for t in (self.record_written, self.trials_table, self.epochs_table, self.newest_result)
                if t is not None
            ),
            default=0.0,
        )


def experiment_state(act: Activity, now: float | None = None, window_s: float = RUNNING_WINDOW_S) -> str:
    """finished, running or interrupted (see the module doc)."""
    if act.record_finished and act.trials_table is not None and act.tables_current:
        return FINISHED
    now = time.time() if now is None else now
    last = act.last_activity
    if last is not None and now - last <= window_s:
        return RUNNING
    return INTERRUPTED


def _scan(store: ExperimentStore) -> Activity:
    """One listing of the experiment folder and one batch of file infos for its trials' result.json."""
    act = Activity()
    folders = []
    for info in store.location.list():
        name = info.base_name
        if info.type == pafs.FileType.Directory:
            if name == DECISIONS_DIR:
                act.decided = True
            else:
                folders.append(name)
            continue
        t = _mtime(info)
        if name == RECORD:
            act.has_record, act.record_written = True, t
        elif name == TRIALS:
            act.trials_table = t
        elif name == EPOCHS:
            act.epochs_table = t
        elif name == CONFIRM_TABLE:
            act.confirmed = True
        elif name == DECISIONS:
            act.decided = True
        elif name == PAGE_NAME:
            act.page = t
        elif name in _STATE_FILES or (name.startswith("experiment_state-") and name.endswith(".json")):
            act.tune_state = max(act.tune_state or 0.0, t or 0.0) or None
    if folders:
        loc = store.location
        try:
            infos = loc.fs.get_file_info([f"{loc.path.rstrip('/')}/{f}/result.json" for f in folders])
        except OSError as exc:
            raise StorageError(f"{loc}: cannot read its trial folders ({exc})") from None
        times = [_mtime(i) for i in infos if i.type == pafs.FileType.File]
        act.trial_folders = len(times)
        act.newest_result = max((t for t in times if t is not None), default=None)
    return act


@dataclass
class ExperimentRow:
    """One experiment as the index shows it."""

    folder: str  # the folder's name under the root (links and compare use it)
    where: str  # its location as shown: a local path or its (redacted) URI
    name: str = ""
    state: str = UNREADABLE
    error: str = ""
    started: str | None = None
    finished: str | None = None
    last_activity: float | None = None
    data_uri: str | None = None
    data_version: str | None = None
    space_file: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    trials: int = 0
    best: dict | None = None  # trial_id, score, final, peak
    confirmed: dict | None = None  # summarize()'s first entry
    decision: Decision | None = None  # the latest decision on record (fer export-best)
    decisions: int = 0
    compute_s: float = 0.0
    user: str | None = None
    command: str | None = None
    page: str | None = None  # dashboard.html: None (not built), "current" or "stale" (older than the files)
    read_s: float = 0.0


def _trial_rows(store: ExperimentStore, act: Activity, record: SweepRecord | None) -> list[dict]:
    """The trials: trials.parquet's needed columns when current, else Tune's trial folders (a live sweep)."""
    if act.tables_current:
        import pyarrow as pa
        import pyarrow.parquet as pq

        loc = store.file(TRIALS)
        try:
            pf = pq.ParquetFile(pa.BufferReader(loc.read_bytes()))
            columns = [c for c in _COLUMNS if c in pf.schema_arrow.names]
            return pf.read(columns=columns).to_pylist()
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise FerError(f"{loc}: not a readable Parquet table ({exc})") from None
    if act.trial_folders:
        from sweeps.live import read_tune_trials

        found = read_tune_trials(store, max_epochs=record.max_epochs if record is not None else None)
        return found[0] if found else []
    return []


def read_row(
    root: Location, folder: str, *, now: float | None = None, window_s: float = RUNNING_WINDOW_S
) -> ExperimentRow:
    """The index row of ``root/folder``; an experiment that cannot be read is a row with its error."""
    t0 = time.perf_counter()
    store = ExperimentStore(root.child(folder))
    row = ExperimentRow(folder=folder, where=store.location.path if store.local else store.uri, name=folder)
    try:
        act = _scan(store)
        row.last_activity = act.last_activity
        record = store.read_record() if act.has_record else None
        act.record_finished = bool(record is not None and record.finished)
        row.state = experiment_state(act, now, window_s)
        if record is not None:
            row.name = record.name or folder
            row.started, row.finished = record.started, record.finished if row.state == FINISHED else None
            row.data_uri, row.data_version = redact(record.data.uri) if record.data.uri else None, record.data.version
            row.space_file, row.user, row.command = record.space_file, record.user, record.command
        trials = _trial_rows(store, act, record)
        row.trials = len(trials)
        row.outcomes = dict(Counter(str(t.get("outcome") or Outcome.RUNNING.value) for t in trials))
        scored = [t for t in trials if is_finite(t.get("score"))]
        if scored:
            best = max(scored, key=lambda t: t["score"])
            row.best = {k: best.get(k) for k in ("trial_id", "score", "final", "peak")}
        row.compute_s = float(sum(t["time_s"] for t in trials if is_finite(t.get("time_s"))))
        if act.confirmed:
            ranking = summarize(read_confirm(store, required=False) or [])
            row.confirmed = ranking[0] if ranking else None
        if act.decided:
            decisions = read_decisions(store)
            row.decisions, row.decision = len(decisions), (decisions[-1] if decisions else None)
        if act.page is not None:
            row.page = "current" if act.page >= act.newest_input else "stale"
    except FerError as exc:
        row.state, row.error = UNREADABLE, str(exc)
    except Exception as exc:  # noqa: BLE001 - one damaged experiment must not take the index down
        row.state, row.error = UNREADABLE, f"{type(exc).__name__}: {exc}"
    row.read_s = time.perf_counter() - t0
    return row


def read_rows(
    root: Location, names: list[str] | None = None, *, window_s: float = RUNNING_WINDOW_S
) -> list[ExperimentRow]:
    """The rows of every experiment under ``root`` (read a few at a time: an object store answers slowly)."""
    names = experiment_names(root)[0] if names is None else names
    now = time.time()
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        return list(pool.map(lambda n: read_row(root, n, now=now, window_s=window_s), names))


# -- the page -------------------------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


def _outcomes_text(row: ExperimentRow) -> str:
    order = [o.value for o in Outcome]
    parts = sorted(row.outcomes.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    return f"{row.trials}: " + ", ".join(f"{n} {o}" for o, n in parts) if parts else "0"


def _num(v) -> Cell:
    return Cell(fmt(v, nonfinite="-"), v if is_finite(v) else None)


def _confirmed_cell(row: ExperimentRow) -> Cell:
    c = row.confirmed
    if not c:
        return Cell("-", None)
    spread = f" ± {c['std']:.4f}" if is_finite(c.get("std")) else ""
    return Cell(f"{c['mean']:.4f}{spread} ({c['trial_id']}, {c['n']} seeds)", c["mean"])


def _decision_cell(row: ExperimentRow) -> Cell:
    d = row.decision
    if d is None:
        return Cell("-", "")
    more = f" (+{row.decisions - 1} earlier)" if row.decisions > 1 else ""
    return Cell(
        f"{d.trial_id} by {d.by} ({fmt(d.value, nonfinite='-')}), {d.time[:10]}, {d.user or '?'}{more}",
        d.time,
        title=f"{d.action} -> {d.file} at {d.time}",
    )


def _state_cell(row: ExperimentRow) -> Cell:
    last = _iso(row.last_activity)
    title = f"last written {last}" if last else ""
    return Cell(row.state, row.state, cls=f"state state-{row.state}", title=title)


def _data_key(row: ExperimentRow) -> str:
    return row.data_uri or ""


def _link(row: ExperimentRow, link_base: str | None, serve: bool) -> str:
    if serve:
        return f"e/{quote(row.folder, safe='')}/"
    if link_base is None or row.page is None:
        return ""
    return f"{link_base}{quote(row.folder, safe='')}/{PAGE_NAME}"


HEADERS = [
    "pick",
    "experiment",
    "state",
    "started",
    "finished",
    "data set",
    "version",
    "search space",
    "trials by outcome",
    "best score",
    "its final",
    "its peak",
    "confirmed best",
    "promoted",
    "compute",
    "user",
    "command",
]
DATA_COLUMN = HEADERS.index("data set")


def _cells(row: ExperimentRow, link_base: str | None, serve: bool) -> list:
    href = _link(row, link_base, serve)
    name = row.folder if row.name == row.folder else f"{row.folder} ({row.name})"
    title = row.where
    if not serve and row.page is None:
        title = f"no page yet: fer dashboard build {row.where}"
    elif not serve and row.page == "stale":
        title = f"the page is older than the experiment's files: fer dashboard build {row.where}"
    pick = Pick(row.folder, where=row.where)
    if row.state == UNREADABLE:
        return [
            pick,
            Cell(name, row.folder, title=row.where),
            _state_cell(row),
            Cell("", None),
            Cell("", None),
            Cell("", ""),
            "",
            "",
            Cell(f"cannot be read: {row.error}", None, cls="reason error"),
            *[Cell("", None)] * 8,
        ]
    best = row.best or {}
    return [
        pick,
        Cell(name, row.folder, href=href, title=title),
        _state_cell(row),
        Cell(row.started, row.started),
        Cell(row.finished, row.finished),
        Cell(row.data_uri, _data_key(row)),
        row.data_version,
        row.space_file,
        Cell(_outcomes_text(row), row.trials),
        _num(best.get("score")),
        _num(best.get("final")),
        _num(best.get("peak")),
        _confirmed_cell(row),
        _decision_cell(row),
        Cell(duration(row.compute_s), row.compute_s),
        row.user,
        Cell(row.command, row.command or "", cls="reason"),
    ]


def _filter(rows: list[ExperimentRow]) -> str:
    counts = Counter(_data_key(r) for r in rows if r.state != UNREADABLE)
    options = ['<option value="">every data set</option>'] + [
        f'<option value="{esc(k)}">{esc(k or "(not known)")} ({n})</option>' for k, n in sorted(counts.items())
    ]
    return (
        f'<p><label>data set <select id="dataset-filter" data-col="{DATA_COLUMN}">{"".join(options)}'
        '</select></label> <span id="shown-count"></span></p>'
    )


def _compare_box(serve: bool) -> str:
    mode = "serve" if serve else "static"
    action = (
        '<a class="compare" href="#" hidden>open the comparison</a>' if serve else "<pre hidden><code></code></pre>"
    )
    return f'<div id="compare-box" data-mode="{mode}"><p class="hint"></p>{action}</div>'


def build_index(
    root: Location,
    rows: list[ExperimentRow],
    *,
    serve: bool = False,
    link_base: str | None = None,
    skipped: Sequence[str] = (),
    elapsed_s: float | None = None,
    window_s: float = RUNNING_WINDOW_S,
) -> str:
    """The index page of ``rows`` (``read_rows``). ``serve``: rows link to ``e/<name>/`` and two picked rows
    to ``compare?a=..&b=..``; static: rows link to ``<link_base><name>/dashboard.html`` where that page was
    built (``link_base`` None: no links), and two picked rows show the ``fer dashboard compare`` command."""
    where = root.path if root.local else redact(root.uri)
    states = Counter(r.state for r in rows)
    summary = ", ".join(f"{states[s]} {s}" for s in (RUNNING, FINISHED, INTERRUPTED, UNREADABLE) if states[s])
    if serve:
        how = (
            "Each experiment's name opens its live page; pick two rows to compare them. New experiments "
            "appear when this page is reloaded."
        )
    else:
        how = (
            f"An experiment's name links to its page ({PAGE_NAME} in its folder) once it is built: "
            f"'fer dashboard build EXPERIMENT', or 'fer dashboard index ROOT --build-pages' for every "
            "experiment whose page is missing or older than its files. Pick two rows for the command that "
            "compares them; 'fer dashboard serve ROOT' serves this index with live pages."
        )
        if link_base is None:
            how += " (No links here: this page is not written under the root, so it cannot point into it.)"
    rules = (
        f"State, from the files: finished = sweep.json records the end and the tables are current; running = "
        f"otherwise, with a trial result or Tune snapshot written in the last {window_s / 60:g} minutes; "
        "interrupted = otherwise ('--resume --name NAME' continues it)."
    )
    built = f" Read in {elapsed_s:.2f} s." if elapsed_s is not None else ""
    other = note(f"Folders that are not experiments: {', '.join(skipped)}.") if skipped else ""
    body = "".join(
        [
            f"<h1>Experiments in <code>{esc(where)}</code></h1>",
            f"<p>{len(rows)} experiments: {esc(summary or 'none')}; "
            f"page written {esc(_iso(time.time()))}.{esc(built)}</p>",
            note(how),
            note(rules),
            other,
            section(
                "Experiments (click a header to sort)",
                _filter(rows)
                + table(
                    HEADERS,
                    [_cells(r, link_base, serve) for r in rows],
                    sortable=True,
                    table_id="experiments",
                    tall=len(rows) > 25,
                )
                + _compare_box(serve),
                anchor="index",
            ),
        ]
    )
    return page(f"Experiments in {where}", body, plotly=False, script=INDEX_JS)


def link_base_for(root: Location, out: Location) -> str | None:
    """The relative link from the folder of ``out`` (the index page) to ``root``, ending in ``/``; None when
    none exists (another file system, bucket or machine)."""
    if root.local and out.local:
        rel = os.path.relpath(root.path, os.path.dirname(os.path.abspath(out.path)))
    elif not root.local and not out.local and type(root.fs) is type(out.fs):
        r, o = root.uri.split("?", 1)[0].rstrip("/"), out.uri.split("?", 1)[0]
        if "://" not in r or r.split("://", 1)[0] != o.split("://", 1)[0]:
            return None
        rel = posixpath.relpath(r.split("://", 1)[1], posixpath.dirname(o.split("://", 1)[1]))
        if rel.startswith(".."):  # the page would have to climb out of its own prefix: keep it simple
            return None
    else:
        return None
    rel = rel.replace(os.sep, "/")
    return "" if rel == "." else "/".join(quote(p) for p in rel.split("/")) + "/"


def open_root(uri: str) -> Location:
    """The root as a location; an error when it is not a folder."""
    root = locate(uri)
    if not root.is_dir():
        raise FerError(f"{redact(uri)}: no such folder; pass the folder (or storage URI) that holds the experiments")
    return root
