"""The HTML pages the steps write for the KFP UI, read as a browser would: parsed, not grepped."""

from __future__ import annotations

import base64
import html.parser
import pathlib
from dataclasses import dataclass, field

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DATA_PNG = "data:image/png;base64,"


@dataclass
class Page:
    title: str = ""
    headings: list[str] = field(default_factory=list)  # h1 and h2 texts
    images: dict[str, bytes] = field(default_factory=dict)  # alt text -> decoded PNG
    cells: list[str] = field(default_factory=list)  # every table cell's text
    links: list[str] = field(default_factory=list)  # every src/href that is not a data: URI


class _Parser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._in: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if key in values and not values[key].startswith(_DATA_PNG):
                self.page.links.append(values[key])
        if tag == "img":
            src = values.get("src", "")
            if src.startswith(_DATA_PNG):
                data = base64.b64decode(src.removeprefix(_DATA_PNG), validate=True)
                self.page.images[values.get("alt", "")] = data
        if tag in ("title", "h1", "h2", "td", "th"):
            self._in, self._text = tag, ""

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag != self._in:
            return
        if tag == "title":
            self.page.title = self._text
        elif tag in ("h1", "h2"):
            self.page.headings.append(self._text)
        else:
            self.page.cells.append(self._text)
        self._in = None


def read_page(path: str | pathlib.Path) -> Page:
    """The page at ``path``; fails on a page that would load anything from elsewhere (the KFP UI
    sandboxes it) or whose images are not PNGs."""
    parser = _Parser()
    parser.feed(pathlib.Path(path).read_text(encoding="utf-8"))
    parser.close()
    page = parser.page
    assert page.links == [], f"{path} refers to other resources: {page.links}"
    for alt, data in page.images.items():
        assert data[:8] == PNG_MAGIC, f"{path}: image {alt!r} is not a PNG"
    return page
