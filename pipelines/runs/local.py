"""`ctrflow run`: the whole compiled pipeline on this machine, through kfp.local.

Embedded defaults make it self-contained: a generated Criteo-like log when no data is given (kept
in the work directory, so a second run sees the same data), an SQLite Optuna storage and an
SQLite MLflow store with its artifacts under the work directory. A second run therefore finds the
first run's champion and warm-starts from its study.

How the run reaches the steps: ``kfp.local.SubprocessRunner`` cannot apply the pipeline's
Kubernetes Secrets, but it starts every step as a child process of this one with this process's
environment (``subprocess.Popen(env=None)``, or ``{**os.environ, ...}`` when the spec sets env
vars). So the storage URL and the MLflow URI are put into ``os.environ`` for the duration of the
run; they never become pipeline parameters (the MLflow URI is also passed as the
``mlflow_tracking_uri`` parameter, which holds no credentials).

With ``runner="container"`` the same spec runs through ``kfp.local.DockerRunner`` instead, each
step in the project image (``containers.py``); the stores are then servers on this machine's
loopback, handed to every container as the same environment variables.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import pathlib
import re
import shlex
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV as TRACKING_ENV
from ctrflow.components.names import STORAGE_URL_ENV as STORAGE_ENV
from ctrflow.pipelines.runs.containers import ContainerRunError

__all__ = [
    "RUNNERS",
    "LocalRunConfig",
    "LocalRunError",
    "LocalRunResult",
    "check_runner",
    "run_local",
]

_log = logging.getLogger(__name__)


class LocalRunError(RuntimeError):
    """The local pipeline failed; the message names the step and the log file."""


@dataclass(frozen=True)
class LocalRunConfig:
    workdir: pathlib.Path
    # None: generate a synthetic log into the work directory. A template (data_window.py) is
    # filled by the pipeline's data-window step from the parameter data_date.
    data_uri: str | None = None
    rows: int = 50_000  # of the generated log
    days: int = 7
    storage_url: str | None = None  # None: sqlite under workdir
    mlflow_uri: str | None = None  # None: sqlite under workdir, artifacts under workdir
    params: Mapping[str, Any] = field(default_factory=dict)  # other pipeline parameters
    image: str | None = None
    stream_logs: bool = False  # True: every step's output on the console; else in a log file
    runner: str = "subprocess"  # or "container": each step in the image (runs/containers.py)


@dataclass(frozen=True)
class LocalRunResult:
    outputs: dict[str, Any]
    workdir: str
    data_uri: str  # as given (made absolute), a template too
    data_uris: list[str]  # what it names: one URI, or one per day of a template's range
    data_generated: bool
    storage_url: str  # password redacted
    mlflow_uri: str
    mlflow_ui: str | None  # command that opens the MLflow UI on a local store
    run_dir: str | None
    log_file: str | None
    seconds: float
    reports: dict[str, str] = field(default_factory=dict)  # what it is -> path (report_files)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _has_scheme(uri: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri) is not None


def _named_uris(data_uri: str, data_date: Any) -> list[str]:
    """The URIs a --data template names on data_date (as the data-window step fills it), or the
    URI itself. A template without data_date is left to that step's error."""
    from ctrflow.pipelines.runs.data_window import is_template, parse_date, render

    if not is_template(data_uri) or not data_date:
        return [data_uri]
    return list(render(data_uri, parse_date(str(data_date))).uris)


def _synth_data(workdir: pathlib.Path, rows: int, days: int, seed: int) -> tuple[str, bool]:
    from ctrflow.components.data.synth_data import write_synth

    if rows < 1000:
        raise ValueError(f"--rows must be at least 1000 for a usable split, got {rows}")
    path = workdir / "data" / f"synth-{rows}rows-{days}days-seed{seed}.parquet"
    if path.exists():
        return str(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    write_synth(str(partial), rows=rows, days=days, seed=seed, fmt="parquet")
    partial.replace(path)  # a run killed mid-write leaves no file that looks complete
    return str(path), True


def _local_mlflow(workdir: pathlib.Path, experiment: str) -> tuple[str, str]:
    """SQLite tracking store under workdir; the experiment made with its artifact root there too
    (an SQLite store alone would put artifacts in ./mlruns of whatever directory a step runs in)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    db = workdir / "mlflow.db"
    artifacts = workdir / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        _log.info("creating MLflow experiment %s in %s", experiment, db)
        try:
            client.create_experiment(
                experiment, artifact_location=(artifacts / experiment).as_uri()
            )
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    mlflow_bin = pathlib.Path(sys.executable).with_name("mlflow")
    ui = shlex.join(
        [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", "5000"]
    )
    return uri, ui


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROGRESS = re.compile(r"(Executing task|finished with status|Running pipeline)")


class _ProgressTee(io.TextIOBase):
    """Everything to the log file; the task start/finish lines also to the console."""

    def __init__(self, log: TextIO, console: TextIO) -> None:
        self._log, self._console = log, console
        self._lock = threading.Lock()
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._log.write(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                if _PROGRESS.search(line) and not line.startswith(" "):
                    self._console.write(_ANSI.sub("", line).strip() + "\n")
                    self._console.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._log.flush()


@contextlib.contextmanager
def _kfp_thread_safety() -> Iterator[None]:
    """Undo what kfp.local's per-task context managers leave behind when tasks run in threads
    (a ParallelFor): each saves and restores the global ``builtins.print`` (indented_print) and
    the root logger's handlers, so with two tasks interleaved the indented print and the
    task-local handlers can outlive the run. Restore both when the run ends."""
    root = logging.getLogger()
    saved_print, saved_handlers, saved_level = builtins.print, root.handlers[:], root.level
    try:
        yield
    finally:
        builtins.print = saved_print
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@contextlib.contextmanager
def _step_output(log_file: pathlib.Path | None) -> Iterator[None]:
    """KFP's local runner prints every step's output and its own log lines on stdout."""
    with warnings.catch_warnings(), _kfp_thread_safety():
        # Per step: "resource settings have no effect locally", "non-Python base image".
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if log_file is None:
            yield
            return
        console = sys.stderr
        with log_file.open("w", encoding="utf-8") as log:
            tee = _ProgressTee(log, console)
            # Log records that slip past kfp's task-local handler (the race above) go here too.
            handler = logging.StreamHandler(tee)
            handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
            logging.getLogger().handlers[:] = [handler]
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                yield


def _failure_excerpt(log_file: pathlib.Path | None, limit: int = 60) -> str:
    """The failed step's traceback (or its last lines) from the log of the whole run."""
    if log_file is None or not log_file.exists():
        return ""
    text = _ANSI.sub("", log_file.read_text(encoding="utf-8", errors="replace"))
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    failed = next((i for i, line in enumerate(lines) if "with status FAILURE" in line), None)
    if failed is None:
        return "\n".join(lines[-limit:])
    start = max(0, failed - limit)
    tracebacks = [
        i for i in range(start, failed) if "Traceback (most recent call last)" in lines[i]
    ]
    if tracebacks:
        start = tracebacks[-1]
    return "\n".join(lines[start : failed + 1][-limit:])


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)):\s")


def _last_exception_line(excerpt: str) -> str:
    """The step's own error ("ValueError: ..."), the line a reader looks for first."""
    found = [line.strip() for line in excerpt.splitlines() if _EXCEPTION_LINE.match(line)]
    return found[-1] if found else ""


RUNNERS = ("subprocess", "container")


def check_runner(runner: str, storage_url: str | None, mlflow_uri: str | None) -> None:
    """Fail before any work when the runner cannot reach the stores it was given."""
    if runner not in RUNNERS:
        raise ValueError(f"--runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    if runner != "container":
        return
    # Steps in containers run as the image's user with a read-only root: they share the stores
    # through servers on this machine's loopback, not through SQLite files of the host.
    if not storage_url or storage_url.startswith("sqlite"):
        raise ValueError(
            "--runner container needs --storage with a database server the containers reach "
            "(e.g. postgresql+psycopg://USER@127.0.0.1:5432/optuna), not an SQLite file"
        )
    if not mlflow_uri or not mlflow_uri.startswith(("http://", "https://")):
        raise ValueError(
            "--runner container needs --mlflow-uri of a tracking server (e.g. "
            "http://127.0.0.1:5000, started with --artifacts-destination), not a file store"
        )


def _wheel_environment() -> dict[str, str]:
    """$CTRFLOW_WHEEL as an absolute path to the wheel itself: the steps run in other working
    directories, and a wrong setting should fail now rather than at the register step."""
    from ctrflow.components.names import WHEEL_ENV
    from ctrflow.components.registry.serving_model import find_wheel

    wheel = find_wheel(None)
    return {} if wheel is None else {WHEEL_ENV: str(wheel.resolve())}


#: The pages the KFP UI shows as a run's Visualizations, as kfp.local writes them: run dir /
#: task / output artifact (a file without suffix).
REPORTS = {
    "HPO study (HTML)": ("finalize-study", "hpo_report"),
    "evaluation (HTML)": ("evaluate", "evaluation_report"),
    "promotion (Markdown)": ("register", "promotion_report"),
}


def report_files(run_dir: str | None) -> dict[str, str]:
    """The reports a run wrote, by what they are; a step that wrote none is left out."""
    if run_dir is None:
        return {}
    paths = {name: pathlib.Path(run_dir, *parts) for name, parts in REPORTS.items()}
    return {name: str(path) for name, path in paths.items() if path.is_file()}


def _newest_run_dir(root: pathlib.Path, before: set[str]) -> str | None:
    fresh = [p for p in root.glob("*") if p.is_dir() and p.name not in before]
    return str(max(fresh, key=lambda p: p.stat().st_mtime)) if fresh else None


def run_local(config: LocalRunConfig) -> LocalRunResult:
    """Run the pipeline; returns its outputs and where everything is. Raises LocalRunError."""
    from kfp import components, local

    from ctrflow.components.hpo.storage import redact_url
    from ctrflow.pipelines.ctr_pipeline import compile_pipeline
    from ctrflow.pipelines.runs.data_window import is_template

    started = time.perf_counter()
    check_runner(config.runner, config.storage_url, config.mlflow_uri)
    wheel_env = _wheel_environment() if config.runner != "container" else {}
    workdir = config.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    params = dict(config.params)
    seed = int(params.get("seed", 0))
    model_name = str(params.get("model_name", "ctr-ffm"))

    generated = False
    if config.data_uri is None:
        data_uri, generated = _synth_data(workdir, config.rows, config.days, seed)
    elif _has_scheme(config.data_uri):
        data_uri = config.data_uri
    else:
        data_uri = str(pathlib.Path(config.data_uri).resolve())
        pattern = is_template(data_uri) or any(c in data_uri for c in "*?[")
        if not pattern and not pathlib.Path(data_uri).exists():
            raise FileNotFoundError(f"--data {config.data_uri}: no such file or directory")
    data_uris = _named_uris(data_uri, params.get("data_date"))

    storage_url = config.storage_url or f"sqlite:///{workdir / 'optuna.db'}"
    mlflow_ui = None
    if config.mlflow_uri:
        mlflow_uri = config.mlflow_uri
    else:
        mlflow_uri, mlflow_ui = _local_mlflow(workdir, model_name)

    # The same spec as `ctrflow compile`, minus retry policies (a local failure is not transient).
    spec = compile_pipeline(workdir / "pipeline.yaml", config.image, retries=False)
    pipeline = components.load_component_from_file(str(spec))
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    if config.runner == "container":
        # The steps write their outputs here as the image's user (10001), not as this one:
        # world-writable with the sticky bit, like /tmp.
        runs.chmod(0o1777)
    before = {p.name for p in runs.glob("*")}
    log_file = None
    if not config.stream_logs:
        (workdir / "logs").mkdir(exist_ok=True)
        log_file = workdir / "logs" / time.strftime("run-%Y%m%d-%H%M%S.log")

    arguments = {**params, "data_uri": data_uri, "mlflow_tracking_uri": mlflow_uri}
    env = {STORAGE_ENV: storage_url, TRACKING_ENV: mlflow_uri}
    env.update(wheel_env)
    try:
        with contextlib.ExitStack() as stack:
            # kfp.local leaves a workspace directory per init and, for each step the subprocess
            # runner starts, the directory its `mktemp -d` writes the step's code to: hundreds a
            # week in the temp dir. Both go to this run's scratch directory, removed at the end
            # (best effort: a container step may have written there as the image's user).
            scratch = pathlib.Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="ctrflow-run-", ignore_cleanup_errors=True)
                )
            )
            workspace = scratch / "kfp-workspace"
            workspace.mkdir(mode=0o700)
            if config.runner == "container":
                from ctrflow.pipelines._image import default_image
                from ctrflow.pipelines.runs.containers import container_runner, mounted_dirs

                runner = stack.enter_context(
                    container_runner(
                        image=config.image or default_image(),
                        environment=env,
                        read_only_dirs=mounted_dirs(data_uri),
                    )
                )
            else:
                # SubprocessRunner starts each step with this process's environment.
                stack.enter_context(_environment({**env, "TMPDIR": str(scratch)}))
                runner = local.SubprocessRunner(use_venv=False)
            stack.enter_context(_step_output(log_file))
            local.init(
                runner=runner,
                pipeline_root=str(runs),
                workspace_root=str(workspace),
                raise_on_error=True,
            )
            task = pipeline(**arguments)
            outputs = dict(task.outputs)
    except ContainerRunError:
        raise  # the runner could not start: its own message says why, no step log to quote
    except RuntimeError as exc:
        message = _ANSI.sub("", str(exc))
        excerpt = _failure_excerpt(log_file)
        cause = _last_exception_line(excerpt)
        where = f"\nfull log: {log_file}" if log_file else ""
        raise LocalRunError(
            message
            + (f"\n{cause}" if cause else "")
            + where
            + (f"\nlast lines:\n{excerpt}" if excerpt else "")
        ) from None
    run_dir = _newest_run_dir(runs, before)
    return LocalRunResult(
        outputs=outputs,
        workdir=str(workdir),
        data_uri=data_uri,
        data_uris=data_uris,
        data_generated=generated,
        storage_url=redact_url(storage_url),
        mlflow_uri=mlflow_uri,
        mlflow_ui=mlflow_ui,
        run_dir=run_dir,
        log_file=str(log_file) if log_file else None,
        seconds=round(time.perf_counter() - started, 1),
        reports=report_files(run_dir),
    )
