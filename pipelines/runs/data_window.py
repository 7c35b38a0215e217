"""The data a run reads, from its date: `--data` as a template of the scheduled day.

A weekly schedule that reads the same `--data` every week trains on the same data every week.
With a template, each run reads its own week: the pipeline's first step fills it from the run's
scheduled time (KFP's ``pipeline_job_schedule_time_utc``), or from ``data_date`` when given
(`ctrflow run --data-date`, kfp.local having no schedule time). Syntax, inside braces:

    {date}                the run's date, UTC, as 2026-12-07
    {date-7d} {date+1w}   shifted by days (d) or weeks (w)
    {date-7d:%G-w%V}      any strftime format: ISO week "2026-w49", "%Y/%m/%d", ...
    {date-7d..date}       a range of days, the end excluded (one URI per day)

``{{`` and ``}}`` are literal braces. E.g. ``gs://ads-logs/{date-7d:%G-w%V}/*.parquet`` reads
last week's partition, ``gs://ads-logs/{date-7d..date:%Y/%m/%d}/*.parquet`` the 7 daily
partitions before the run's day; prepare-data reads every URI and fails on a day without data.
Errors name the template, the position and the token.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

__all__ = ["DataWindow", "TemplateError", "is_template", "parse_date", "render"]

_EXPR = re.compile(r"date(?:(?P<sign>[+-])(?P<n>\d+)(?P<unit>[dw]))?")
_FIELD = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]")
_DEFAULT_FORMAT = "%Y-%m-%d"
MAX_RANGE_DAYS = 366


class TemplateError(ValueError):
    """A bad data URI template or date; names the template, position and token."""


@dataclass(frozen=True)
class DataWindow:
    uris: tuple[str, ...]  # one, or one per day of a range
    date: datetime.date  # the run's date the template was filled from
    start: datetime.date  # first day the template names
    end: datetime.date  # the day after the last one

    def params(self, template: str) -> dict[str, str]:
        """As the MLflow params of the run record it: the template, the date it was filled from,
        the window (end excluded) and how many URIs it named (the URIs themselves may not fit an
        MLflow param; register logs them as an artifact)."""
        return {
            "data_uri": template,
            "data_date": self.date.isoformat(),
            "data_window_start": self.start.isoformat(),
            "data_window_end": self.end.isoformat(),
            "data_uri_count": str(len(self.uris)),
        }


def is_template(uri: str) -> bool:
    return any(m.group() not in ("{{", "}}") for m in _FIELD.finditer(uri))


def parse_date(text: str) -> datetime.date:
    """A date, or an RFC 3339 time (KFP's schedule time) taken in UTC."""
    value = text.strip()
    try:
        if "T" in value:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(datetime.UTC)
            return moment.date()
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise TemplateError(
            f"date {text!r} is neither YYYY-MM-DD nor an RFC 3339 time (2026-12-07T03:00:00Z)"
        ) from None


def _day(expr: str, date: datetime.date, template: str, at: int) -> datetime.date:
    match = _EXPR.fullmatch(expr.strip())
    if not match:
        raise TemplateError(
            f"data template {template!r}, position {at}: {expr!r} is not date, date-Nd, "
            "date+Nd or date-Nw"
        )
    if not match["sign"]:
        return date
    days = int(match["n"]) * (7 if match["unit"] == "w" else 1)
    return date + datetime.timedelta(days=days if match["sign"] == "+" else -days)


def _field(body: str, date: datetime.date, template: str, at: int) -> list[datetime.date]:
    span = body.partition(":")[0]
    first, dots, last = span.partition("..")
    start = _day(first, date, template, at)
    if not dots:
        return [start]
    end = _day(last, date, template, at)
    n = (end - start).days
    if not 1 <= n <= MAX_RANGE_DAYS:
        raise TemplateError(
            f"data template {template!r}, position {at}: range {span!r} covers {n} days; it "
            f"must run forwards over 1 to {MAX_RANGE_DAYS} days (the end is excluded)"
        )
    return [start + datetime.timedelta(days=i) for i in range(n)]


def render(template: str, date: datetime.date) -> DataWindow:
    """The URIs ``template`` names for a run on ``date``. One range at most per template."""
    pieces: list[str | tuple[list[datetime.date], str]] = []
    last = 0
    days_named: list[datetime.date] = []
    ranges = 0
    for match in _FIELD.finditer(template):
        pieces.append(template[last : match.start()])
        last = match.end()
        token = match.group()
        if token in ("{{", "}}"):
            pieces.append(token[0])
            continue
        if token in ("{", "}"):
            raise TemplateError(
                f"data template {template!r}, position {match.start()}: unmatched {token!r} "
                "(write {{ or }} for a literal brace)"
            )
        body = token[1:-1]
        fmt = body.partition(":")[2] or _DEFAULT_FORMAT
        days = _field(body, date, template, match.start())
        ranges += len(days) > 1 or ".." in body
        if ranges > 1:
            raise TemplateError(
                f"data template {template!r}, position {match.start()}: one range per template"
            )
        days_named += days
        pieces.append((days, fmt))
    pieces.append(template[last:])
    if not days_named:
        return DataWindow((template.replace("{{", "{").replace("}}", "}"),), date, date, date)
    count = max(len(p[0]) for p in pieces if isinstance(p, tuple))
    uris = []
    for i in range(count):
        uri = ""
        for piece in pieces:
            if isinstance(piece, str):
                uri += piece
            else:
                days, fmt = piece
                uri += days[i if len(days) > 1 else 0].strftime(fmt)
        uris.append(uri)
    return DataWindow(
        tuple(dict.fromkeys(uris)),
        date,
        min(days_named),
        max(days_named) + datetime.timedelta(days=1),
    )
