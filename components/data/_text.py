"""Raw bytes as text: UTF-8 checks on input lines, and tokens cut short for messages.

Input files are UTF-8. A stray byte that is not (one Latin-1 character in a log) makes its line
a bad row, reported with file and line; a whole file in UTF-16/UTF-32 is refused with a hint,
since every one of its lines would be bad. Tokens in messages and in stats.json are cut to a
prefix plus their length, so a 5 MB value cannot flood a log or a report.
"""

from __future__ import annotations

import re

SHOWN_CHARACTERS = 60
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a bad byte
_WIDE_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def shorten(token: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`repr(token)`, or of its first `limit` characters plus its length when longer."""
    if len(token) <= limit:
        return repr(token)
    return f"{token[:limit]!r}... ({len(token):,} characters)"


def check_wide_encoding(file_name: str, head: bytes) -> None:
    """Refuse a file whose first bytes say UTF-16 or UTF-32 (a byte order mark, or NUL bytes
    in the first line, which UTF-8 text never has)."""
    marked = [name for bom, name in _WIDE_BOMS.items() if head.startswith(bom)]
    if marked:
        name = marked[0]
    elif b"\x00" in head.split(b"\n", 1)[0]:
        name = "UTF-16 or UTF-32"
    else:
        return
    raise ValueError(
        f"{file_name}: line 1: the file is {name} text; ctrflow reads UTF-8 "
        f"(convert it first, e.g. iconv -f {name.split()[0]} -t UTF-8)"
    )


def undecodable_lines(data: bytes) -> tuple[bytes, list[tuple[int, str]]]:
    """(data with every byte that is not UTF-8 replaced by '?', [(0-based line, why)] of the
    lines that had one). ASCII data, the common case, costs one fast scan."""
    if data.isascii():
        return data, []
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return data, []
    text = data.decode("utf-8", errors="surrogateescape")
    found: list[tuple[int, str]] = []
    line, scanned = 0, 0
    for match in _UNDECODABLE.finditer(text):
        position = match.start()
        line += text.count("\n", scanned, position)
        scanned = position
        if found and found[-1][0] == line:
            continue  # one report per line
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        byte = ord(text[position]) - 0xDC00
        found.append((line, f"not UTF-8 text: byte 0x{byte:02x} at character {column}"))
    return text.encode("utf-8", errors="replace"), found
