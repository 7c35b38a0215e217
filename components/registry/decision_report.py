"""register's promotion decision as Markdown (the KFP UI renders a ``Markdown`` artifact).

Challenger against champion on the rows the gate compared them on, the margin, the decision word
(the same as tag ``ctrflow.promotion.decision`` on the version and the run), the reason, and where
to find both in MLflow: ids always, links when the tracking URI is an MLflow server's.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from ctrflow.components.names import DECISION_KEPT, DECISION_PROMOTED

__all__ = ["decision_markdown"]


def _num(value: float | None, digits: int = 6) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    """Table cells and list items hold free text (reasons, errors): no row or cell breaks."""
    return " ".join(text.replace("|", "\\|").split())


def _server_url(tracking_uri: str) -> str | None:
    """The MLflow UI's base URL, or None for a local store (sqlite, file) or a URI with
    credentials (which never goes into an artifact)."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return None
    return tracking_uri.rstrip("/")


def decision_markdown(
    *,
    model_name: str,
    version: str,
    run_id: str,
    experiment_id: str,
    model_uri: str,
    decision: Mapping[str, Any],
    challenger_test_logloss: float,
    challenger_test_auc: float,
    tracking_uri: str,
    pipeline_run_id: str = "",
) -> str:
    """``decision``: ``PromotionDecision.to_dict()``; the challenger numbers are evaluate's."""
    promoted = bool(decision["promoted"])
    word = DECISION_PROMOTED if promoted else DECISION_KEPT
    previous = decision.get("previous_champion")
    champion = decision.get("champion")
    headline = (
        f"version {version} is the new champion"
        if promoted
        else f"champion stays version {champion}"
    )
    lines = [
        f"# Promotion of {model_name} version {version}: {word}",
        "",
        f"**Decision:** `{word}`: {headline}.",
        "",
        f"**Reason:** {_cell(str(decision['reason']))}",
        "",
    ]
    if previous is not None and decision.get("champion_logloss") is not None:
        ll_c, ll_p = decision["challenger_logloss"], decision["champion_logloss"]
        auc_c, auc_p = decision.get("challenger_auc"), decision.get("champion_auc")
        lines += [
            f"Compared on {_cell(str(decision.get('compared_on', '')))}:",
            "",
            "| | version | test logloss | test AUC |",
            "|---|---|---:|---:|",
            f"| challenger | {version} | {_num(ll_c)} | {_num(auc_c, 4)} |",
            f"| champion | {previous} | {_num(ll_p)} | {_num(auc_p, 4)} |",
            "",
            f"Logloss gain {ll_p - ll_c:+.6f} (champion minus challenger); promotion needs a gain "
            f"> 0 and >= the margin {decision['margin']}.",
            "",
        ]
    elif previous is None:
        lines += ["There was no champion: the first version is promoted.", ""]
    lines += [
        f"Challenger on this run's test set: logloss {_num(challenger_test_logloss)}, "
        f"AUC {_num(challenger_test_auc, 4)}.",
        "",
        "| | |",
        "|---|---|",
        f"| champion before | {previous or 'none'} |",
        f"| champion after | {champion or 'none'} |",
        f"| model | `{model_uri}` |",
        f"| MLflow run | `{run_id}` (experiment {experiment_id}) |",
        f"| decided at | {decision.get('decided_at', '')} |",
    ]
    if pipeline_run_id:
        lines.append(f"| pipeline run | `{pipeline_run_id}` |")
    base = _server_url(tracking_uri)
    if base is not None:
        name = urllib.parse.quote(model_name, safe="")
        lines += [
            "",
            f"[MLflow run]({base}/#/experiments/{experiment_id}/runs/{run_id}) · "
            f"[model version]({base}/#/models/{name}/versions/{version})",
        ]
    return "\n".join(lines) + "\n"
