"""Self-contained HTML pages of a step's numbers and plots, for the KFP UI's HTML viewer.

The KFP UI shows an ``HTML`` artifact in a sandboxed iframe that loads nothing from elsewhere, so
each page carries everything inline: PNGs as base64 ``data:`` URIs, the style in the page.
"""

from __future__ import annotations

import base64
import html
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Section", "render_html", "write_html"]

_STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-family: monospace; }
img { max-width: 100%; }
p.note { color: #666; }
"""


@dataclass(frozen=True)
class Section:
    """A heading with, in order, an optional table (header row first), a PNG and notes."""

    heading: str
    table: Sequence[Sequence[object]] = ()
    image: str | pathlib.Path | None = None
    notes: Sequence[str] = field(default_factory=tuple)


def _cell(value: object, tag: str) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    css = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    return f"<{tag}{css}>{html.escape(text)}</{tag}>"


def _table(rows: Sequence[Sequence[object]]) -> str:
    head, *body = rows
    lines = ["<table>", "<tr>" + "".join(_cell(v, "th") for v in head) + "</tr>"]
    lines += ["<tr>" + "".join(_cell(v, "td") for v in row) + "</tr>" for row in body]
    return "\n".join([*lines, "</table>"])


def _image(path: pathlib.Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(title: str, sections: Sequence[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.table:
            parts.append(_table(section.table))
        if section.image is not None:
            parts.append(_image(pathlib.Path(section.image), section.heading))
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(path: str | pathlib.Path, title: str, sections: Sequence[Section]) -> pathlib.Path:
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(title, sections), encoding="utf-8")
    return out
