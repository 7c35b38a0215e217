"""Promotion gate: alias ``champion`` moves to a new model version only if it is better.

The current champion is scored on the same test set as the challenger: on the prepared test
Dataset when both use the same fitted feature spec (same feature ids), otherwise on the raw test
rows through each model's own pyfunc (spec + model, the served path). The challenger is promoted
only if its test logloss is lower than the champion's by at least ``margin``; otherwise the
champion stays and the reason is written on the challenger's version. A champion that cannot be
scored (another spec and no raw rows, a broken or foreign model) also stays, with the reason.

History (MLflow keeps none): every decision is written as ``ctrflow.promotion.*`` tags on the
challenger's version; a promotion adds ``ctrflow.champion.since`` / ``.previous_version`` on the
new champion and ``ctrflow.champion.until`` / ``.replaced_by`` on the one it replaced.
``ctrflow model rollback`` (``rollback``) records its moves on the registered model instead
(``_rollback_records``: a version can serve more than once); ``promotion_history`` puts both on
one timeline, each stint lasting until the next begins.

Concurrency: the decision and the alias move happen under a registry lock (``_registry_lock``),
and under the lock the champion is read again: if it moved since it was scored (another pipeline
promoted meanwhile), the lock is released and the new champion is scored before deciding. After
setting the alias it is read back. A failure after the alias moved puts it back where it was.

Killed steps (SIGKILL, OOM, a lost node) run no cleanup, so every write keeps the record true and
the decision word comes last: ``pending`` from the version's creation; ``kept_champion`` after the
details; for a promotion the intent ``promoting`` (details and timestamp), then the alias move,
which is the commit point, then the history tags (``since`` = the intent's timestamp), then
``promoted``. The next register run, holding the lock, completes an intent whose alias moved (the
gate had decided it and the model was serving), marks failed an intent whose alias had not moved
and the pending versions of dead runs (``repair_interrupted``); ``promotion_history`` reads an
intent whose alias moved as done. So "a failed step leaves the previous champion" holds for every
failure before the commit point and for every exception after it (the alias is put back); a kill
after the commit point is recorded as the promotion it was.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from ctrflow.components.data.fingerprint import spec_fingerprint
from ctrflow.components.names import (
    CHAMPION_ALIAS,
    DECISION_FAILED,
    DECISION_KEPT,
    DECISION_PENDING,
    DECISION_PROMOTED,
    DECISION_PROMOTING,
    LEGACY_STAGE,
    TAG_PROMOTION_DECISION,
    read_decision,
)
from ctrflow.components.names import TAG_CHAMPION_PREVIOUS as TAG_PREVIOUS
from ctrflow.components.names import TAG_CHAMPION_REPLACED_BY as TAG_REPLACED_BY
from ctrflow.components.names import TAG_CHAMPION_SINCE as TAG_SINCE
from ctrflow.components.names import TAG_CHAMPION_UNTIL as TAG_UNTIL
from ctrflow.components.names import TAG_PROMOTION as TAG
from ctrflow.components.registry._registry_lock import RegistryLock
from ctrflow.components.registry._rollback_records import (
    STATE_DONE,
    STATE_ROLLING_BACK,
    read_records,
    settle_interrupted,
)
from ctrflow.components.registry.margin import check_margin
from ctrflow.components.registry.model_names import name_filter
from ctrflow.components.registry.run_heartbeat import ORPHAN_AFTER, is_dead
from ctrflow.components.registry.serving_model import CtrModel
from ctrflow.components.training.evaluate import logloss

if TYPE_CHECKING:
    import ffm_ext

__all__ = [
    "PromotionConflictError",
    "PromotionDecision",
    "champion_version",
    "download_version",
    "promote",
    "promotion_history",
    "record_failure",
    "registered_model_exists",
    "repair_interrupted",
    "verify_champion",
]

_log = logging.getLogger(__name__)
Event = Callable[[str], None]
# MLflow loads a "models from code" model through a module-level global (set_model): two threads
# loading at once could swap their models.
_LOAD_LOCK = threading.Lock()


class PromotionConflictError(RuntimeError):
    """Alias champion did not point at the promoted version right after it was set."""


@dataclass(frozen=True)
class _Score:
    """Champion and challenger on one test set, or why they could not be compared."""

    champion_logloss: float | None = None
    challenger_logloss: float | None = None
    compared_on: str = ""
    problem: str = ""
    # Shown with the decision, not decided on: the gate compares logloss only.
    champion_auc: float | None = None
    challenger_auc: float | None = None


@dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    version: str
    promoted: bool
    reason: str
    previous_champion: str | None  # champion when the decision was taken
    champion: str | None  # champion after the decision
    challenger_logloss: float | None
    champion_logloss: float | None
    margin: float
    compared_on: str
    decided_at: str
    attempts: int
    stage_mirrored: bool = False
    challenger_auc: float | None = None  # on the same rows as the logloss values
    champion_auc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def champion_version(client: Any, model_name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if (
            exc.error_code == "RESOURCE_DOES_NOT_EXIST"
            or f"alias {CHAMPION_ALIAS} not found" in str(exc)
        ):
            return None
        raise


def verify_champion(client: Any, model_name: str, version: str) -> None:
    """Read alias champion back right after setting it (MLflow has no compare-and-set on
    aliases): PromotionConflictError when another writer moved it without the lock."""
    seen = champion_version(client, model_name)
    if seen != version:
        raise PromotionConflictError(
            f"alias {CHAMPION_ALIAS!r} of {model_name!r} points at version {seen} right after "
            f"being set to {version}: something moved it without the promotion lock"
        )


def registered_model_exists(client: Any, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def download_version(
    client: Any, tracking_uri: str, model_name: str, version: str, dst: str
) -> str:
    """Download a model version's files; returns the local directory.

    Not through a ``models:/`` URI: MLflow resolves those with the process-wide registry URI,
    whatever ``registry_uri`` it is given, so it could read another registry than ``client``'s.
    """
    import mlflow

    source = client.get_model_version_download_uri(model_name, version)
    local: str = mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=dst, tracking_uri=tracking_uri
    )
    return local


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """None where AUC is undefined (one label only): it is reported, never decided on."""
    if np.unique(labels).size < 2:
        return None
    return float(roc_auc_score(labels, scores))


def _load_version(
    client: Any, tracking_uri: str, model_name: str, version: str, workdir: str
) -> Any:
    """The pyfunc of a version. Download errors (network, server) propagate: the step fails
    and is retried, the champion untouched. A model that downloads but does not load is
    returned as the error message (a broken champion must not block every later challenger)."""
    import mlflow

    local = download_version(client, tracking_uri, model_name, version, workdir)
    try:
        with _LOAD_LOCK:
            return mlflow.pyfunc.load_model(local)
    except Exception as exc:  # foreign flavour, missing package, corrupt file
        return f"champion version {version} could not be loaded: {str(exc).splitlines()[0]}"


def _score_champion(
    *,
    client: Any,
    tracking_uri: str,
    model_name: str,
    version: str,
    challenger: CtrModel,
    challenger_logloss: float,
    challenger_auc: float | None,
    test: ffm_ext.Dataset,
    test_raw: pd.DataFrame | None,
) -> _Score:
    with tempfile.TemporaryDirectory(prefix="ctrflow-champion-") as workdir:
        loaded = _load_version(client, tracking_uri, model_name, version, workdir)
        if isinstance(loaded, str):
            return _Score(problem=loaded)
        try:
            inner = loaded.unwrap_python_model()
        except Exception:  # not a python_model flavour: only its predict() is usable
            inner = None
        labels = np.asarray(test.labels, dtype=np.float64)
        if isinstance(inner, CtrModel) and spec_fingerprint(inner.spec) == spec_fingerprint(
            challenger.spec
        ):
            scores = inner.model.predict(test)
            return _Score(
                champion_logloss=logloss(labels, scores),
                challenger_logloss=challenger_logloss,
                compared_on=f"test dataset, same feature spec ({test.n_rows} rows)",
                champion_auc=_auc(labels, scores),
                challenger_auc=challenger_auc,
            )
        if test_raw is None:
            return _Score(
                problem=(
                    f"champion version {version} uses another feature spec and no raw test rows "
                    "were given to score both models on"
                )
            )
        label = challenger.spec.spec.label
        features = test_raw[list(challenger.spec.raw_columns)]
        raw_labels = test_raw[label].to_numpy(dtype=np.float64)
        try:
            champion_scores = np.asarray(loaded.predict(features), dtype=np.float64).reshape(-1)
        except Exception as exc:  # its spec may want other columns, or reject these rows
            return _Score(
                problem=(
                    f"champion version {version} could not score the raw test rows: "
                    f"{str(exc).splitlines()[0]}"
                )
            )
        challenger_scores = np.asarray(challenger.predict(None, features), dtype=np.float64)
        return _Score(
            champion_logloss=logloss(raw_labels, champion_scores),
            challenger_logloss=logloss(raw_labels, challenger_scores),
            compared_on=f"raw test rows through each model's feature spec ({len(features)} rows)",
            champion_auc=_auc(raw_labels, champion_scores),
            challenger_auc=_auc(raw_labels, challenger_scores),
        )


def _decide(
    champion: str | None, score: _Score | None, challenger_logloss: float, margin: float
) -> tuple[bool, str]:
    if champion is None:
        return True, "no champion yet"
    assert score is not None
    if score.problem:
        return False, f"champion kept: {score.problem}"
    assert score.champion_logloss is not None and score.challenger_logloss is not None
    gain = score.champion_logloss - score.challenger_logloss
    if gain > 0 and gain >= margin:
        return True, (
            f"test logloss {score.challenger_logloss:.6f} beats champion version {champion}'s "
            f"{score.champion_logloss:.6f} by {gain:.6f} (margin {margin})"
        )
    return False, (
        f"champion kept: test logloss {score.challenger_logloss:.6f} is not lower than champion "
        f"version {champion}'s {score.champion_logloss:.6f} by at least the margin {margin} "
        f"(difference {gain:+.6f})"
    )


def _set_tags(client: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, "" if value is None else str(value))


def _mirror_stage(client: Any, name: str, version: str) -> None:
    """``version`` to stage Production, every other Production version to Archived.

    Not ``archive_existing_versions=True``: with a PostgreSQL backend store the server's query
    compares the integer version column with a string and fails (MLflow 3.17).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated in MLflow 3
        client.transition_model_version_stage(name, version, LEGACY_STAGE)
        for other in client.search_model_versions(name_filter(name)):
            if other.current_stage == LEGACY_STAGE and str(other.version) != version:
                client.transition_model_version_stage(name, str(other.version), "Archived")


def _move_champion(
    client: Any,
    name: str,
    version: str,
    previous: str | None,
    decided_at: str,
    *,
    mirror_stage: bool,
    on_event: Event,
) -> bool:
    """Set the alias, read it back, write the history tags; undo the alias on any failure.
    The version already carries the intent (decision ``promoting``); the caller writes
    ``promoted`` once this returns."""
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    mirrored = False
    try:
        on_event("champion_set")
        verify_champion(client, name, version)
        _write_history(client, name, version, previous, decided_at)
        if mirror_stage:
            _mirror_stage(client, name, version)
            mirrored = True
        on_event("history_written")
    except BaseException as exc:
        if not isinstance(exc, PromotionConflictError):
            _roll_back(client, name, version, previous, mirrored)
        raise
    return mirrored


def _alias_may_be_on(client: Any, name: str, version: str) -> bool:
    try:
        return champion_version(client, name) == version
    except Exception:
        return True


def _history_tags(version: str, previous: str | None, since: str) -> dict[str, dict[str, str]]:
    """Tags per version that record ``version`` serving from ``since`` after ``previous``."""
    tags = {version: {TAG_SINCE: since, TAG_PREVIOUS: previous or "none"}}
    if previous is not None:
        tags[previous] = {TAG_UNTIL: since, TAG_REPLACED_BY: version}
    return tags


def _write_history(client: Any, name: str, version: str, previous: str | None, since: str) -> None:
    for target, tags in _history_tags(version, previous, since).items():
        _set_tags(client, name, target, tags)


def _roll_back(client: Any, name: str, version: str, previous: str | None, mirrored: bool) -> None:
    """Best effort: alias (and stage) back to the previous champion, history tags removed."""
    try:
        if champion_version(client, name) == version:
            if previous is None:
                client.delete_registered_model_alias(name, CHAMPION_ALIAS)
            else:
                client.set_registered_model_alias(name, CHAMPION_ALIAS, previous)
        for key in (TAG_SINCE, TAG_PREVIOUS):
            client.delete_model_version_tag(name, version, key)
        if previous is not None:
            for key in (TAG_UNTIL, TAG_REPLACED_BY):
                client.delete_model_version_tag(name, previous, key)
            if mirrored:
                _mirror_stage(client, name, previous)
    except Exception:
        _log.critical(
            "could not roll alias %r of %s back to version %s after a failed promotion of "
            "version %s: fix it by hand",
            CHAMPION_ALIAS, name, previous, version, exc_info=True,
        )  # fmt: skip


def promote(
    *,
    client: Any,
    tracking_uri: str,
    model_name: str,
    version: str,
    challenger: CtrModel,
    challenger_logloss: float,
    test: ffm_ext.Dataset,
    test_raw: pd.DataFrame | None = None,
    challenger_auc: float | None = None,
    margin: float = 0.0,
    mirror_stage: bool = False,
    lock_ttl: float = 300.0,
    lock_wait: float = 600.0,
    max_attempts: int = 5,
    orphan_after: float = ORPHAN_AFTER,
    on_event: Event | None = None,
) -> PromotionDecision:
    """Decide and apply; see the module docstring. ``challenger_logloss`` (and ``_auc``, which
    is only reported) is the challenger's on ``test`` (from evaluate); ``test_raw`` holds the raw
    test rows with labels."""
    try:
        check_margin(margin)
    except ValueError as exc:
        raise ValueError(f"margin {exc}") from None
    event = on_event or (lambda _name: None)
    version = str(version)
    lock = RegistryLock(client, model_name, ttl=lock_ttl, wait=lock_wait)
    for attempt in range(1, max_attempts + 1):
        current = champion_version(client, model_name)
        score = None
        if current is not None and current != version:
            score = _score_champion(
                client=client, tracking_uri=tracking_uri, model_name=model_name, version=current,
                challenger=challenger, challenger_logloss=challenger_logloss,
                challenger_auc=challenger_auc, test=test, test_raw=test_raw,
            )  # fmt: skip
        event("champion_scored")
        with lock:
            event("lock_acquired")
            # What a killed step left is set right under the lock, before anything is decided.
            repair_interrupted(client, model_name, exclude=version, orphan_after=orphan_after)
            now_current = champion_version(client, model_name)
            if now_current != current:
                _log.info(
                    "champion moved from version %s to %s while it was scored: scoring again",
                    current, now_current,
                )  # fmt: skip
                continue
            if not lock.held:  # the registry stalled for a whole ttl since we took the lock
                raise RuntimeError(
                    f"the promotion lock of {model_name!r} expired before the decision; "
                    f"version {version} was not promoted (champion left as it is)"
                )
            if current == version:
                promoted, reason = False, "already champion"
            else:
                promoted, reason = _decide(current, score, challenger_logloss, margin)
            decision = PromotionDecision(
                model_name=model_name,
                version=version,
                promoted=promoted,
                reason=reason,
                previous_champion=current,
                champion=version if promoted else current,
                challenger_logloss=(score.challenger_logloss if score else challenger_logloss),
                champion_logloss=score.champion_logloss if score else None,
                margin=margin,
                compared_on=score.compared_on if score else "",
                decided_at=_now(),
                attempts=attempt,
                challenger_auc=score.challenger_auc if score else challenger_auc,
                champion_auc=score.champion_auc if score else None,
            )
            if not promoted:
                _set_tags(client, model_name, version, _decision_tags(decision, DECISION_KEPT))
                event("decided")
            else:
                # The intent first: a step killed from here on leaves "promoting", which the
                # next run completes (alias moved) or marks failed (alias not moved).
                intent = _decision_tags(decision, DECISION_PROMOTING, mirror_stage=mirror_stage)
                _set_tags(client, model_name, version, intent)
                event("decided")
                if not lock.held:  # the lease lapsed while the intent was written
                    raise RuntimeError(
                        f"the promotion lock of {model_name!r} lapsed before alias "
                        f"{CHAMPION_ALIAS!r} moved; version {version} was not promoted"
                    )
                try:
                    mirrored = _move_champion(
                        client, model_name, version, current, decision.decided_at,
                        mirror_stage=mirror_stage, on_event=event,
                    )  # fmt: skip
                    _set_tags(
                        client, model_name, version, {TAG_PROMOTION_DECISION: DECISION_PROMOTED}
                    )
                except BaseException as exc:
                    record_failure(client, model_name, version, exc)  # not promoted after all
                    raise
                decision = dataclasses.replace(decision, stage_mirrored=mirrored)
            _log.info("version %s of %s: %s", version, model_name, reason)
            return decision
    raise RuntimeError(
        f"alias {CHAMPION_ALIAS!r} of {model_name!r} moved on each of {max_attempts} attempts "
        f"to score it; version {version} was not promoted (champion left as it is)"
    )


def _decision_tags(
    decision: PromotionDecision, outcome: str, *, mirror_stage: bool = False
) -> dict[str, Any]:
    """The decision record; the decision word comes last, so a version whose decision reads
    kept or promoting has all the other tags (they are written one call each)."""
    return {
        f"{TAG}reason": decision.reason[:4900],  # MLflow caps tag values at 5000 characters
        f"{TAG}decided_at": decision.decided_at,
        f"{TAG}champion_version": decision.previous_champion or "none",
        f"{TAG}challenger_test_logloss": decision.challenger_logloss,
        f"{TAG}champion_test_logloss": decision.champion_logloss,
        f"{TAG}margin": decision.margin,
        f"{TAG}compared_on": decision.compared_on,
        f"{TAG}mirror_stage": str(mirror_stage).lower(),
        TAG_PROMOTION_DECISION: outcome,
    }


def _previous(tags: dict[str, str]) -> str | None:
    previous = tags.get(f"{TAG}champion_version", "none")
    return None if previous == "none" else previous


def repair_interrupted(
    client: Any, model_name: str, *, exclude: str = "", orphan_after: float = ORPHAN_AFTER
) -> list[tuple[str, str]]:
    """Set right what killed register steps left on the versions; call it holding the lock.

    - ``promoting`` (the intent) with alias champion on the version: the alias move was the
      commit point, so the promotion is completed (history tags, stage if asked, ``promoted``);
    - ``promoting`` with the alias elsewhere: the alias never moved, so ``failed``;
    - ``pending`` whose run is dead (ended, or no heartbeat for ``orphan_after``): ``failed``.
      A pending version of a live run is another pipeline on its way to the lock: left alone;
    - a rollback intent (``_rollback_records``): done if the alias is on its target, else failed.
    Returns (version, what was done) pairs.
    """
    champion = champion_version(client, model_name)
    done = settle_interrupted(client, model_name, champion)
    for v in client.search_model_versions(name_filter(model_name)):
        version, tags = str(v.version), dict(v.tags or {})
        state = tags.get(TAG_PROMOTION_DECISION)
        if version == exclude or state not in (DECISION_PROMOTING, DECISION_PENDING):
            continue
        if state == DECISION_PROMOTING and champion == version:
            _write_history(client, model_name, version, _previous(tags), tags[f"{TAG}decided_at"])
            if tags.get(f"{TAG}mirror_stage") == "true":
                _mirror_stage(client, model_name, version)
            _set_tags(client, model_name, version, {TAG_PROMOTION_DECISION: DECISION_PROMOTED})
            _set_run_decision(client, v.run_id, version, DECISION_PROMOTED, tags[f"{TAG}reason"])
            done.append((version, "promotion completed"))
        elif state == DECISION_PROMOTING:
            reason = (
                f"register step stopped after deciding to promote, before alias "
                f"{CHAMPION_ALIAS!r} moved; champion stayed version {champion}"
            )
            _mark_failed(client, model_name, version, v.run_id, reason)
            done.append((version, "failed: alias had not moved"))
        elif is_dead(client.get_run(v.run_id), orphan_after):
            reason = "register step stopped before the promotion gate decided"
            _mark_failed(client, model_name, version, v.run_id, reason)
            done.append((version, "failed: undecided"))
    for version, what in done:
        _log.warning(
            "version %s of %s, left by a stopped register step: %s", version, model_name, what
        )
    return done


def _set_run_decision(
    client: Any, run_id: str | None, version: str, outcome: str, reason: str
) -> None:
    if run_id:
        client.set_tag(run_id, "ctrflow.model_version", version)
        client.set_tag(run_id, f"{TAG}reason", reason[:4900])
        client.set_tag(run_id, TAG_PROMOTION_DECISION, outcome)


def _mark_failed(client: Any, name: str, version: str, run_id: str | None, reason: str) -> None:
    _set_tags(client, name, version, {f"{TAG}reason": reason, f"{TAG}decided_at": _now(),
                                      TAG_PROMOTION_DECISION: DECISION_FAILED})  # fmt: skip
    _set_run_decision(client, run_id, version, DECISION_FAILED, reason)


def record_failure(client: Any, model_name: str, version: str, error: BaseException) -> None:
    """Mark a version whose registration failed after it was created (best effort)."""
    if _alias_may_be_on(client, model_name, version):
        # The alias could not be put back (or where it is is unknown): "failed" would be false.
        # The intent stays, and the next run completes or fails it by where the alias is.
        _log.critical("alias %r of %s may still be on version %s after a failure: left to the "
                      "next register run", CHAMPION_ALIAS, model_name, version)  # fmt: skip
        return
    try:
        _set_tags(
            client,
            model_name,
            version,
            {
                f"{TAG}reason": f"{type(error).__name__}: {str(error)[:4000]}",
                f"{TAG}decided_at": _now(),
                TAG_PROMOTION_DECISION: DECISION_FAILED,
            },
        )
    except Exception:
        _log.warning("could not tag failed version %s of %s", version, model_name, exc_info=True)


def promotion_history(client: Any, model_name: str) -> list[dict[str, Any]]:
    """Every stint as champion, oldest first: the promotions (version tags) and the rollbacks
    (``_rollback_records``) on one timeline; each stint lasts until the next one starts, so a
    version rolled back to appears once per stint.

    A promotion whose step was killed after alias champion moved but before its history tags
    were written (decision ``promoting``, alias on the version) is shown as it will be recorded
    by the next register run: the alias is what serves. So is a rollback killed likewise."""
    versions = {str(v.version): dict(v.tags or {}) for v in client.search_model_versions(
        name_filter(model_name)
    )}  # fmt: skip
    champion = champion_version(client, model_name)
    if champion in versions and versions[champion].get(TAG_PROMOTION_DECISION) == (
        DECISION_PROMOTING
    ):
        tags = versions[champion]
        completion = _history_tags(champion, _previous(tags), tags[f"{TAG}decided_at"])
        for version, missing in completion.items():
            if version in versions:
                versions[version] = {**missing, **versions[version]}
    stints = [
        _stint(version, tags, kind="promotion", since=tags[TAG_SINCE],
               previous=tags.get(TAG_PREVIOUS), reason=tags.get(f"{TAG}reason"))
        for version, tags in versions.items()
        if TAG_SINCE in tags
    ]  # fmt: skip
    records = read_records(dict(client.get_registered_model(model_name).tags or {}))
    for record in records:
        in_flight = record.state == STATE_ROLLING_BACK and record is records[-1]
        if record.state == STATE_DONE or (in_flight and champion == record.to_version):
            stint = _stint(record.to_version, versions.get(record.to_version, {}),
                           kind="rollback", since=record.at, previous=record.from_version,
                           reason=record.summary())  # fmt: skip
            stints.append({**stint, "by": record.by, "forced": record.forced})
    stints.sort(key=lambda entry: _moment(entry["since"]))
    for stint, following in itertools.pairwise(stints):
        stint["until"], stint["replaced_by"] = following["since"], following["version"]
    return stints


def _stint(
    version: str,
    tags: dict[str, str],
    *,
    kind: str,
    since: str,
    previous: str | None,
    reason: str | None,
) -> dict[str, Any]:
    return {
        "version": version,
        "kind": kind,
        "since": since,
        "until": None,
        "previous_version": previous,
        "replaced_by": None,
        "test_logloss": tags.get(f"{TAG}challenger_test_logloss"),
        "previous_test_logloss": (
            tags.get(f"{TAG}champion_test_logloss") if kind == "promotion" else None
        ),
        "reason": reason,
        "decision": read_decision(tags.get(TAG_PROMOTION_DECISION)),
        "by": None,
        "forced": False,
    }


def _moment(stamp: str) -> tuple[dt.datetime, str]:
    """Sort key of a history timestamp; one that does not parse sorts first, not in error."""
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC), stamp
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)), stamp
