"""5-field cron in, KFP's 6-field (seconds first) cron out; invalid expressions named clearly."""

from __future__ import annotations

import pytest

from ctrflow.pipelines.runs.cron import CronError, to_kfp_cron


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0 3 * * 1", "0 0 3 * * 1"),
        ("  30   4 1,15 * *  ", "0 30 4 1,15 * *"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("0 22 * * 1-5", "0 0 22 * * 1-5"),
        ("0 6 ? * MON", "0 0 6 ? * MON"),
        ("5 4 * jan-mar sun", "0 5 4 * jan-mar sun"),
        ("0 0 1 */3 *", "0 0 0 1 */3 *"),
        ("10-50/10 2 * * 0", "0 10-50/10 2 * * 0"),
        ("@weekly", "@weekly"),
        ("@Daily", "@daily"),
    ],
)
def test_converts_to_six_fields(given: str, expected: str) -> None:
    assert to_kfp_cron(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "empty cron expression"),
        ("0 3 * *", "has 4 fields; expected 5"),
        ("0 0 3 * * 1", "has 6 fields; expected 5: minute hour day-of-month month day-of-week (it"),
        ("60 3 * * 1", "minute field: 60 in '60 3 * * 1' is outside 0-59"),
        ("0 24 * * 1", "hour field: 24"),
        ("0 3 0 * *", "day of month field: 0"),
        ("0 3 * 13 *", "month field: 13"),
        ("0 3 * * 7", "use 0"),
        ("0 3 * * mon-fry", "day of week field: 'fry' is not a number"),
        ("0 3 * * 5-1", "range '5-1' in '0 3 * * 5-1' runs backwards"),
        ("*/0 3 * * *", "step '0'"),
        ("*/ 3 * * *", "step ''"),
        ("0 3 * * 1,", "empty value"),
        ("0 ? * * *", "'?' is allowed only for the day fields"),
        ("@fortnightly", "unknown cron descriptor '@fortnightly'"),
        ("0 3 * * L", "'L' is not a number"),
    ],
)
def test_rejects_invalid(given: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        to_kfp_cron(given)
    assert message in str(info.value)
