"""`ctrflow compile | run | submit`: the pipeline as users drive it every week.

- compile: write the KFP pipeline spec (YAML) for an image;
- run: the whole pipeline on this machine (kfp.local), with embedded defaults;
- submit: upload the pipeline to Kubeflow (one version per ctrflow version) and start a run;

Errors print one line naming what is wrong and exit 2 (bad input, found before anything runs
or changes), 3 (KFP API unreachable or refusing) or 4 (the pipeline failed).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctrflow.components.names import KFP_ENDPOINT_ENV
from ctrflow.pipelines.cli._parsing import EXIT_USAGE, UsageError, logs_progress, shown_default

if TYPE_CHECKING:
    from ctrflow.pipelines.runs.data_window import DataWindow

EXIT_BAD_INPUT = EXIT_USAGE  # every bad input of these commands is on the command line
EXIT_API = 3
EXIT_PIPELINE_FAILED = 4
TOKEN_ENV = "CTRFLOW_KFP_TOKEN"
DEFAULT_WORKDIR = "ctrflow-work"
DEFAULT_EXPERIMENT = "ctrflow"
LOCAL_WORKERS = 2
LOCAL_BUDGET = 16
LOCAL_DEFAULTS = {"n_workers": LOCAL_WORKERS, "trial_budget": LOCAL_BUDGET, "model_name": "ctr-ffm"}


@dataclass(frozen=True)
class _Param:
    flag: str
    name: str  # pipeline parameter
    kind: Callable[[str], Any] | None  # None: a boolean switch
    help: str
    cluster_only: bool = False

    @property
    def metavar(self) -> str:
        if self.flag.endswith(("-uri", "-spec")):
            return "URI"
        if self.flag.endswith("-date"):
            return "DATE"
        return "N" if self.kind is int else "X" if self.kind is float else "NAME"


# Run parameters settable from the command line (others keep the compiled defaults).
PARAMS = (
    _Param("--model-name", "model_name", str, "registered model / MLflow experiment name"),
    _Param("--model-type", "model_type", str, "ffm or xgboost"),
    _Param("--workers", "n_workers", int, "parallel HPO workers"),
    _Param("--budget", "trial_budget", int, "trials in the whole study (exact)"),
    _Param(
        "--promotion-margin",
        "promotion_margin",
        float,
        "challenger must beat the champion's test logloss by this much",
    ),
    _Param("--seed", "seed", int, "seed of the data split, the study and the final model"),
    _Param("--feature-spec", "feature_spec_uri", str, "feature spec JSON (empty: Criteo's)"),
    _Param("--space-tag", "search_space_tag", str, "manual tag appended to the space version"),
    _Param(
        "--data-date",
        "data_date",
        str,
        "fill a --data template from this day (YYYY-MM-DD); none: the run's scheduled time "
        "(`run`: today, UTC)",
    ),
    _Param(
        "--keep-studies",
        "keep_studies",
        int,
        "after registering, keep this many newest Optuna studies of the model, export the older "
        "ones to MLflow and delete them (never this run's or the champion's); 0 keeps all",
    ),
    _Param(
        "--mirror-production-stage",
        "mirror_production_stage",
        None,
        "also move the legacy Production stage on promotion",
    ),
    _Param(
        "--storage-secret",
        "storage_secret",
        str,
        "Secret with key CTRFLOW_STORAGE_URL",
        cluster_only=True,
    ),
    _Param(
        "--mlflow-secret",
        "mlflow_secret",
        str,
        "optional Secret with MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN",
        cluster_only=True,
    ),
    _Param(
        "--mlflow-uri",
        "mlflow_tracking_uri",
        str,
        "MLflow tracking URI (default: MLFLOW_TRACKING_URI of ConfigMap ctrflow-config)",
        cluster_only=True,
    ),
)


def _add_params(
    parser: argparse.ArgumentParser, *, cluster: bool, local_defaults: dict[str, Any] | None = None
) -> None:
    """The run parameters as options. Their default stays None (so an option not given keeps
    the compiled default, and is not sent); help shows the value that applies: the compiled
    default, or for `run` the smaller local one."""
    group = parser.add_argument_group("pipeline parameters")
    for p in PARAMS:
        if p.cluster_only and not cluster:
            continue
        if p.kind is None:
            action = group.add_argument(
                p.flag, dest=f"param_{p.name}", action="store_true", default=None, help=p.help
            )
        else:
            action = group.add_argument(
                p.flag, dest=f"param_{p.name}", type=p.kind, metavar=p.metavar, help=p.help
            )
        local = (local_defaults or {}).get(p.name)
        shown_default(action, local if local is not None else _compiled_default(p.name))


@functools.cache
def compiled_defaults() -> dict[str, Any]:
    """The run parameters' defaults as compiled into the committed spec (read for help only)."""
    import yaml

    path = pathlib.Path(__file__).resolve().parent.parent / "ctr_pipeline.yaml"
    with path.open(encoding="utf-8") as f:
        spec = next(yaml.safe_load_all(f))
    out: dict[str, Any] = {}
    for name, p in spec["root"]["inputDefinitions"]["parameters"].items():
        value = p.get("defaultValue")
        out[name] = (
            int(value) if p["parameterType"] == "NUMBER_INTEGER" and value is not None else value
        )
    return out


def _compiled_default(name: str) -> Callable[[], Any]:
    return lambda: compiled_defaults().get(name)


def _given_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        p.name: getattr(args, f"param_{p.name}")
        for p in PARAMS
        if getattr(args, f"param_{p.name}", None) is not None
    }


def _flag_of(name: str) -> str:
    return next(
        (p.flag for p in PARAMS if p.name == name), "--data" if name == "data_uri" else name
    )


def refuse_credentials(params: dict[str, Any]) -> None:
    """Run parameters are stored in KFP's database and shown in its UI: a URI carrying
    user-info (``user:password@``, or a token as the user) would leak it. Credentials belong in
    Secrets the steps read as env vars."""
    from urllib.parse import urlsplit

    for name, value in params.items():
        if not isinstance(value, str) or "@" not in value:
            continue
        try:
            userinfo = urlsplit(value).netloc.rpartition("@")[0]
        except ValueError as exc:
            raise ValueError(f"{_flag_of(name)}: not a valid URI ({exc})") from None
        if userinfo:
            raise ValueError(
                f"{_flag_of(name)}: the URI carries credentials ({userinfo.split(':')[0]}:***@): "
                "run parameters are stored and shown by KFP. Put them in a Secret instead: "
                "MLflow's in the Secret --mlflow-secret names (MLFLOW_TRACKING_USERNAME/"
                "PASSWORD), Optuna's storage URL in the one --storage-secret names"
            )


def _check_data_template(params: dict[str, Any]) -> None:
    """A --data template is filled by the pipeline's data-window step; fill it here once too, so
    a bad template or date stops before any upload or step."""
    from ctrflow.pipelines.runs.data_window import is_template, parse_date, render

    uri = str(params.get("data_uri") or "")
    date_text = str(params.get("data_date") or "")
    date = parse_date(date_text) if date_text else datetime.datetime.now(datetime.UTC).date()
    if is_template(uri):
        render(uri, date)
    elif date_text:
        raise ValueError(
            f"--data-date {date_text}: --data {uri!r} has no {{date}} template to fill"
        )


def _check_params(params: dict[str, Any]) -> None:
    """Fail here, in a second, for what the pipeline would reject minutes later."""
    from ctrflow.components.names import MAX_WORKERS, MODEL_TYPES
    from ctrflow.components.registry.margin import check_margin

    refuse_credentials(params)
    if "data_uri" in params:
        _check_data_template(params)

    if "model_type" in params and params["model_type"] not in MODEL_TYPES:
        raise ValueError(
            f"--model-type {params['model_type']!r}: known types are {', '.join(MODEL_TYPES)}"
        )
    if "n_workers" in params and not 1 <= params["n_workers"] <= MAX_WORKERS:
        raise ValueError(f"--workers must be between 1 and {MAX_WORKERS}")
    if "trial_budget" in params and params["trial_budget"] < 1:
        raise ValueError("--budget must be >= 1")
    if params.get("n_workers", 0) > params.get("trial_budget", 10**9):
        raise ValueError("--workers exceeds --budget: the extra workers would have no trial")
    if "promotion_margin" in params:
        try:
            check_margin(params["promotion_margin"])
        except ValueError as exc:
            raise ValueError(f"--promotion-margin {exc}") from None
    if params.get("keep_studies", 0) < 0:
        raise ValueError("--keep-studies must be >= 0 (0 keeps every study)")
    if "model_name" in params and not str(params["model_name"]).strip():
        raise ValueError("--model-name must not be empty")


# -- compile ---------------------------------------------------------------------------------


def _compile(args: argparse.Namespace) -> int:
    from ctrflow.pipelines._image import default_image
    from ctrflow.pipelines.ctr_pipeline import compile_pipeline

    try:
        image = args.image or default_image()
        out = compile_pipeline(args.output, image)
    except (ValueError, OSError) as exc:
        print(f"ctrflow compile: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out} (image {image})")
    return 0


# -- run -------------------------------------------------------------------------------------


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _warm_start_line(warm: dict[str, Any]) -> str:
    if warm.get("warm"):
        version = warm.get("model_version", "?")
        run = warm.get("run_id", "?")
        return (
            f"yes: {int(warm.get('n_source_trials', 0))} trials of model version {version} "
            f"(MLflow run {run}, found via {warm.get('found_via', '?')})"
        )
    return f"no: {warm.get('reason') or 'no reason recorded'}"


def _named_lines(result: Any) -> list[str]:
    """A template's URIs, under the data line."""
    uris: list[str] = result.data_uris
    if uris == [result.data_uri]:
        return []
    shown = uris if len(uris) <= 3 else [uris[0], f"... ({len(uris) - 2} more)", uris[-1]]
    return [f"                {uri}" for uri in shown]


def summary_text(result: Any, model_name: str, model_type: str = "ffm") -> str:
    """The human summary of a LocalRunResult."""
    out = result.outputs
    hpo = out.get("hpo") or {}
    counts = ", ".join(
        f"{int(n)} {state}" for state, n in sorted((hpo.get("counts") or {}).items())
    )
    default = hpo.get("default_value")
    default_text = f"{default:.5f}" if isinstance(default, float) else "n/a"
    promoted = bool(out.get("promoted"))
    version = out.get("model_version", "?")
    lines = [
        f"ctrflow run finished in {result.seconds:.0f} s (work dir {result.workdir})",
        f"  data          {result.data_uri}" + (" (generated)" if result.data_generated else ""),
        *_named_lines(result),
        f"  study         {hpo.get('study_name', '?')}: {int(hpo.get('n_trials', 0))} trials "
        f"({counts})",
        f"  warm start    {_warm_start_line(hpo.get('warm_start') or {})}",
        f"  best params   {_fmt_params(hpo.get('best_params') or {})}",
        f"  valid logloss best {hpo.get('best_value', float('nan')):.5f}, "
        f"library defaults {default_text}",
        f"  test          logloss {out.get('test_logloss', float('nan')):.5f}, "
        f"AUC {out.get('test_auc', float('nan')):.4f}",
        f"  model         {model_name} version {version} ({model_type}): "
        + ("now champion" if promoted else "challenger, champion unchanged")
        + f" ({out.get('promotion_reason', '')})",
        f"  MLflow        {result.mlflow_uri}",
    ]
    if result.mlflow_ui:
        lines.append(f"  MLflow UI     {result.mlflow_ui}   # then open http://127.0.0.1:5000")
    for i, (name, path) in enumerate(result.reports.items()):
        lines.append(f"  {'reports' if i == 0 else '':14}{path}   # {name}")
    if result.log_file:
        lines.append(f"  step logs     {result.log_file}")
    return "\n".join(lines)


def _local_window(data: str | None, params: dict[str, Any]) -> DataWindow | None:
    """The window a --data template names for `run`, from --data-date or today (UTC), which
    becomes the run parameter data_date: kfp.local has no schedule time. The pipeline's
    data-window step fills the template from it, as on a cluster; here it is filled once more
    to check every URI before any step."""
    from ctrflow.pipelines.runs.data_window import is_template, parse_date, render

    if data is None or not is_template(data):
        return None
    text = params.get("data_date")
    day = parse_date(str(text)) if text else datetime.datetime.now(datetime.UTC).date()
    params["data_date"] = day.isoformat()
    return render(data, day)


def _window_line(template: str, window: DataWindow) -> str:
    uris = window.uris
    named = uris[0] if len(uris) == 1 else f"{len(uris)} URIs, {uris[0]} ... {uris[-1]}"
    return f"data {template} -> {named} (days {window.start}..{window.end}, end excluded)"


def _check_run_options(args: argparse.Namespace, window: DataWindow | None) -> None:
    """Everything `run` can check before its first step (data preparation takes minutes); a
    template's every URI (a day without files stops here, naming its URI)."""
    from ctrflow.pipelines.cli._checks import check_local_data, check_mlflow_uri, check_storage_url

    if args.rows < 1000:
        raise ValueError(f"--rows must be at least 1000, got {args.rows}")
    if args.days < 1:
        raise ValueError(f"--days must be at least 1, got {args.days}")
    if args.storage is not None:
        check_storage_url(args.storage)
    if args.mlflow_uri is not None:
        check_mlflow_uri(args.mlflow_uri)
    if window is not None:
        for uri in window.uris:
            check_local_data(uri)
    elif args.data is not None:
        check_local_data(args.data)


def _run(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.runs.containers import ContainerRunError
    from ctrflow.pipelines.runs.local import LocalRunConfig, LocalRunError, check_runner, run_local

    params = _given_params(args)
    # Small enough for a few minutes on 2 cores, and large enough that a second run can
    # warm-start from this one (Warm Starting CMA-ES wants >= 10 completed source trials, and
    # the median pruner stops a few of the 16).
    for name, value in LOCAL_DEFAULTS.items():
        params.setdefault(name, value)
    try:
        _check_params({**params, "data_uri": args.data or ""})
        window = _local_window(args.data, params)
        _check_run_options(args, window)
        if window is not None:
            print(_window_line(args.data, window), file=sys.stderr)
        check_runner(args.runner, args.storage, args.mlflow_uri)
        result = run_local(
            LocalRunConfig(
                workdir=pathlib.Path(args.workdir),
                data_uri=args.data,
                rows=args.rows,
                days=args.days,
                storage_url=args.storage,
                mlflow_uri=args.mlflow_uri,
                params=params,
                image=args.image,
                stream_logs=bool(getattr(args, "verbose", False)),
                runner=args.runner,
            )
        )
    except ContainerRunError as exc:
        print(f"ctrflow run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LocalRunError as exc:
        print(f"ctrflow run: {exc}", file=sys.stderr)
        return EXIT_PIPELINE_FAILED
    except (ValueError, OSError) as exc:
        print(f"ctrflow run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({**result.to_dict(), "model_name": params["model_name"]}, indent=2))
    else:
        print(summary_text(result, str(params["model_name"]), str(params.get("model_type", "ffm"))))
    return 0


# -- submit / schedule -------------------------------------------------------------------------


def _add_target(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubeflow Pipelines API")
    group.add_argument(
        "--host",
        default=None,
        help=f"KFP API endpoint, e.g. https://kubeflow.example.com/pipeline (default: "
        f"${KFP_ENDPOINT_ENV})",
    )
    group.add_argument("--namespace", default=None, help="profile namespace (multi-user Kubeflow)")
    # Kept only to refuse it by name: a token in argv shows in `ps` and in shell history.
    group.add_argument("--token", default=None, help=argparse.SUPPRESS)
    group.add_argument(
        "--token-file",
        default=None,
        help=f"read the bearer token from this file (default: ${TOKEN_ENV})",
    )


def _target(args: argparse.Namespace) -> Any:
    from ctrflow.pipelines.runs.remote import KfpTarget

    if args.token is not None:
        raise ValueError(
            f"--token is refused: a token on the command line shows in `ps` and shell history; "
            f"set ${TOKEN_ENV} or pass --token-file FILE"
        )
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file:
        token = pathlib.Path(args.token_file).read_text(encoding="utf-8").strip()
    host = args.host or os.environ.get(KFP_ENDPOINT_ENV)
    if not host:
        raise UsageError(f"no KFP endpoint: pass --host URL or set ${KFP_ENDPOINT_ENV}")
    return KfpTarget(host=host, namespace=args.namespace, token=token)


def _add_upload(parser: argparse.ArgumentParser) -> None:
    from ctrflow.components.names import SA_PIPELINE

    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="KFP experiment name")
    parser.add_argument("--image", default=None, help="project image (default: this version's)")
    parser.add_argument(
        "--version-name", default=None, help="pipeline version name (default: ctrflow version)"
    )
    parser.add_argument(
        "--service-account",
        default=SA_PIPELINE,
        help="ServiceAccount of the run's pods (default: %(default)s, the one the admission "
        "policy lets reach PostgreSQL and MLflow)",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="URI",
        help="raw logs the cluster reads (data_uri), or a template of the run's date such as "
        "'gs://logs/{date-7d..date}/*.parquet' (one URI per day)",
    )
    _add_params(parser, cluster=True)


def _upload(args: argparse.Namespace, target: Any, workdir: str) -> Any:
    from ctrflow.pipelines._image import default_image
    from ctrflow.pipelines.ctr_pipeline import PIPELINE_NAME, compile_pipeline
    from ctrflow.pipelines.runs.remote import ensure_pipeline_version

    image = args.image or default_image()
    package = compile_pipeline(pathlib.Path(workdir) / "ctr_pipeline.yaml", image)
    return ensure_pipeline_version(
        target, package, pipeline_name=PIPELINE_NAME, version_name=args.version_name, image=image
    )


def _run_params(args: argparse.Namespace) -> dict[str, Any]:
    if not args.data:
        raise ValueError("--data is required: the URI of the raw logs the cluster reads")
    params = {"data_uri": args.data, **_given_params(args)}
    _check_params(params)
    return params


def _remote(action: Callable[[argparse.Namespace], int], command: str) -> Callable[..., int]:
    def wrapped(args: argparse.Namespace) -> int:
        from ctrflow.pipelines.runs.cron import CronError
        from ctrflow.pipelines.runs.remote import KfpError

        try:
            return action(args)
        except (CronError, ValueError, OSError) as exc:
            print(f"ctrflow {command}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KfpError as exc:
            print(f"ctrflow {command}: {exc}", file=sys.stderr)
            return EXIT_API

    return wrapped


def _submit(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.cli import status as run_status
    from ctrflow.pipelines.runs.remote import start_run

    params = _run_params(args)
    if args.wait:
        run_status.check_poll(args.poll)
    target = _target(args)
    with tempfile.TemporaryDirectory(prefix="ctrflow-submit-") as tmp:
        ref = _upload(args, target, tmp)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    run_name = args.run_name or f"ctrflow {params.get('model_name', '')} {stamp}".replace("  ", " ")
    run_id = start_run(
        target,
        ref,
        experiment=args.experiment,
        run_name=run_name,
        params=params,
        service_account=args.service_account,
    )
    result = {
        "pipeline_id": ref.pipeline_id,
        "version_id": ref.version_id,
        "version_name": ref.version_name,
        "uploaded_version": ref.created_version,
        "run_id": run_id,
        "run_name": run_name,
    }
    if not args.json:
        state = "uploaded" if ref.created_version else "reused"
        print(f"pipeline version {ref.version_name} ({ref.version_id}) {state}")
        print(f"started run {run_id} ({run_name}) in experiment {args.experiment}", flush=True)
    if not args.wait:
        if args.json:
            print(json.dumps(result, indent=2))
        return 0
    outcome = run_status.follow(target, run_id, args.poll)
    if args.json:  # one JSON document: the submission and the outcome
        print(json.dumps({**result, "outcome": outcome.to_dict()}, indent=2))
        return run_status.exit_code(outcome)
    return run_status.report(outcome, as_json=False)


# -- registration ------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    comp = subparsers.add_parser(
        "compile",
        help="write the KFP pipeline spec",
        description="Compile the pipeline for an image (default: this ctrflow version's).",
    )
    comp.add_argument("--image", default=None, help="image reference for every step")
    comp.add_argument(
        "-o", "--output", default="ctr_pipeline.yaml", help="output file (default: %(default)s)"
    )
    comp.set_defaults(func=_compile)

    run = subparsers.add_parser(
        "run",
        help="run the whole pipeline locally (generated data, SQLite, local MLflow)",
        description="Run the compiled pipeline on this machine through kfp.local. Without "
        "--data it generates a Criteo-like log; Optuna and MLflow live in SQLite files under "
        "the work directory unless --storage / --mlflow-uri say otherwise. Defaults: 2 workers, "
        "a budget of 16 trials. Run it twice: the second run warm-starts from the first one's "
        "champion. -v streams every step's output (else they go to a log file).",
    )
    run.add_argument(
        "--data",
        default=None,
        help="raw log file/dir/glob/URI, or a template of --data-date such as "
        "'logs/{date-7d..date}/*.parquet' (one URI per day); default: generate",
    )
    run.add_argument(
        "--workdir", default=DEFAULT_WORKDIR, help="work directory (default: ./%(default)s)"
    )
    run.add_argument("--rows", type=int, default=50_000, help="rows of the generated log")
    run.add_argument("--days", type=int, default=7, help="days the generated log spans")
    run.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    run.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: SQLite)")
    run.add_argument(
        "--runner",
        choices=("subprocess", "container"),
        default="subprocess",
        help="subprocess: each step a child process of this virtualenv (default); container: "
        "each step in the image, through Docker or podman (needs --storage and --mlflow-uri "
        "of servers on this machine)",
    )
    run.add_argument(
        "--image",
        default=None,
        help="image of every step (default: this version's tag, as `make image` builds it; "
        "the container runner runs it)",
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(func=_run)
    logs_progress(run)  # kfp.local's task lines, the steps' logs in the log file
    _add_params(run, cluster=False, local_defaults=LOCAL_DEFAULTS)

    submit = subparsers.add_parser(
        "submit",
        help="upload the pipeline to Kubeflow and start a run",
        description="Upload the pipeline (pipeline `ctrflow`, one version per ctrflow version, "
        "reused when unchanged) and start a run in an experiment.",
    )
    _add_target(submit)
    _add_upload(submit)
    submit.add_argument("--run-name", default=None, help="default: ctrflow MODEL DATE TIME UTC")
    submit.add_argument("--json", action="store_true", help="print the result as JSON")
    from ctrflow.pipelines.cli.status import add_wait_options

    add_wait_options(submit, "follow the run until it ends (for CI)")
    submit.set_defaults(func=_remote(_submit, "submit"))
