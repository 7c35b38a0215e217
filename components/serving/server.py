"""A lean HTTP server for a ctrflow model, speaking MLflow's scoring contract.

    ctrflow-serve --model models:/ctr-ffm@champion --port 8080 --workers 2
    python -m ctrflow.components.serving.server ...     # the same

POST /invocations takes every body `mlflow models serve` takes for a ctrflow model
(application/json with dataframe_split, dataframe_records, instances or inputs; text/csv) and
answers {"predictions": [...]}; GET /ping and /health answer 200 once the model is loaded;
GET /version gives the MLflow version, as MLflow's server does. A bad request gets a 4xx with
{"error_code": ..., "message": one line naming the row and column}, never a stack trace.

Stack: the standard library's ThreadingHTTPServer (HTTP/1.1 keep-alive, one thread per
connection) in `--workers` pre-forked processes sharing one listening socket; the model is loaded
once before the fork, so workers share its memory. Predictions come from the same
`Predictor.predict` the MLflow pyfunc calls.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import pathlib
import signal
import socket
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from ctrflow.components.serving._errors import BadRequestError
from ctrflow.components.serving._installed_engine import prefer_installed_ffm_ext
from ctrflow.components.serving.predictor import Predictor
from ctrflow.components.serving.requests import MAX_BODY_BYTES, parse_request

__all__ = ["build_parser", "load_predictor", "main", "make_server"]

_log = logging.getLogger("ctrflow.serve")
# MLflow's error codes in the body; every 4xx is the client's request.
_ERROR_CODES = {404: "ENDPOINT_NOT_FOUND", 500: "INTERNAL_ERROR"}


def load_predictor(model: str) -> Predictor:
    """A local MLflow model directory, or any MLflow model URI (models:/NAME@champion, runs:/)."""
    if pathlib.Path(model).is_dir():
        return Predictor.from_model_dir(model)
    import mlflow

    return Predictor.from_model_dir(mlflow.artifacts.download_artifacts(artifact_uri=model))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    server_version = "ctrflow-serve"
    sys_version = ""
    predictor: Predictor
    mlflow_version: str

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the second
        # until the client's delayed ACK (40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return  # no access log: it would cost more than a prediction

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        body = {"error_code": _ERROR_CODES.get(status, "BAD_REQUEST"), "message": message}
        self._send(status, json.dumps(body).encode())

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/ping", "/health"):
            self._send(200, b"\n", "text/plain")
        elif path == "/version":
            self._send(200, self.mlflow_version.encode(), "text/plain")
        elif path == "/invocations":
            self._error(405, "use POST for /invocations")
        else:
            self._error(404, f"no endpoint {path} (try POST /invocations, GET /ping)")

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._error(411, "send the body with a Content-Length, not chunked")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._error(411, "a Content-Length header is required")
            return None
        if length > MAX_BODY_BYTES or length < 0:
            self.close_connection = True  # the body stays unread
            self._error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(length)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/invocations":
            self._error(404, f"no endpoint {self.path} (try POST /invocations)")
            return
        body = self._body()
        if body is None:
            return
        try:
            columns, n_rows = parse_request(
                body,
                content_type=self.headers.get("Content-Type", ""),
                wanted=self.predictor.columns,
            )
            predictions = self.predictor.predict(columns, n_rows)
        except BadRequestError as exc:
            self._error(exc.status, str(exc))
            return
        except Exception:  # a bug, not the request: logged here, not sent to the client
            _log.exception("prediction failed")
            self._error(500, "internal error while predicting (see the server log)")
            return
        self._send(200, b'{"predictions": %s}' % json.dumps(predictions.tolist()).encode())


def make_server(predictor: Predictor, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A bound server (port 0 picks a free one: see `server.server_address`)."""
    handler = type(
        "Handler",
        (_Handler,),
        {"predictor": predictor, "mlflow_version": version("mlflow")},
    )
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def _serve_workers(server: http.server.ThreadingHTTPServer, workers: int) -> None:
    """Fork `workers` processes that serve the one listening socket; stop them on SIGTERM/INT."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            signal.signal(signal.SIGINT, lambda *_: os._exit(0))
            try:
                server.serve_forever()
            finally:
                os._exit(0)
        children.append(pid)

    def stop(*_: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrflow-serve",
        description="Serve a ctrflow model with MLflow's /invocations contract.",
    )
    parser.add_argument("--model", "-m", required=True, help="MLflow model URI or directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", "-p", type=_ranged(0, 65535), default=8080)
    parser.add_argument(
        "--workers",
        "-w",
        type=_ranged(1, 1024),
        default=1,
        help="processes (default 1; one per core)",
    )
    return parser


def _ranged(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], else a usage error naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    prefer_installed_ffm_ext()  # `python -m` started in a ctrflow checkout puts it on sys.path
    try:
        predictor = load_predictor(args.model)
    except Exception as exc:  # a clear line, not a trace: the URI or the files are wrong
        print(f"cannot load the model {args.model}: {exc}", file=sys.stderr)
        return 2
    try:
        server = make_server(predictor, args.host, args.port)
    except OSError as exc:  # the port is taken, the address is not this host's...
        print(f"ctrflow-serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    host, port = server.server_address[:2]
    _log.info("serving %s on http://%s:%s with %d worker(s)", args.model, host, port, args.workers)
    if args.workers <= 1:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    else:
        _serve_workers(server, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
