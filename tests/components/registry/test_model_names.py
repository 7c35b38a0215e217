"""Model names in MLflow search filters, against a real `mlflow server` (both backend stores):
MLflow's filter grammar has no escape for quotes, so a name is quoted with the other quote."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from ctrflow.components.registry.model_names import check_model_name, name_filter
from ctrflow.components.registry.promotion import promotion_history
from ctrflow.pipelines.cli import main as cli_main

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["mlflow_server", "mlflow_server_postgres"])
def client(request: pytest.FixtureRequest) -> MlflowClient:
    return MlflowClient(request.getfixturevalue(request.param))


@pytest.mark.parametrize("stem", ["it's", 'say "hi"', "100%_sure", "back\\slash", "sp ace"])
def test_a_name_with_quotes_or_wildcards_finds_exactly_its_versions(
    client: MlflowClient, stem: str
) -> None:
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    run = client.create_run(client.create_experiment(name)).info.run_id
    for model in (name, f"{name}x"):  # a neighbour that a LIKE-ish match would also find
        client.create_registered_model(model)
        client.create_model_version(model, source=f"runs:/{run}/model", run_id=run)
    client.set_model_version_tag(name, "1", "ctrflow.champion.since", "2026-01-01T00:00:00Z")
    assert [v.name for v in client.search_model_versions(name_filter(name))] == [name]
    assert [h["version"] for h in promotion_history(client, name)] == ["1"]


def test_a_name_with_both_quotes_is_refused_with_the_reason(
    client: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "both ' and \""
    with pytest.raises(ValueError, match="contains both ' and \": MLflow's search filters"):
        check_model_name(name)
    uri = client.tracking_uri
    assert cli_main(["registry", "history", "--model-name", name, "--mlflow-uri", uri]) == 2
    assert "contains both ' and \"" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "problem"), [("", "is empty"), ("a:b", "contains ':'")])
def test_names_mlflow_refuses_are_refused_first(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_model_name(name)
