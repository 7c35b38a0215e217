"""Cron expressions for KFP recurring runs: the usual 5 fields in, KFP's 6 fields out.

KFP's scheduler parses cron with robfig/cron, whose format has a leading *seconds* field, and whose
5-field form means seconds..month, not minute..weekday. Handed "0 3 * * 1" as is, it would run at
second 0, minute 3 of every hour, every day in January. So ``ctrflow schedule`` takes the standard
5-field form (minute hour day-of-month month day-of-week), checks every field against what
robfig/cron accepts, and prepends "0" for the seconds. The @-descriptors robfig knows (@weekly,
@daily, ...) pass through unchanged.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

__all__ = ["CronError", "next_run", "to_kfp_cron"]


class CronError(ValueError):
    """An invalid cron expression; the message names the field and the offending token."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)
_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_NUMBER = re.compile(r"[0-9]+")


def _value(token: str, field: _Field, expression: str) -> int:
    lowered = token.lower()
    if lowered in field.names:
        return field.low + field.names.index(lowered)
    if not _NUMBER.fullmatch(token):
        raise CronError(f"{field.name} field: {token!r} is not a number in {expression!r}")
    value = int(token)
    if field.name == "day of week" and value == 7:
        raise CronError(
            f"day of week field: 7 in {expression!r}; KFP's cron counts Sunday as 0 only: use 0"
        )
    if not field.low <= value <= field.high:
        raise CronError(
            f"{field.name} field: {value} in {expression!r} is outside {field.low}-{field.high}"
        )
    return value


def _check_range(part: str, field: _Field, expression: str) -> None:
    """One comma-separated part: *, ?, N, N-M, each optionally /STEP."""
    span, slash, step = part.partition("/")
    if slash and (not _NUMBER.fullmatch(step) or int(step) == 0):
        raise CronError(f"{field.name} field: step {step!r} in {expression!r} must be >= 1")
    if span in ("*", "?"):
        if span == "?" and field.name not in ("day of month", "day of week"):
            raise CronError(f"{field.name} field: '?' is allowed only for the day fields")
        return
    if not span:
        raise CronError(f"{field.name} field: empty value in {expression!r}")
    start, dash, end = span.partition("-")
    first = _value(start, field, expression)
    if dash:
        last = _value(end, field, expression)
        if last < first:
            raise CronError(f"{field.name} field: range {span!r} in {expression!r} runs backwards")


def to_kfp_cron(expression: str) -> str:
    """The 6-field KFP form of a standard 5-field cron expression (or an @-descriptor).

    >>> to_kfp_cron("0 3 * * 1")
    '0 0 3 * * 1'
    """
    text = " ".join(expression.split())
    if not text:
        raise CronError("empty cron expression")
    if text.startswith("@"):
        if text.lower() in _DESCRIPTORS:
            return text.lower()
        raise CronError(f"unknown cron descriptor {text!r}; use one of {', '.join(_DESCRIPTORS)}")
    fields = text.split(" ")
    if len(fields) != len(_FIELDS):
        hint = (
            " (it looks like KFP's 6-field form with seconds; give the usual 5 fields, ctrflow "
            "adds the seconds)"
            if len(fields) == 6
            else ""
        )
        raise CronError(
            f"cron expression {text!r} has {len(fields)} fields; expected 5: minute hour "
            f"day-of-month month day-of-week{hint}"
        )
    for token, field in zip(fields, _FIELDS, strict=True):
        for part in token.split(","):
            _check_range(part, field, text)
    return "0 " + text


# -- the next run time ---------------------------------------------------------------------------
# robfig/cron (KFP's scheduler) evaluates the expression in the scheduler's time zone, UTC on a
# stock Kubeflow install; these helpers compute in UTC. croniter is not a dependency, and this is
# the small part of it ctrflow needs: field sets, and a day-by-day search.

_SECONDS = _Field("second", 0, 59)
_DESCRIPTOR_FIELDS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_SEARCH_DAYS = 366 * 8  # a 29 February that only a leap year divisible by 400 has is out of range


def _expand(token: str, field: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in token.split(","):
        _check_range(part, field, expression)
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span in ("*", "?"):
            first, last = field.low, field.high
        else:
            start, dash, end = span.partition("-")
            first = _value(start, field, expression)
            last = _value(end, field, expression) if dash else (field.high if step_text else first)
        values.update(range(first, last + 1, step))
    return frozenset(values)


def next_run(kfp_cron: str, after: datetime.datetime) -> datetime.datetime | None:
    """The first time strictly after ``after`` (UTC) that the 6-field KFP cron fires, or None
    if it never does within eight years (e.g. 30 February)."""
    text = " ".join(kfp_cron.split()).lower()
    text = _DESCRIPTOR_FIELDS.get(text, text)
    tokens = text.split(" ")
    if len(tokens) != 6:
        raise CronError(f"KFP cron {kfp_cron!r} has {len(tokens)} fields; expected 6")
    fields = (_SECONDS, *_FIELDS)
    seconds, minutes, hours, days, months, weekdays = (
        _expand(token, field, text) for token, field in zip(tokens, fields, strict=True)
    )
    # Vixie/robfig rule: when both day fields are restricted, either one matching is enough.
    either_day = not tokens[3].startswith(("*", "?")) and not tokens[5].startswith(("*", "?"))
    start = after.astimezone(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=1)
    day = start.date()
    for _ in range(_SEARCH_DAYS):
        dom, dow = day.day in days, (day.isoweekday() % 7) in weekdays
        if day.month in months and ((dom or dow) if either_day else (dom and dow)):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    for second in sorted(seconds):
                        moment = datetime.datetime.combine(
                            day, datetime.time(hour, minute, second), datetime.UTC
                        )
                        if moment >= start:
                            return moment
        day += datetime.timedelta(days=1)
    return None
