"""The mislabel review page: one self-contained HTML file a person can finish with the keyboard.

    >>> path = write_review_page("runs/default/data", max_items=500)   # -> data/report/review.html

What it shows: the top candidates of the data set's ``report/mislabels.csv`` (written by ``fer data
ingest``), each with its image enlarged (read from the data set's shards), the given label, the
suggested one and both probabilities, and its near duplicates from ``report/duplicates.csv`` beside
it: members kept in the data set as images, removed copies (whose pixels the data set does not hold)
by id, label and what the ingest did with them.

How it works: keys decide (``A`` accept the suggestion, ``K`` keep the given label, ``D`` drop,
``1``-``9`` pick a class, ``U`` undo) and move (arrows, ``J``/``N`` next, ``P`` previous); the
decisions are saved in the browser's localStorage under the data set's version, so a reload or a
second session goes on where the last one stopped; "Download relabels.csv" saves the decisions as
the ``id,new_label`` file ``fer data ingest --relabels`` reads (``fer_core.data.relabels``): a row
per image to relabel (the new class) or drop (``drop``); images kept with their given label get no row.

Safety: every string from the data set (ids, class and data set names, actions) is HTML-escaped
before it reaches markup; the data the script needs is JSON inside ``<script
type="application/json">`` with ``<``, ``>`` and ``&`` escaped; images are base64 PNG data URIs;
the page fetches nothing.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import atomic, storage
from ..errors import DataError
from ..htmltext import esc, json_for_script
from ..safepaths import is_uri
from .loader import load_split
from .manifest import read_manifest
from .readers.base import SPLITS

#: Every review page's head carries this: ``--out`` replaces an existing file only when it is one of ours.
GENERATOR = '<meta name="generator" content="fer-sweep review">'
DEFAULT_MAX = 500
DISPLAY = 192  # CSS pixels an image is shown at
DUP_SIDE = 128  # largest side of a near duplicate's inlined image (shown at 64 CSS pixels)
MISLABELS = "report/mislabels.csv"
DUPLICATES = "report/duplicates.csv"


@dataclass
class Duplicate:
    id: str
    label: str
    action: str
    image: str | None  # PNG data URI when the image is in the data set


@dataclass
class Candidate:
    rank: int
    id: str
    label: str
    suggested: str
    self_confidence: float
    suggested_confidence: float
    image: str  # PNG data URI
    duplicates: list[Duplicate] = field(default_factory=list)


def png_data_uri(image: np.ndarray, max_side: int = 2 * DISPLAY) -> str:
    """(H, W, 1|3) uint8 -> ``data:image/png;base64,...``, shrunk to at most ``max_side`` pixels a
    side (a page of 500 images of 512 x 512 would otherwise weigh hundreds of MB)."""
    arr = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    img = Image.fromarray(np.ascontiguousarray(arr))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def is_our_page(path: Path) -> bool:
    with open(path, "rb") as fh:
        return GENERATOR.encode() in fh.read(4096)


# ----------------------------------------------------------------------------------------------
# Reading the data set


def _read_report_csv(root: storage.Location, rel: str, required: tuple[str, ...]) -> list[tuple[int, dict]] | None:
    """(line, row) pairs of the report CSV ``rel`` (None when the file does not exist)."""
    loc = root.child(rel)
    if not loc.is_file():
        return None
    try:
        text = loc.read_text()
    except storage.StorageError as exc:
        raise DataError(str(exc)) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{loc}: lacks column(s) {', '.join(missing)}; re-run 'fer data ingest' to rewrite the report")
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DataError(
            f"{loc} line {reader.line_num}: {exc}; re-run 'fer data ingest' to rewrite the report"
        ) from None


def read_candidates(data: str, max_items: int = DEFAULT_MAX) -> tuple[dict, list[Candidate]]:
    """(the manifest, the first ``max_items`` candidates of the data set at ``data``, with images and duplicates)."""
    if max_items < 1:
        raise DataError(f"--max: expected at least 1, got {max_items}")
    manifest = read_manifest(data)
    root = storage.locate(data)
    rows = _read_report_csv(
        root, MISLABELS, ("rank", "id", "label", "suggested", "self_confidence", "suggested_confidence")
    )
    if rows is None:
        searched = manifest.data.get("quality", {}).get("mislabels", {}).get("ran", False)
        why = "" if searched else " (the ingest did not search for mislabels: --no-mislabels or too few images)"
        raise DataError(f"{root.child(MISLABELS)}: no such file{why}; re-run 'fer data ingest' without --no-mislabels")
    rows = rows[:max_items]
    classes = manifest.classes
    images = _images_by_id(data, manifest.version)
    where = root.child(MISLABELS)
    out: list[Candidate] = []
    for line, row in rows:
        for col in ("label", "suggested"):
            if row[col] not in classes:
                raise DataError(
                    f"{where} line {line}: {col} {row[col]!r} is not one of the data set's classes "
                    f"({', '.join(classes)}); the report does not belong to this data set: re-run 'fer data ingest'"
                )
        if row["id"] not in images:
            raise DataError(
                f"{where} line {line}: id {row['id']!r} is not in the data set's shards; the report does "
                "not belong to this data set: re-run 'fer data ingest'"
            )
        try:
            rank, own, other = int(row["rank"]), float(row["self_confidence"]), float(row["suggested_confidence"])
        except ValueError:
            raise DataError(
                f"{where} line {line}: rank or confidence is not a number; re-run 'fer data ingest'"
            ) from None
        out.append(
            Candidate(
                rank=rank,
                id=row["id"],
                label=row["label"],
                suggested=row["suggested"],
                self_confidence=own,
                suggested_confidence=other,
                image=png_data_uri(images[row["id"]]),
            )
        )
    _attach_duplicates(root, out, images)
    return manifest.data, out


def _images_by_id(data: str, version: str) -> dict[str, np.ndarray]:
    """Every image of the data set by id (shards read once, checksums verified)."""
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        part = load_split(data, split, expected_version=version)
        out.update(zip(part.ids, part.images, strict=True))
    return out


def _attach_duplicates(root: storage.Location, candidates: list[Candidate], images: dict[str, np.ndarray]) -> None:
    """Give each candidate the other members of its duplicate group (report/duplicates.csv, when there is one)."""
    rows = _read_report_csv(root, DUPLICATES, ("group", "id", "label", "action"))
    if not rows:
        return
    groups: dict[str, list[dict]] = {}
    group_of: dict[str, str] = {}
    for _, row in rows:
        groups.setdefault(row["group"], []).append(row)
        group_of.setdefault(row["id"], row["group"])
    for cand in candidates:
        g = group_of.get(cand.id)
        if g is None:
            continue
        cand.duplicates = [
            Duplicate(
                id=m["id"],
                label=m["label"],
                action=m["action"],
                image=png_data_uri(images[m["id"]], DUP_SIDE) if m["id"] in images else None,
            )
            for m in groups[g]
            if m["id"] != cand.id
        ]


# ----------------------------------------------------------------------------------------------
# The page

KEYS = (
    ("A", "accept the suggestion"),
    ("K", "keep the given label"),
    ("D", "drop"),
    ("1-9", "pick a class"),
    ("U", "undo"),
    ("→ J N", "next"),
    ("← P", "previous"),
    ("↑ ↓", "row up / down"),
)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f6f6}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ccc;padding:8px 16px}
h1{font-size:18px;margin:0 0 4px}
.bar{display:flex;flex-wrap:wrap;gap:12px;align-items:center}
#progress{font-weight:600}
.keys{font-size:12px;color:#444;margin-top:4px}
.keys span{margin-right:10px;white-space:nowrap}
kbd{border:1px solid #999;border-radius:3px;padding:0 4px;background:#eee;font:12px monospace}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(%(cell)dpx,1fr));gap:10px;padding:12px 16px}
.card{background:#fff;border:2px solid #ddd;border-radius:6px;padding:8px;outline:none}
.card.current{border-color:#1f6feb;box-shadow:0 0 0 3px #1f6feb55}
.card img.face{width:%(size)dpx;height:%(size)dpx;display:block;margin:0 auto}
.card .id{font:11px monospace;word-break:break-all;color:#555}
.dups{display:flex;flex-wrap:wrap;gap:4px;margin-top:4px;font-size:11px}
.dups figure{margin:0;width:72px}
.dups img{width:64px;height:64px;display:block}
.dups .gone{width:64px;height:64px;background:#eee;display:flex;align-items:center;
  justify-content:center;text-align:center}
.decision{margin-top:4px;font-weight:600;min-height:1.4em}
.d-accept .decision{color:#1a7f37}.d-drop .decision{color:#cf222e}.d-class .decision{color:#8250df}
.d-keep .decision{color:#555}
.card.decided{background:#fafafa}
"""

SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('review-data').textContent);
  const storeKey = 'fer-review:' + data.version;
  const cards = Array.from(document.querySelectorAll('article.card'));
  let decisions = {};
  try { decisions = JSON.parse(localStorage.getItem(storeKey) || '{}') || {}; } catch (e) { decisions = {}; }
  let current = 0;

  function save() { localStorage.setItem(storeKey, JSON.stringify(decisions)); }

  function describe(card, d) {
    if (!d) return '';
    if (d.kind === 'keep') return 'keep ' + card.dataset.label;
    if (d.kind === 'drop') return 'drop';
    if (d.label === card.dataset.label) return 'keep ' + d.label;
    return (d.kind === 'accept' ? 'accept: ' : 'relabel: ') + card.dataset.label + ' \u2192 ' + d.label;
  }

  function render(card) {
    const d = decisions[card.dataset.id];
    card.classList.remove('d-accept', 'd-keep', 'd-drop', 'd-class', 'decided');
    if (d) card.classList.add('d-' + d.kind, 'decided');
    card.querySelector('.decision').textContent = describe(card, d);
  }

  function progress() {
    const done = cards.filter(c => decisions[c.dataset.id]).length;
    document.getElementById('progress').textContent = done + ' of ' + cards.length + ' reviewed';
  }

  function focus(i) {
    if (!cards.length) return;
    current = Math.max(0, Math.min(cards.length - 1, i));
    cards.forEach((c, k) => c.classList.toggle('current', k === current));
    const card = cards[current];
    card.scrollIntoView({block: 'nearest'});
    const below = document.querySelector('header').getBoundingClientRect().bottom + 8;
    const top = card.getBoundingClientRect().top;
    if (top < below) window.scrollBy(0, top - below);  // not hidden under the sticky header
  }

  function perRow() {
    if (cards.length < 2) return 1;
    const top = cards[0].offsetTop;
    const n = cards.findIndex(c => c.offsetTop !== top);
    return n < 0 ? cards.length : n;
  }

  function decide(d) {
    const card = cards[current];
    if (!card) return;
    if (d) decisions[card.dataset.id] = d; else delete decisions[card.dataset.id];
    save(); render(card); progress();
    if (d) focus(current + 1);
  }

  function csvField(s) { return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  function relabelsCsv() {
    const lines = ['id,new_label'];
    for (const card of cards) {
      const d = decisions[card.dataset.id];
      if (!d || d.kind === 'keep') continue;
      if (d.kind === 'drop') { lines.push(csvField(card.dataset.id) + ',drop'); continue; }
      if (d.label !== card.dataset.label) lines.push(csvField(card.dataset.id) + ',' + csvField(d.label));
    }
    return lines.join('\n') + '\n';
  }

  function download() {
    const url = URL.createObjectURL(new Blob([relabelsCsv()], {type: 'text/csv'}));
    const a = document.createElement('a');
    a.href = url; a.download = 'relabels.csv';
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  document.addEventListener('keydown', function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key;
    const card = cards[current];
    let handled = true;
    if (key === 'a' || key === 'A') decide({kind: 'accept', label: card && card.dataset.suggested});
    else if (key === 'k' || key === 'K') decide({kind: 'keep'});
    else if (key === 'd' || key === 'D') decide({kind: 'drop'});
    else if (key === 'u' || key === 'U') decide(null);
    else if (/^[1-9]$/.test(key) && Number(key) <= data.classes.length)
      decide({kind: 'class', label: data.classes[Number(key) - 1]});
    else if (key === 'ArrowRight' || key === 'j' || key === 'J' || key === 'n' || key === 'N') focus(current + 1);
    else if (key === 'ArrowLeft' || key === 'p' || key === 'P') focus(current - 1);
    else if (key === 'ArrowDown') focus(current + perRow());
    else if (key === 'ArrowUp') focus(current - perRow());
    else handled = false;
    if (handled) ev.preventDefault();
  });
  cards.forEach((c, k) => c.addEventListener('click', () => focus(k)));
  document.getElementById('download').addEventListener('click', download);
  window.ferReview = {relabelsCsv: relabelsCsv, storeKey: storeKey};
  cards.forEach(render);
  progress();
  const firstOpen = cards.findIndex(c => !decisions[c.dataset.id]);
  focus(firstOpen < 0 ? 0 : firstOpen);
})();
"""


def _duplicate_html(d: Duplicate) -> str:
    caption = f"{esc(d.label)} · {esc(d.action)}"
    if d.image is not None:
        pic = f'<img src="{d.image}" alt="near duplicate {esc(d.id)}" title="{esc(d.id)}">'
    else:
        pic = f'<div class="gone" title="{esc(d.id)}">image not kept</div>'
    return f"<figure>{pic}<figcaption>{caption}</figcaption></figure>"


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def _card_html(k: int, c: Candidate) -> str:
    dups = ""
    if c.duplicates:
        dups = (
            '<div class="dups"><span>near duplicates:</span>' + "".join(map(_duplicate_html, c.duplicates)) + "</div>"
        )
    return (
        f'<article class="card" id="card-{k}" data-id="{esc(c.id)}" data-label="{esc(c.label)}" '
        f'data-suggested="{esc(c.suggested)}">'
        f'<img class="face" src="{c.image}" alt="candidate {esc(c.id)}">'
        f'<div><b>#{c.rank}</b> <span class="id">{esc(c.id)}</span></div>'
        f'<div>given <b class="given">{esc(c.label)}</b> ({_pct(c.self_confidence)}) → suggested '
        f'<b class="suggested">{esc(c.suggested)}</b> ({_pct(c.suggested_confidence)})</div>'
        f"{dups}"
        '<div class="decision"></div>'
        "</article>"
    )


def render_page(manifest: dict, candidates: list[Candidate]) -> str:
    """The whole page as one string (see the module docstring)."""
    classes = list(manifest["classes"])
    name, version = manifest["name"], manifest["version"]
    ml = manifest.get("quality", {}).get("mislabels", {})
    flagged = ml.get("candidates")
    summary = f"{len(candidates)} candidates shown"
    if flagged is not None:
        summary += f" of {flagged} flagged"
    if ml.get("expected_errors") is not None:
        summary += f"; about {ml['expected_errors']} label errors expected in the data set"
    keys = "".join(f"<span><kbd>{esc(k)}</kbd> {esc(v)}</span>" for k, v in KEYS)
    class_keys = " ".join(f"<kbd>{n}</kbd> {esc(c)}" for n, c in enumerate(classes[:9], start=1))
    grid = "".join(_card_html(k, c) for k, c in enumerate(candidates)) or "<p>No candidates to review.</p>"
    data = {"version": version, "classes": classes[:9]}
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
        f"<title>Mislabel review: {esc(name)} {esc(version)}</title>"
        f"<style>{CSS % {'cell': DISPLAY + 24, 'size': DISPLAY}}</style></head><body>"
        f"<header><h1>Mislabel review: {esc(name)} <small>{esc(version)}</small></h1>"
        '<div class="bar">'
        f'<span id="progress">0 of {len(candidates)} reviewed</span>'
        '<button id="download" type="button">Download relabels.csv</button>'
        f'<span id="summary">{esc(summary)}</span></div>'
        f'<div class="keys" id="keys">{keys}<span id="class-keys">classes: {class_keys}</span></div>'
        '<div class="keys">Progress is saved in this browser. Apply the download with '
        "<code>fer data ingest SRC --relabels relabels.csv ...</code>; images kept as labeled get no row.</div>"
        f'</header><main id="grid">{grid}</main>'
        f'<script type="application/json" id="review-data">{json_for_script(data)}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def default_out(data: str) -> Path:
    if is_uri(data):
        raise DataError(
            f"{storage.redact(data)}: a remote data set; pass --out PAGE.html to choose where the page goes"
        )
    return Path(data) / "report" / "review.html"


def write_review_page(data: str, out: str | Path | None = None, *, max_items: int = DEFAULT_MAX) -> tuple[Path, int]:
    """Write the page for the data set at ``data`` to ``out`` (default ``DATA/report/review.html``).

    Returns (path, number of candidates on the page). An existing ``out`` is replaced only when it
    is a review page (atomically); anything else there is an error.
    """
    path = Path(out) if out is not None else default_out(data)
    if path.exists() and (not path.is_file() or not is_our_page(path)):
        raise DataError(f"{path}: exists and is not a review page written by 'fer data review'; choose another --out")
    manifest, candidates = read_candidates(data, max_items)
    atomic.write_text(path, render_page(manifest, candidates))
    return path, len(candidates)
