"""Page assembly: escaping, figures as embedded JSON, sortable tables, and the one self-contained page.

Rules that keep a page safe with whatever names users chose:

- every string from an experiment goes through ``esc`` (HTML-escaped, quotes included) before it
  reaches markup; this module builds markup only from escaped text and its own constants;
- data for JavaScript is JSON inside ``<script type="application/json">``, with ``<``, ``>`` and ``&``
  written as ``\\u003c``, ``\\u003e``, ``\\u0026`` (so no ``</script>`` or ``<!--`` can occur in it),
  read with ``JSON.parse``;
- plotly.js is embedded once, inline (``plotly.offline.get_plotlyjs()``); nothing is fetched from
  anywhere, so the file opens offline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from fer_core.htmltext import esc, json_for_script

__all__ = [
    "esc",
    "json_for_script",
    "json_script",
    "figure",
    "table",
    "note",
    "warning",
    "section",
    "page",
    "Cell",
    "Pick",
    "GENERATOR",
    "is_our_page",
    "INDEX_JS",
]

#: Every page carries ``<meta name="generator" content="fer-sweep dashboard">``: ``--out`` replaces an
#: existing file only when it is one of ours (``is_our_page``), never someone's other HTML.
GENERATOR = '<meta name="generator" content="fer-sweep dashboard">'


def is_our_page(path) -> bool:
    """Whether the file at ``path`` is a page this module wrote (its head names the generator)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return GENERATOR.encode() in head


def json_script(element_id: str, obj: Any = None, *, text: str | None = None, **attrs: str) -> str:
    """``<script type="application/json">`` holding ``obj`` (or the JSON ``text``); read it with JSON.parse."""
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    return f'<script type="application/json" id="{esc(element_id)}"{extra}>{json_for_script(obj, text=text)}</script>'


_counter = iter(range(10**9))


def figure(fig, *, caption: str = "") -> str:
    """A plotly figure: an empty div and its JSON; the page's script draws it (or says why it could not)."""
    if fig is None:
        return ""
    n = next(_counter)
    div = f"plot-{n}"
    cap = f'<p class="caption">{caption}</p>' if caption else ""
    return f'<div class="plot" id="{div}"></div>{cap}' + json_script(
        f"{div}-spec", text=fig.to_json(validate=False), data_plot=div
    )


class Cell:
    """A table cell: ``text`` shown (escaped), ``sort`` the value the header click sorts by.

    ``href``: the text is a link to it (escaped; build it from quoted path segments, never a raw name).
    """

    __slots__ = ("text", "sort", "cls", "title", "href")

    def __init__(self, text: Any, sort: Any = None, cls: str = "", title: str = "", href: str = ""):
        self.text, self.sort, self.cls, self.title, self.href = text, sort, cls, title, href


class Pick:
    """A cell holding a checkbox (``class="pick"``) whose ``value`` and ``data-*`` attributes are escaped."""

    __slots__ = ("value", "data")

    def __init__(self, value: str, **data: str):
        self.value, self.data = value, data


def _cell(c: Any) -> str:
    if isinstance(c, Pick):
        extra = "".join(f' data-{esc(k.replace("_", "-"))}="{esc(v)}"' for k, v in c.data.items())
        return (
            f'<td data-v=""><input type="checkbox" class="pick" value="{esc(c.value)}"'
            f' aria-label="pick {esc(c.value)} to compare"{extra}></td>'
        )
    if not isinstance(c, Cell):
        c = Cell(c, c)
    if isinstance(c.sort, (int, float)) and not isinstance(c.sort, bool):
        sort = repr(float(c.sort)) if math.isfinite(c.sort) else ""
    else:
        sort = "" if c.sort is None else str(c.sort)
    attrs = f' data-v="{esc(sort)}"'
    if c.cls:
        attrs += f' class="{esc(c.cls)}"'
    if c.title:
        attrs += f' title="{esc(c.title)}"'
    text = esc("-" if c.text is None else c.text)
    if c.href:
        text = f'<a href="{esc(c.href)}">{text}</a>'
    return f"<td{attrs}>{text}</td>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    sortable: bool = False,
    cls: str = "",
    table_id: str = "",
    tall: bool = False,
    page_size: int = 0,
) -> str:
    """An HTML table; with ``sortable`` a click on a header sorts by that column (again: reversed).

    ``page_size``: with more rows than that, the page shows them ``page_size`` at a time with
    previous/next buttons (sorting sorts every row and goes back to the first page).
    """
    rows = list(rows)
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    head = "".join(f'<th scope="col"{" tabindex=0" if sortable else ""}>{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    wrap = "table-wrap tall" if tall else "table-wrap"
    paged = page_size > 0 and len(rows) > page_size
    pages = f' data-page-size="{int(page_size)}"' if paged else ""
    pager = (
        (
            '<div class="pager"><button type="button" class="prev">‹ previous</button> <span class="where"></span> '
            '<button type="button" class="next">next ›</button></div>'
        )
        if paged
        else ""
    )
    return (
        f'<div class="{wrap}"><table{ident} class="{classes}"{pages}><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>{pager}"
    )


def note(text: str) -> str:
    """``text`` is escaped."""
    return f'<p class="note">{esc(text)}</p>'


def warning(text: str) -> str:
    """``text`` is escaped."""
    return f'<p class="warning" role="alert">⚠ {esc(text)}</p>'


def section(title: str, body: str, *, anchor: str = "") -> str:
    """``title`` is escaped; ``body`` is markup built by this module's functions."""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>"


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if "</script" in js.lower():  # never true for plotly.js; a guard so the page cannot break
        js = js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    return js


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1400px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.6em;margin:.4em 0 .2em;word-break:break-all} \
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.8em}
h3{font-size:1.05em;margin:1em 0 .4em}
section{background:#fff;border:1px solid #e5e5e5;border-radius:6px;padding:4px 16px 12px;margin:16px 0}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 24px}
.facts dl{margin:0} dt{font-weight:600;color:#555;margin-top:6px} dd{margin:0 0 0 0}
.table-wrap{overflow-x:auto;max-width:100%}
.table-wrap.tall{max-height:560px;overflow-y:auto} .table-wrap.tall th{position:sticky;top:0;z-index:1}
.pager{margin:6px 0 0;font-size:13px;color:#555} .pager button{font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #e2e2e2;padding:3px 7px;text-align:left;white-space:nowrap}
td.reason{white-space:normal;min-width:220px;max-width:420px;font-size:12px;color:#555}
th{background:#f3f3f3}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"} table.sortable th[aria-sort=descending]::after{content:" ▼"}
tr.best td{background:#eef6ee}
pre{background:#f4f4f4;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.note{color:#555;font-style:italic} \
.warning{background:#fff4e5;border:1px solid #f0b35a;padding:6px 10px;border-radius:4px}
.plot{width:100%;min-height:200px} .plot-error{color:#b00;border:1px solid #b00;padding:8px}
.caption{font-size:12px;color:#555;margin-top:0}
.badge{display:inline-block;background:#ff7f0e;color:#fff;border-radius:4px;padding:1px 8px;font-size:12px;\
vertical-align:middle}
.side{display:grid;grid-template-columns:1fr 1fr;gap:16px} .side>div{min-width:0}
"""

RENDER_JS = """
(function(){
  function fail(div, what, err){
    div.classList.add('plot-error');
    div.textContent = 'This plot could not be drawn: ' + err;
    console.error('dashboard plot ' + what + ' failed: ' + err);
  }
  document.querySelectorAll('script[type="application/json"][data-plot]').forEach(function(el){
    var div = document.getElementById(el.getAttribute('data-plot'));
    try {
      var spec = JSON.parse(el.textContent);
      var p = Plotly.newPlot(div, spec.data, spec.layout || {}, {displaylogo: false, responsive: true});
      if (p && p.catch) p.catch(function(e){ fail(div, div.id, e); });
    } catch (e) { fail(div, div.id, e); }
  });
  function sortBy(th){
    var table = th.closest('table'), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    th.parentNode.querySelectorAll('th').forEach(function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[idx].getAttribute('data-v'), y = b.cells[idx].getAttribute('data-v');
      var ex = (x === null || x === ''), ey = (y === null || y === '');
      if (ex || ey) return ex - ey;                      /* empty cells last, either way */
      var nx = Number(x), ny = Number(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    if (table.hasAttribute('data-page-size')) showPage(table, 0);
  }
  function showPage(table, page){
    var size = Number(table.getAttribute('data-page-size')), rows = table.tBodies[0].rows;
    var last = Math.max(0, Math.ceil(rows.length / size) - 1);
    page = Math.min(Math.max(page, 0), last);
    table.setAttribute('data-page', page);
    for (var i = 0; i < rows.length; i++) rows[i].hidden = (i < page * size || i >= (page + 1) * size);
    var pager = table.parentNode.nextElementSibling;
    pager.querySelector('.where').textContent = 'rows ' + (page * size + 1) + '-' +
      Math.min(rows.length, (page + 1) * size) + ' of ' + rows.length;
    pager.querySelector('.prev').disabled = page === 0;
    pager.querySelector('.next').disabled = page === last;
  }
  document.querySelectorAll('table[data-page-size]').forEach(function(table){
    var pager = table.parentNode.nextElementSibling;
    function step(d){ showPage(table, Number(table.getAttribute('data-page')) + d); }
    pager.querySelector('.prev').addEventListener('click', function(){ step(-1); });
    pager.querySelector('.next').addEventListener('click', function(){ step(1); });
    showPage(table, 0);
  });
  document.querySelectorAll('table.sortable th').forEach(function(th){
    th.addEventListener('click', function(){ sortBy(th); });
    th.addEventListener('keydown', function(e){ if (e.key === 'Enter') sortBy(th); });
  });
})();
"""

LIVE_JS = """
(function(){
  var shown = JSON.parse(document.getElementById('page-version').textContent);
  setInterval(function(){
    fetch('version', {cache: 'no-store'}).then(function(r){ return r.json(); }).then(function(d){
      if (d.version !== shown) location.reload();
    }).catch(function(){});
  }, %d);
})();
"""


INDEX_JS = """
(function(){
  /* The index of experiments: filter rows by data set, pick two rows to compare. */
  var table = document.getElementById('experiments');
  if (!table) return;
  var filter = document.getElementById('dataset-filter');
  var col = Number(filter.getAttribute('data-col'));
  var shown = document.getElementById('shown-count');
  function applyFilter(){
    var want = filter.value, n = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var keep = want === '' || rows[i].cells[col].getAttribute('data-v') === want;
      rows[i].hidden = !keep;
      if (keep) n++;
    }
    shown.textContent = n + ' of ' + rows.length + ' experiments shown';
  }
  filter.addEventListener('change', applyFilter);
  applyFilter();
  var box = document.getElementById('compare-box');
  var serve = box.getAttribute('data-mode') === 'serve';
  function quote(s){ return /^[A-Za-z0-9_.\\/:@%+=,-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }
  var order = [];                                     /* picked boxes in the order they were picked: A, B */
  function update(){
    order = order.filter(function(el){ return el.checked; });
    table.querySelectorAll('input.pick:checked').forEach(function(el){ if (order.indexOf(el) < 0) order.push(el); });
    var picked = order;
    var hint = box.querySelector('.hint'), link = box.querySelector('a.compare'), cmd = box.querySelector('code');
    if (picked.length !== 2) {
      hint.textContent = picked.length > 2 ? 'Pick exactly two experiments (' + picked.length + ' picked).'
                                           : 'Pick two experiments (' + picked.length + ' picked) to compare them.';
      if (link) link.hidden = true;
      if (cmd) cmd.parentNode.hidden = true;
      return;
    }
    hint.textContent = 'Compare ' + picked[0].value + ' (A) with ' + picked[1].value + ' (B):';
    if (serve) {
      link.href = 'compare?a=' + encodeURIComponent(picked[0].value) + '&b=' + encodeURIComponent(picked[1].value);
      link.hidden = false;
    } else {
      cmd.textContent = 'fer dashboard compare ' + quote(picked[0].getAttribute('data-where')) + ' ' +
        quote(picked[1].getAttribute('data-where')) + ' --out compare.html';
      cmd.parentNode.hidden = false;
    }
  }
  table.addEventListener('change', function(e){ if (e.target.classList.contains('pick')) update(); });
  update();
})();
"""


def page(
    title: str,
    body: str,
    *,
    live_version: str | None = None,
    refresh_s: int = 10,
    plotly: bool = True,
    script: str = "",
) -> str:
    """The whole document. ``title`` is escaped; ``body`` is markup from this module's functions.

    ``plotly=False``: a page without plots leaves plotly.js out (a few kB instead of megabytes);
    ``script``: one of this module's scripts (e.g. ``INDEX_JS``), run after the page's own.
    """
    live = ""
    if live_version is not None:
        live = json_script("page-version", live_version) + f"<script>{LIVE_JS % (refresh_s * 1000)}</script>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        + GENERATOR
        + '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style>"
        + (f"<script>{_plotly_js()}</script>" if plotly else "")
        + f"</head>\n<body><main>{body}</main>"
        f"<script>{RENDER_JS}</script>" + (f"<script>{script}</script>" if script else "") + f"{live}</body></html>\n"
    )
