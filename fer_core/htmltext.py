"""Text that goes into an HTML page: the one owner of escaping (the review page, the dashboards).

Everything inserted into a page that came from a user, a file or a data set passes through
:func:`esc` (element text and attribute values) or :func:`json_for_script` (data inside a
``<script>`` element).
"""

from __future__ import annotations

import html
import json
from typing import Any


def esc(value: Any) -> str:
    """``value`` as text safe in element content and in quoted attribute values (None: empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def json_for_script(obj: Any = None, *, text: str | None = None) -> str:
    """``obj`` as JSON (or ``text``, JSON already, as plotly writes it) that cannot end or comment out
    the ``<script>`` element holding it."""
    if text is None:
        text = json.dumps(obj, default=str, allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
