"""Plumbing step of the pipeline: fill the data URI template from the run's date.

``schedule_time`` is KFP's ``{{$.pipeline_job_schedule_time_utc}}``, passed as a whole value (the
backend replaces placeholders only so): a recurring run's scheduled time, a one-off run's
creation time. kfp.local leaves it unreplaced, so a local run passes ``data_date`` instead
(`ctrflow run --data-date`, default today). A URI without a template passes through unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["data_window_component"]


def data_window_component(
    data_uri: str, data_date: str, schedule_time: str
) -> NamedTuple("Outputs", [("data_uris", list), ("window", dict)]):  # type: ignore[valid-type]  # fmt: skip
    """KFP step. ``data_uris``: what prepare-data reads, one URI, or one per day of a range (a
    list parameter, in day order). ``window``: what register records as MLflow params (the
    template, the date, the window's first day and the day after its last, the URI count)."""
    from collections import namedtuple

    from ctrflow.pipelines.runs.data_window import is_template, parse_date, render

    outputs = namedtuple("outputs", ["data_uris", "window"])
    if not is_template(data_uri):
        return outputs([data_uri], {"data_uri": data_uri, "data_uri_count": "1"})
    if data_date:
        date = parse_date(data_date)
    elif schedule_time and "{{" not in schedule_time:
        date = parse_date(schedule_time)
    else:
        raise ValueError(
            f"data_uri {data_uri!r} is a template, but this run has no date: the runner did not "
            "fill the schedule time; set the run parameter data_date (ctrflow run --data-date)"
        )
    window = render(data_uri, date)
    print(
        f"data window {window.start}..{window.end} (end excluded), {len(window.uris)} URI(s): "
        + " ".join(window.uris)
    )
    return outputs(list(window.uris), window.params(data_uri))
