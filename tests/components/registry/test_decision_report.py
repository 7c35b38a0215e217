"""The promotion decision as Markdown, rendered as the KFP UI renders it (CommonMark with GFM
tables; markdown-it-py, installed with rich). register's own copy is checked against the
version tags in test_register."""

from __future__ import annotations

from typing import Any

import pytest
from markdown_it import MarkdownIt

from ctrflow.components.registry.decision_report import decision_markdown

_MD = MarkdownIt("commonmark").enable("table")


def _decision(**changes: Any) -> dict[str, Any]:
    base = {
        "model_name": "ctr-ffm",
        "version": "7",
        "promoted": False,
        "reason": "champion kept: test logloss 0.450000 is not lower than champion version 6's "
        "0.440000 by at least the margin 0.001 (difference -0.010000)",
        "previous_champion": "6",
        "champion": "6",
        "challenger_logloss": 0.45,
        "champion_logloss": 0.44,
        "margin": 0.001,
        "compared_on": "test dataset, same feature spec (750 rows)",
        "decided_at": "2026-12-07T02:00:00.000+00:00",
        "attempts": 1,
        "stage_mirrored": False,
        "challenger_auc": 0.71,
        "champion_auc": 0.73,
    }
    return {**base, **changes}


def _render(decision: dict[str, Any], tracking_uri: str = "sqlite:///m.db") -> str:
    return decision_markdown(
        model_name="ctr-ffm", version="7", run_id="abc123", experiment_id="4",
        model_uri="models:/ctr-ffm/7", decision=decision, challenger_test_logloss=0.451,
        challenger_test_auc=0.709, tracking_uri=tracking_uri, pipeline_run_id="run-9",
    )  # fmt: skip


def _table_rows(markdown: str) -> list[list[str]]:
    """The rows of every rendered table, as the texts the cells show (header rows included)."""
    rows: list[list[str]] = []
    row: list[str] | None = None
    cell: str | None = None
    for token in _MD.parse(markdown):
        if token.type == "tr_open":
            row = []
        elif token.type in ("td_open", "th_open"):
            cell = ""
        elif token.type == "inline" and cell is not None:
            cell += "".join(child.content for child in token.children or ())  # as rendered
        elif token.type in ("td_close", "th_close") and row is not None and cell is not None:
            row.append(cell)
            cell = None
        elif token.type == "tr_close" and row is not None:
            rows.append(row)
    return rows


def test_kept_champion_names_decision_numbers_and_ids() -> None:
    markdown = _render(_decision())
    assert markdown.splitlines()[0] == "# Promotion of ctr-ffm version 7: kept_champion"
    assert "**Decision:** `kept_champion`: champion stays version 6." in markdown
    assert _decision()["reason"] in markdown
    rows = _table_rows(markdown)
    assert ["challenger", "7", "0.450000", "0.7100"] in rows
    assert ["champion", "6", "0.440000", "0.7300"] in rows
    assert ["champion after", "6"] in rows and ["pipeline run", "run-9"] in rows
    assert ["model", "models:/ctr-ffm/7"] in rows
    assert "Logloss gain -0.010000" in markdown and "margin 0.001" in markdown
    assert "http" not in markdown  # a local store has no UI to link to


def test_promotion_with_links_to_an_mlflow_server() -> None:
    decision = _decision(promoted=True, champion="7", reason="test logloss beats it")
    markdown = _render(decision, "https://mlflow.example.org/")
    assert "**Decision:** `promoted`: version 7 is the new champion." in markdown
    html = _MD.render(markdown)
    assert 'href="https://mlflow.example.org/#/experiments/4/runs/abc123"' in html
    assert 'href="https://mlflow.example.org/#/models/ctr-ffm/versions/7"' in html


@pytest.mark.parametrize(
    "uri", ["https://user:secret@mlflow.example.org", "file:///tmp/mlruns", "databricks"]
)
def test_no_link_for_credentials_or_local_stores(uri: str) -> None:
    markdown = _render(_decision(), uri)
    assert "secret" not in markdown and "](" not in markdown


def test_first_version_and_a_reason_with_table_breaking_text() -> None:
    first = _decision(
        promoted=True, previous_champion=None, champion="7", champion_logloss=None,
        champion_auc=None, reason="no champion yet",
    )  # fmt: skip
    markdown = _render(first)
    assert "There was no champion: the first version is promoted." in markdown
    assert ["champion before", "none"] in _table_rows(markdown)
    # A champion that could not be scored: its error text may hold | and newlines.
    broken = _decision(champion_logloss=None, reason="champion kept: bad | model\nline two")
    rows = _table_rows(_render(broken))
    assert all(len(row) == 2 for row in rows)  # no comparison table, no broken rows
    assert "bad \\| model line two" in _render(broken)
