"""`ctrflow model rollback|history` against a real `mlflow server` (SQLite backend store, and the
story once more with the PostgreSQL fixture as backend store), on versions made by the real
register step: what may be rolled back to, what a refusal leaves (nothing), the history with the
rollback's who/when/why, a register step holding the registry lock meanwhile, and a rollback
SIGKILLed half-way settled by the next holder of the lock.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
import warnings
from typing import Any

import pytest
from mlflow import MlflowClient

from ctrflow.components.hpo.finalize_study import FinalizeResult
from ctrflow.components.names import TEST_KILL_AT_ENV
from ctrflow.components.registry.model_names import name_filter
from ctrflow.components.registry.promotion import promotion_history
from ctrflow.components.registry.register import RegisterResult
from ctrflow.components.registry.rollback import rollback
from ctrflow.pipelines.cli import main as cli_main
from tests.components.registry.conftest import Candidate
from tests.components.registry.test_register import _register, fail_at
from tests.testkit.ctr_data import Week

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def _snapshot(client: MlflowClient, name: str) -> Any:
    """Everything a rollback could write: model tags and aliases, each version's tags and stage,
    and the registered models that exist (the lock is one)."""
    model = client.get_registered_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        versions = {
            str(v.version): (dict(v.tags), v.current_stage)
            for v in client.search_model_versions(name_filter(name))
        }
    names = sorted(m.name for m in client.search_registered_models())
    return dict(model.tags), dict(model.aliases), versions, names


def _cli(uri: str, *args: str) -> int:
    return cli_main(["model", *args, "--mlflow-uri", uri])


@pytest.fixture(scope="module", params=["mlflow_server", "mlflow_server_postgres"])
def registry(request: pytest.FixtureRequest) -> str:
    uri: str = request.getfixturevalue(request.param)
    return uri


@pytest.fixture(scope="module")
def story(
    registry: str, week: Week, study: FinalizeResult, models: dict[str, Candidate]
) -> tuple[str, dict[str, RegisterResult]]:
    """v1 champion, v2 kept out by the gate, v3 failed, v4 champion (promoted over v1)."""
    name = f"ctr's-{uuid.uuid4().hex[:8]}"  # a quote: the lookups must quote it right
    runs = {"v1": _register(registry, name, week, study, models["mediocre"], mirror_stage=True)}
    runs["v2"] = _register(registry, name, week, study, models["worse"])
    with pytest.raises(RuntimeError, match="injected failure"):
        _register(registry, name, week, study, models["better"], on_event=fail_at("decided"))
    runs["v4"] = _register(registry, name, week, study, models["better"], mirror_stage=True)
    assert [r.version for r in runs.values()] == ["1", "2", "4"]
    assert (runs["v2"].promoted, runs["v4"].promoted) == (False, True)
    return name, runs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "4"], "version 4 of {name!r} is already champion"),
        (
            ["--to", "2"],
            "version 2 of {name!r} never served as champion (decision kept_champion); pass "
            "--force to make it champion anyway",
        ),
        (["--to", "3", "--force"], "version 3 of {name!r} has decision 'failed': its register"),
        (["--to", "9"], "{name!r} has no version 9"),
        (["--to", "x"], "version 'x' is not a model version number"),
        (["--to", "1", "--reason", "  "], "the reason is empty"),
        (["--to", "1", "--reason", "r" * 2001], "the reason is 2001 characters; at most 2000"),
        (["--to", "1", "--lock-wait", "-1"], "--lock-wait must be >= 0 seconds"),
    ],
)
def test_a_refused_rollback_is_one_line_exit_2_and_changes_nothing(
    story: tuple[str, dict[str, RegisterResult]], registry: str, args: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    name, _ = story
    client = MlflowClient(registry)
    before = _snapshot(client, name)
    reason = [] if "--reason" in args else ["--reason", "bad week"]
    assert _cli(registry, "rollback", name, *args, *reason) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ctrflow model rollback: {message.format(name=name)}"), err
    assert err.count("\n") == 1, err
    if "--lock-wait" not in args:  # refused by the registry's state, not by the parser
        assert err.endswith("; nothing changed\n"), err
    assert _snapshot(client, name) == before


def test_unknown_model_is_refused_and_not_created(
    registry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(registry, "rollback", "no-such-model", "--to", "1", "--reason", "x") == 2
    assert capsys.readouterr().err == (
        "ctrflow model rollback: no registered model 'no-such-model'; nothing changed\n"
    )
    assert _cli(registry, "history", "no-such-model") == 2
    assert capsys.readouterr().err == "ctrflow model history: no registered model 'no-such-model'\n"
    names = {m.name for m in MlflowClient(registry).search_registered_models()}
    assert not {n for n in names if n.startswith("no-such-model")}


def test_rollback_moves_the_alias_and_history_shows_who_when_why(
    story: tuple[str, dict[str, RegisterResult]], registry: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    name, runs = story
    client = MlflowClient(registry)
    assert _cli(registry, "rollback", name, "--to", "1", "--reason", "CTR dropped 8% on v4",
                "--by", "alice") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: champion rolled back from version 4 to 1 at ")
    assert out.rstrip().endswith("by alice (Production stage moved too)")
    assert _champion(client, name) == "1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        production = client.get_latest_versions(name, stages=["Production"])
    assert [v.version for v in production] == ["1"]
    # The version that served before, with --force the one the gate kept out.
    done = rollback(client, name, "2", "v1 too slow; try v2", by="bob", force=True)
    assert (done.from_version, done.to_version, done.forced) == ("1", "2", True)

    history = promotion_history(client, name)
    assert [(h["version"], h["kind"], h["previous_version"], h["replaced_by"], h["by"])
            for h in history] == [
        ("1", "promotion", "none", "4", None),
        ("4", "promotion", "1", "1", None),
        ("1", "rollback", "4", "2", "alice"),
        ("2", "rollback", "1", None, "bob"),
    ]  # fmt: skip
    assert history[2]["reason"] == "rollback from v4 to v1: CTR dropped 8% on v4"
    assert history[3]["reason"] == "rollback from v1 to v2: v1 too slow; try v2"
    assert history[3]["forced"] is True
    for earlier, later in itertools.pairwise(history):
        assert earlier["until"] == later["since"] and earlier["since"] < later["since"]
    assert history[-1]["until"] is None

    assert _cli(registry, "history", name) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[4].startswith("version 1: champion ") and printed[4].endswith(
        f"test logloss {float(runs['v1'].decision['challenger_logloss']):.6f}"
    )
    assert printed[5] == "  rollback from v4 to v1: CTR dropped 8% on v4 (by alice)"
    assert printed[6].startswith("version 2: champion ") and " .. now, " in printed[6]
    assert printed[7] == "  rollback from v1 to v2: v1 too slow; try v2 (by bob, forced)"
    # The older spelling reads the same history.
    assert cli_main(["registry", "history", "--model-name", name, "--mlflow-uri", registry]) == 0
    assert capsys.readouterr().out.splitlines() == printed


def test_next_register_scores_the_rolled_back_champion_and_history_stays_in_order(
    registry: str, week: Week, study: FinalizeResult, models: dict[str, Candidate]
) -> None:
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(registry)
    _register(registry, name, week, study, models["mediocre"])  # v1
    _register(registry, name, week, study, models["better"])  # v2 beats it
    # As a user runs it: a successful rollback prints its result line and nothing else
    # (its INFO log line reaches stderr only with -v).
    done = subprocess.run(
        [sys.executable, "-m", "ctrflow.pipelines.cli", "model", "rollback", name, "--to", "1",
         "--reason", "v2 misbehaves in serving", "--by", "carol", "--mlflow-uri", registry],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-2000:]
    assert done.stdout.startswith(f"{name}: champion rolled back from version 2 to 1 at ")
    assert done.stdout.count("\n") == 1, done.stdout
    won = _register(registry, name, week, study, models["xgboost"])  # v3 beats v1
    assert won.decision["previous_champion"] == "1" and won.promoted
    history = promotion_history(client, name)
    assert [(h["version"], h["kind"], h["replaced_by"]) for h in history] == [
        ("1", "promotion", "2"),
        ("2", "promotion", "1"),
        ("1", "rollback", "3"),
        ("3", "promotion", None),
    ]  # fmt: skip


def test_rollback_waits_for_a_register_step_holding_the_registry_lock(
    mlflow_server: str, week: Week, study: FinalizeResult, models: dict[str, Candidate]
) -> None:
    """The register step holds the lock between its decision and the alias move; a rollback
    started then waits, and rolls back from the version that step promoted, not from the stale
    one it saw first (which would undo the promotion unrecorded)."""
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server)
    _register(mlflow_server, name, week, study, models["mediocre"])  # v1
    _register(mlflow_server, name, week, study, models["better"])  # v2
    held, go = threading.Event(), threading.Event()

    def hold(event: str) -> None:
        if event == "decided":  # under the lock, intent written, alias not yet moved
            held.set()
            assert go.wait(120)

    results: dict[str, Any] = {}

    def in_thread(key: str, call: Any) -> threading.Thread:
        def body() -> None:
            try:
                results[key] = call()
            except BaseException as exc:
                results[key] = exc

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    step = in_thread("register", lambda: _register(
        mlflow_server, name, week, study, models["xgboost"], on_event=hold
    ))  # fmt: skip
    assert held.wait(120)
    back = in_thread("rollback", lambda: rollback(client, name, "1", "bad", lock_wait=120))
    back.join(timeout=3.0)
    # Still waiting: the step's lease is renewed, so the rollback cannot take the lock.
    assert back.is_alive() and "rollback" not in results
    assert _champion(client, name) == "2"
    go.set()
    step.join(timeout=120)
    back.join(timeout=120)
    registered, rolled = results["register"], results["rollback"]
    assert isinstance(registered, RegisterResult) and registered.promoted, registered
    assert registered.version == "3"
    assert (rolled.from_version, rolled.to_version) == ("3", "1"), rolled
    assert _champion(client, name) == "1"
    assert [(h["version"], h["kind"]) for h in promotion_history(client, name)][-2:] == [
        ("3", "promotion"),
        ("1", "rollback"),
    ]


_DRIVER = """
import sys
from mlflow import MlflowClient
from ctrflow.components.registry.rollback import rollback
rollback(MlflowClient(sys.argv[1]), sys.argv[2], sys.argv[3], "killed one", by="dave")
"""


@pytest.mark.parametrize(("kill_at", "serving", "states"), [
    ("champion_set", "1", ["done", "done"]),  # the alias moved: the rollback took effect
    ("intent_written", "2", ["done", "failed"]),  # it had not: failed, not in the history
])  # fmt: skip
def test_a_rollback_killed_half_way_is_settled_by_the_next_lock_holder(
    mlflow_server: str, week: Week, study: FinalizeResult, models: dict[str, Candidate],
    kill_at: str, serving: str, states: list[str],
) -> None:  # fmt: skip
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server)
    _register(mlflow_server, name, week, study, models["mediocre"])  # v1
    _register(mlflow_server, name, week, study, models["better"])  # v2
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, mlflow_server, name, "1"],
        env={**os.environ, TEST_KILL_AT_ENV: kill_at}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert _champion(client, name) == serving
    rolled_back = [h["version"] for h in promotion_history(client, name)] == ["1", "2", "1"]
    assert rolled_back is (serving == "1")  # read as the alias says, before it is settled
    # The next holder of the lock (here a rollback, after breaking the dead lock's lease)
    # settles the intent by where the alias is.
    target = "2" if serving == "1" else "1"
    rollback(client, name, target, "after the kill", by="erin", lock_wait=60)
    records = [
        json.loads(value) for key, value in client.get_registered_model(name).tags.items()
        if key.startswith("ctrflow.rollback.")
    ]  # fmt: skip
    assert sorted(r["state"] for r in records) == states
    kinds = [(h["version"], h["by"]) for h in promotion_history(client, name)]
    if serving == "1":
        assert kinds == [("1", None), ("2", None), ("1", "dave"), ("2", "erin")]
    else:
        assert kinds == [("1", None), ("2", None), ("1", "erin")]
    assert f"{name}.ctrflow-promotion-lock" not in {
        m.name for m in client.search_registered_models()
    }
