"""Local paths and any URI pyarrow understands (s3://, gs://, hdfs://, file://) behind one API."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a pyarrow filesystem URI."""
    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path
    return pafs.LocalFileSystem(), str(Path(uri).absolute())


def read_text(uri: str) -> str:
    filesystem, path = resolve(uri)
    with filesystem.open_input_stream(path) as stream:
        data: bytes = stream.read()
    return data.decode("utf-8")


def write_text(uri: str, text: str) -> None:
    filesystem, path = resolve(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode("utf-8"))
