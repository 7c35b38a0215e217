"""The compiled pipeline: the committed spec is current, parses into KFP's protobufs, and says
what the design says (fan-out, caching, retries, resources, Secrets, no secret values)."""

from __future__ import annotations

import difflib
import pathlib
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from ctrflow.pipelines._image import default_image
from ctrflow.pipelines.ctr_pipeline import build_pipeline, compile_pipeline
from tests.testkit.paths import REPO_ROOT as ROOT

COMMITTED = ROOT / "pipelines" / "ctr_pipeline.yaml"
STEPS = (
    "plan-hpo",
    "data-window",
    "prepare-data",
    "create-study",
    "hpo-worker",
    "finalize-study",
    "train-final",
    "evaluate",
    "register",
    "retire-studies",
)


def _docs(path: pathlib.Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def _normalized(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the golden comparison ignores, as KFP's own golden tests do: image and sdkVersion."""
    spec = docs[0]
    spec.pop("sdkVersion", None)
    for executor in spec["deploymentSpec"]["executors"].values():
        executor["container"].pop("image", None)
    return docs


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return compile_pipeline(tmp_path_factory.mktemp("spec") / "p.yaml", "example.org/other:9.9")


@pytest.fixture(scope="module")
def spec() -> pipeline_spec_pb2.PipelineSpec:
    return json_format.ParseDict(_docs(COMMITTED)[0], pipeline_spec_pb2.PipelineSpec())


@pytest.fixture(scope="module")
def platform() -> dict[str, k8s_pb2.KubernetesExecutorConfig]:
    parsed = json_format.ParseDict(_docs(COMMITTED)[1], pipeline_spec_pb2.PlatformSpec())
    executors = parsed.platforms["kubernetes"].deployment_spec.executors
    out = {}
    for name, struct in executors.items():
        config = k8s_pb2.KubernetesExecutorConfig()
        json_format.ParseDict(json_format.MessageToDict(struct), config)
        out[name.removeprefix("exec-")] = config
    return out


def test_committed_spec_is_current(fresh: pathlib.Path) -> None:
    committed = _normalized(_docs(COMMITTED))
    current = _normalized(_docs(fresh))
    if committed != current:
        diff = difflib.unified_diff(
            yaml.safe_dump_all(committed).splitlines(),
            yaml.safe_dump_all(current).splitlines(),
            "pipelines/ctr_pipeline.yaml",
            "compiled now",
            lineterm="",
        )
        pytest.fail(
            "pipelines/ctr_pipeline.yaml is stale: run `make compile` and commit it\n"
            + "\n".join(list(diff)[:80])
        )


def test_golden_comparison_ignores_only_image_and_sdk_version(fresh: pathlib.Path) -> None:
    docs = _docs(fresh)
    images = {e["container"]["image"] for e in docs[0]["deploymentSpec"]["executors"].values()}
    assert images == {"example.org/other:9.9"}
    docs[0]["root"]["inputDefinitions"]["parameters"]["n_workers"]["defaultValue"] = 99
    assert _normalized(docs) != _normalized(_docs(COMMITTED))


def test_committed_spec_uses_this_versions_image() -> None:
    executors = _docs(COMMITTED)[0]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {default_image()}


def test_spec_parses_into_pipeline_spec_proto(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    assert spec.pipeline_info.name == "ctrflow"
    assert spec.schema_version == "2.1.0"
    params = spec.root.input_definitions.parameters
    assert set(params) == {
        "data_uri",
        "model_name",
        "model_type",
        "n_workers",
        "trial_budget",
        "storage_secret",
        "mlflow_tracking_uri",
        "mlflow_secret",
        "promotion_margin",
        "mirror_production_stage",
        "seed",
        "feature_spec_uri",
        "search_space_tag",
        "data_date",
        "keep_studies",
    }
    assert not params["data_uri"].is_optional  # the one parameter without a default
    assert params["storage_secret"].default_value.string_value == "ctrflow-storage"
    outputs = spec.root.output_definitions.parameters
    assert set(outputs) == {
        "hpo",
        "test_logloss",
        "test_auc",
        "model_version",
        "promoted",
        "promotion_reason",
    }


def test_every_run_parameter_has_a_description(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """The KFP UI shows these on the run form (#16); KFP's compiler takes them from the Args
    section of the pipeline function's docstring, and silently drops a misspelt name."""
    params = spec.root.input_definitions.parameters
    missing = [name for name, p in params.items() if not p.description.strip()]
    assert missing == []
    for name, p in params.items():
        assert len(p.description) >= 30, (name, p.description)  # a sentence, not a word
        assert "\n" not in p.description and not p.description.startswith(name), name
    assert "template" in params["data_uri"].description
    assert "CTRFLOW_STORAGE_URL" in params["storage_secret"].description


def test_a_parameter_without_a_description_stops_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ctrflow.pipelines import ctr_pipeline

    descriptions = dict(ctr_pipeline.PARAMETER_DESCRIPTIONS)
    del descriptions["seed"]
    monkeypatch.setattr(ctr_pipeline, "PARAMETER_DESCRIPTIONS", descriptions)
    with pytest.raises(RuntimeError, match="PARAMETER_DESCRIPTIONS does not match"):
        build_pipeline("example.org/x:1")


def test_reports_for_the_kfp_ui_are_html_and_markdown_artifacts(
    spec: pipeline_spec_pb2.PipelineSpec,
) -> None:
    """The KFP UI renders system.HTML and system.Markdown outputs in a step's Visualizations."""
    expected = {
        "finalize-study": ("hpo_report", "system.HTML"),
        "evaluate": ("evaluation_report", "system.HTML"),
        "register": ("promotion_report", "system.Markdown"),
    }
    for step, (output, schema) in expected.items():
        component = spec.components[_all_tasks(spec)[step].component_ref.name]
        artifact = component.output_definitions.artifacts[output]
        assert artifact.artifact_type.schema_title == schema, step


def _all_tasks(
    spec: pipeline_spec_pb2.PipelineSpec,
) -> dict[str, pipeline_spec_pb2.PipelineTaskSpec]:
    tasks = dict(spec.root.dag.tasks)
    for component in spec.components.values():
        if component.HasField("dag"):
            tasks.update(component.dag.tasks)
    return tasks


def test_dag_order_and_fan_out(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    tasks = _all_tasks(spec)
    assert set(STEPS) <= set(tasks)
    root = spec.root.dag.tasks
    assert "hpo-worker" not in root  # inside the ParallelFor
    loops = [name for name, task in root.items() if task.WhichOneof("iterator")]
    assert len(loops) == 1
    loop = root[loops[0]]
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--plan-hpo-Output"
    assert loop.iterator_policy.parallelism_limit == 50
    assert set(loop.dependent_tasks) >= {"create-study", "prepare-data", "plan-hpo"}
    assert set(tasks["create-study"].dependent_tasks) == {"plan-hpo", "prepare-data"}
    assert set(tasks["finalize-study"].dependent_tasks) >= {loops[0]}
    assert "finalize-study" in tasks["train-final"].dependent_tasks
    assert {"train-final", "prepare-data"} <= set(tasks["evaluate"].dependent_tasks)
    assert {"evaluate", "finalize-study", "train-final", "prepare-data"} <= set(
        tasks["register"].dependent_tasks
    )
    # Workers read the splits straight from prepare-data's artifacts.
    worker_inputs = tasks["hpo-worker"].inputs.artifacts
    assert set(worker_inputs) == {"train", "valid"}
    # One study name for all: plan-hpo's, to create-study directly, to workers in the items.
    create_name = tasks["create-study"].inputs.parameters["study_name"]
    assert create_name.task_output_parameter.producer_task == "plan-hpo"
    assert create_name.task_output_parameter.output_parameter_key == "study_name"
    worker = tasks["hpo-worker"].inputs.parameters
    assert worker["study_name"].parameter_expression_selector == (
        'parseJson(string_value)["study_name"]'
    )
    assert worker["worker_index"].parameter_expression_selector == (
        'parseJson(string_value)["index"]'
    )


def test_mlflow_location_is_one_run_parameter(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    tasks = _all_tasks(spec)
    for step in ("create-study", "register", "retire-studies"):
        uri = tasks[step].inputs.parameters["mlflow_tracking_uri"]
        assert uri.component_input_parameter == "mlflow_tracking_uri", step
    default = spec.root.input_definitions.parameters["mlflow_tracking_uri"].default_value
    assert default.string_value == ""  # empty: MLFLOW_TRACKING_URI from ConfigMap ctrflow-config


def test_run_id_placeholder_is_always_a_whole_value() -> None:
    """KFP's driver replaces {{$.pipeline_job_uuid}} only as an argument's entire value."""
    text = COMMITTED.read_text(encoding="utf-8")
    whole = text.count("constant: '{{$.pipeline_job_uuid}}'")
    assert whole == 2  # plan-hpo's run_id and register's pipeline_run_id
    assert text.count("{{$.pipeline_job_uuid}}") == whole


def test_data_window_feeds_prepare_data(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """prepare-data reads the URIs data-window filled from the run's date, a list parameter
    (one per day of a range); register records the window (issue #16)."""
    tasks = _all_tasks(spec)
    data = tasks["prepare-data"].inputs.parameters["data_uris"].task_output_parameter
    assert (data.producer_task, data.output_parameter_key) == ("data-window", "data_uris")
    recorded = tasks["register"].inputs.parameters
    for name, output in (("data_window", "window"), ("data_uris", "data_uris")):
        source = recorded[name].task_output_parameter
        assert (source.producer_task, source.output_parameter_key) == ("data-window", output)
    list_type = pipeline_spec_pb2.ParameterType.LIST
    components = spec.components
    window_outputs = components["comp-data-window"].output_definitions.parameters
    assert window_outputs["data_uris"].parameter_type == list_type
    prepare_inputs = components["comp-prepare-data"].input_definitions.parameters
    assert prepare_inputs["data_uris"].parameter_type == list_type
    window = tasks["data-window"].inputs.parameters
    assert window["data_uri"].component_input_parameter == "data_uri"
    assert window["data_date"].component_input_parameter == "data_date"
    # KFP's backend replaces the placeholder only as an argument's entire value.
    schedule = window["schedule_time"].runtime_value.constant.string_value
    assert schedule == "{{$.pipeline_job_schedule_time_utc}}"
    assert spec.root.input_definitions.parameters["data_date"].default_value.string_value == ""


def test_studies_are_retired_after_the_promotion(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """Issue #16: retention runs after register (a failed run deletes no study), on this run's
    study name and the keep_studies run parameter (default 8)."""
    tasks = _all_tasks(spec)
    retire = tasks["retire-studies"]
    assert "register" in retire.dependent_tasks
    params = retire.inputs.parameters
    assert params["keep_studies"].component_input_parameter == "keep_studies"
    assert params["model_name"].component_input_parameter == "model_name"
    study = params["study_name"].task_output_parameter
    assert (study.producer_task, study.output_parameter_key) == ("create-study", "study_name")
    default = spec.root.input_definitions.parameters["keep_studies"].default_value
    assert default.number_value == 8


def test_caching_and_retries(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    tasks = _all_tasks(spec)
    uncached = {
        "plan-hpo",
        "data-window",
        "prepare-data",
        "create-study",
        "hpo-worker",
        "finalize-study",
    }
    for name in uncached | {"register", "retire-studies"}:
        assert not tasks[name].caching_options.enable_cache, name
    retried = {"create-study", "hpo-worker", "finalize-study", "register", "retire-studies"}
    for name in STEPS:
        retries = tasks[name].retry_policy.max_retry_count
        assert (retries > 0) == (name in retried), name


def test_local_variant_differs_only_in_retries_and_schedule_time(tmp_path: pathlib.Path) -> None:
    path = compile_pipeline(tmp_path / "local.yaml", retries=False)
    local = _docs(path)[0]
    committed = _docs(COMMITTED)[0]

    def strip(doc: dict[str, Any]) -> dict[str, Any]:
        for component in [doc["root"], *(c for c in doc["components"].values())]:
            for task in (component.get("dag") or {}).get("tasks", {}).values():
                task.pop("retryPolicy", None)
                if task["taskInfo"]["name"] == "data-window":  # kfp.local cannot resolve it
                    task["inputs"]["parameters"].pop("schedule_time")
        return doc

    assert "retryPolicy" not in str(local)
    assert "pipeline_job_schedule_time_utc" not in str(local)
    assert strip(local) == strip(committed)


def test_every_step_has_resources_on_the_project_image(
    spec: pipeline_spec_pb2.PipelineSpec,
) -> None:
    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    assert set(executors) == {f"exec-{s}" for s in STEPS}
    for name, executor in executors.items():
        container = executor.struct_value.fields["container"].struct_value.fields
        resources = container["resources"].struct_value.fields
        for key in ("resourceCpuRequest", "resourceCpuLimit"):
            assert resources[key].string_value, (name, key)
        for key in ("resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources[key].string_value, (name, key)
        command = " ".join(v.string_value for v in container["command"].list_value.values)
        assert "pip install" not in command, name  # install_kfp_package=False: image has kfp


def test_secrets_and_labels(platform: dict[str, k8s_pb2.KubernetesExecutorConfig]) -> None:
    needs_storage = {"create-study", "hpo-worker", "finalize-study", "retire-studies"}
    needs_mlflow = {"create-study", "register", "retire-studies"}
    assert set(platform) == set(STEPS)
    for step, config in platform.items():
        # Each step carries the client label of the servers it talks to, and no other: the
        # NetworkPolicies admit by these labels (and admission ties them to the ServiceAccount).
        expected = {"app.kubernetes.io/part-of": "ctrflow"}
        if step in needs_storage:
            expected["ctrflow.io/postgres-client"] = "true"
        if step in needs_mlflow:
            expected["ctrflow.io/mlflow-client"] = "true"
        assert dict(config.pod_metadata.labels) == expected, step
        storage = [
            s for s in config.secret_as_env if s.key_to_env[0].env_var == "CTRFLOW_STORAGE_URL"
        ]
        mlflow = [s for s in config.secret_as_env if s.key_to_env[0].env_var.startswith("MLFLOW_")]
        assert bool(storage) == (step in needs_storage), step
        assert bool(mlflow) == (step in needs_mlflow), step
        for secret in storage:
            # The Secret's *name* is a run parameter; its value never is.
            assert secret.secret_name_parameter.component_input_parameter.endswith("storage_secret")
            assert not secret.optional
        for secret in mlflow:
            assert secret.optional
            assert {k.env_var for k in secret.key_to_env} == {
                "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN",
            }
        tracking = [c for c in config.config_map_as_env if c.config_map_name == "ctrflow-config"]
        assert bool(tracking) == (step in needs_mlflow), step
    assert platform["hpo-worker"].active_deadline_seconds > 0


def test_no_secret_values_in_the_spec() -> None:
    text = COMMITTED.read_text(encoding="utf-8").lower()
    for needle in ("postgresql://", "postgresql+psycopg://", "password=", "@ctrflow-postgres"):
        assert needle not in text


def test_build_pipeline_uses_the_given_image() -> None:
    pipeline = build_pipeline("registry.example/ctrflow:test")
    executors = pipeline.pipeline_spec.deployment_spec.fields["executors"].struct_value.fields
    images = {
        e.struct_value.fields["container"].struct_value.fields["image"].string_value
        for e in executors.values()
    }
    assert images == {"registry.example/ctrflow:test"}


def test_every_step_runs_as_the_images_non_root_user(
    platform: dict[str, k8s_pb2.KubernetesExecutorConfig],
) -> None:
    """kfp-kubernetes 2.17 carries runAsUser/runAsGroup/runAsNonRoot per task (not
    readOnlyRootFilesystem: README, "Security", says what enforces the rest)."""
    from ctrflow.components.names import RUN_AS_USER

    root = 0  # an int: mypy takes `RUN_AS_USER != 0` for two literals that always differ
    for step, config in platform.items():
        context = config.security_context
        assert context.run_as_non_root is True, step
        assert context.run_as_user == context.run_as_group == RUN_AS_USER != root, step
        # Writable emptyDirs wherever a step or KFP's launcher writes, so the read-only root
        # that manifests/cluster/pipeline-steps sets at admission leaves the step working.
        mounts = {m.mount_path for m in config.empty_dir_mounts}
        assert mounts == {"/tmp", "/home/ctrflow", "/gcs", "/minio", "/s3"}, step
