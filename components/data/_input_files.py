"""Resolve input URIs (each a file, directory or glob; local or any pyarrow filesystem) to data
files."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from ctrflow.components.data import _fs

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".br")
PARQUET_SUFFIXES = (".parquet", ".pq")
TAB_SUFFIXES = (".tsv", ".tab", ".txt")  # Criteo's own train.txt is tab-separated
DATA_SUFFIXES = (".csv", *TAB_SUFFIXES, *PARQUET_SUFFIXES)


@dataclass(frozen=True)
class InputFile:
    filesystem: pafs.FileSystem
    path: str
    size: int

    @property
    def name(self) -> str:
        """How messages name the file."""
        return self.path

    @property
    def base_suffix(self) -> str:
        """Suffix that says the format, after any compression suffix (data.csv.gz -> .csv)."""
        name = self.path.rsplit("/", 1)[-1].lower()
        for compression in COMPRESSION_SUFFIXES:
            if name.endswith(compression):
                name = name[: -len(compression)]
        return "." + name.rsplit(".", 1)[-1] if "." in name else ""

    @property
    def is_compressed(self) -> bool:
        return self.path.lower().endswith(COMPRESSION_SUFFIXES)

    @property
    def is_parquet(self) -> bool:
        return self.base_suffix in PARQUET_SUFFIXES

    def separator(self, override: str | None) -> str:
        if override is not None:
            return override
        return "\t" if self.base_suffix in TAB_SUFFIXES else ","


def _is_data_file(info: pafs.FileInfo) -> bool:
    name = info.base_name
    if info.type != pafs.FileType.File or name.startswith((".", "_")):
        return False  # hidden files, _SUCCESS markers and the like
    return any(
        name.lower().endswith(s + c) for s in DATA_SUFFIXES for c in ("", *COMPRESSION_SUFFIXES)
    )


def list_inputs(uri: str) -> list[InputFile]:
    """Data files named by `uri`, sorted by path. Raises FileNotFoundError naming the URI."""
    filesystem, path = _fs.resolve(uri)
    if any(ch in path for ch in "*?["):
        cut = min(path.index(ch) for ch in "*?[" if ch in path)
        base = path[:cut].rsplit("/", 1)[0] or "/"
        infos = filesystem.get_file_info(
            pafs.FileSelector(base, recursive=True, allow_not_found=True)
        )
        found = [i for i in infos if fnmatch.fnmatchcase(i.path, path) and _is_data_file(i)]
        if not found:
            raise FileNotFoundError(f"{uri}: no data files match this pattern")
    else:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{uri}: no such file or directory")
        if info.type == pafs.FileType.Directory:
            infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            found = [i for i in infos if _is_data_file(i)]
            if not found:
                raise FileNotFoundError(
                    f"{uri}: directory holds no data files ({', '.join(DATA_SUFFIXES)}, "
                    "optionally compressed)"
                )
        else:
            found = [info]
    return [
        InputFile(filesystem, i.path, int(i.size or 0)) for i in sorted(found, key=lambda i: i.path)
    ]


def list_all_inputs(uris: str | Sequence[str]) -> list[InputFile]:
    """Data files of one URI or of several (e.g. one per day of a data window): in the order
    the URIs are given, by path within each. Every URI must name data: a day without files is
    an error naming its URI, never a silently smaller window; so is a file two URIs both name,
    which would be read twice."""
    if isinstance(uris, str):
        return list_inputs(uris)
    if not uris:
        raise ValueError("no input URI given")
    files: list[InputFile] = []
    named_by: dict[tuple[str, str], str] = {}
    for uri in uris:
        for file in list_inputs(uri):
            key = (file.filesystem.type_name, file.path)
            if key in named_by:
                raise ValueError(
                    f"{file.path} is named by both {named_by[key]} and {uri}: it would be read "
                    "twice"
                )
            named_by[key] = uri
            files.append(file)
    return files
