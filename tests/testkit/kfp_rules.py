"""What the KFP API server checks beyond decoding a body, for the stand-in in
tests/pipelines/runs/test_remote.py: the uploaded pipeline spec, a run's runtime parameters
against the spec's root inputs, a recurring run's cron and concurrency.

A recorded contract: no KFP API server can run on this machine (it needs Kubernetes, Argo and
MySQL), so these rules and their messages are ported from the server's source
(github.com/kubeflow/pipelines, backend/src/apiserver, read at commit 7b70c7b, 2026-08):
template/template.go and template/v2_template.go (NewV2SpecTemplate, validatePipelineJobInputs),
server/util.go (ReadPipelineFile), server/api_converter.go (toModelJob, toModelRun),
common/util/validate_literal.go. The spec itself is parsed with the kfp PipelineSpec protobuf,
as the server does with protojson (unknown fields refused).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from kfp.pipeline_spec import pipeline_spec_pb2

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the spec is large: libyaml if there


class Refusal(Exception):
    """The server refuses the request: an HTTP status and its message."""

    def __init__(self, status: int, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or message


INVALID = 400  # gRPC InvalidArgument through grpc-gateway
INTERNAL = 500  # util.NewInternalServerError: what KFP answers for some invalid input, too


def _parse(doc: Any, message: Message) -> str:
    """The protobuf error for `doc`, or "" when it parses (unknown fields refused)."""
    try:
        json_format.ParseDict(json.loads(json.dumps(doc, default=str)), message)
    except json_format.ParseError as exc:
        return str(exc)
    return ""


def parse_pipeline_file(filename: str, data: bytes) -> pipeline_spec_pb2.PipelineSpec:
    """The PipelineSpec of an uploaded file, or the Refusal the upload endpoint answers."""
    if not filename.endswith((".yaml", ".yml", ".json")):
        # The server also unpacks .zip and .tar.gz; nothing here sends them, so refuse them.
        raise Refusal(
            INVALID, "Unexpected pipeline file format. Support .zip, .tar.gz, .json or YAML"
        )
    try:
        docs = [d for d in yaml.load_all(data, Loader=_LOADER) if d is not None]
    except yaml.YAMLError as exc:
        raise Refusal(INVALID, "Failed to create a pipeline version", str(exc)) from None
    spec: pipeline_spec_pb2.PipelineSpec | None = None
    errors = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        candidate = pipeline_spec_pb2.PipelineSpec()
        error = _parse(doc, candidate)
        if not error and candidate.pipeline_info.name and candidate.HasField("root"):
            if spec is not None:
                raise Refusal(INVALID, "multiple pipeline specs provided")
            spec = candidate
        elif "platforms" in doc:
            error = _parse(doc, pipeline_spec_pb2.PlatformSpec())
            if error:
                raise Refusal(INVALID, f"cannot unmarshal platform specific configs: {error}")
        else:
            errors.append(error or "no pipelineInfo.name or no root")
    if spec is None:
        # The server says no more than this; the protobuf errors go to the details.
        raise Refusal(INVALID, "unknown template format", "; ".join(errors))
    if spec.schema_version != "2.1.0":
        raise Refusal(
            INVALID,
            "KFP only supports schema version 2.1.0, but the pipeline spec has version "
            f"{spec.schema_version}",
        )
    return spec


def _kind_error(name: str, ptype: str, value: Any) -> str:
    """validatePipelineJobInputs' type check of one runtime parameter (a protobuf Value)."""
    if ptype in ("NUMBER_DOUBLE", "NUMBER_INTEGER"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return (
                f"input parameter {name} requires type double or integer, but the parameter "
                "value is not of number value type"
            )
        return ""
    wanted = {"STRING": str, "BOOLEAN": bool, "LIST": list, "STRUCT": dict}.get(ptype)
    if wanted is None:
        if ptype == "PARAMETER_TYPE_ENUM_UNSPECIFIED":
            return f"input parameter {name} has unspecified type"
        return f"input parameter {name} requires type {ptype}, which is invalid for root component"
    if not isinstance(value, wanted):
        label = {"STRING": "string", "BOOLEAN": "bool", "LIST": "list", "STRUCT": "struct"}[ptype]
        return (
            f"input parameter {name} requires type {label}, but the input parameter is not of "
            f"{label} value type"
        )
    return ""


def runtime_parameter_error(
    spec: pipeline_spec_pb2.PipelineSpec, runtime_config: dict[str, Any] | None
) -> str:
    """The server's message refusing these runtime parameters for `spec`, or "" if it takes
    them: an unknown parameter, a value of the wrong type or outside the spec's literals, a
    required one (not optional, no default) missing."""
    inputs = spec.root.input_definitions.parameters
    if runtime_config is None:
        if inputs:
            return (
                "pipeline requiring input has no parameter(s) provided. Need parameter(s): "
                + ", ".join(inputs)
            )
        return ""
    given = runtime_config.get("parameters") or {}
    for name, param in inputs.items():
        if name not in given:
            if not param.is_optional and not param.HasField("default_value"):
                return (
                    f"parameter {name} is not optional, yet has neither default value nor user "
                    "provided value"
                )
            continue
        ptype = pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(param.parameter_type)
        error = _kind_error(name, ptype, given[name])
        if error:
            return error
        literals = [json_format.MessageToDict(v) for v in param.literals]
        if literals and given[name] not in literals:
            return (
                f"input parameter {json.dumps(name)} value {given[name]} does not match any of "
                f"the allowed literal values: {literals}"
            )
    extra = [name for name in given if name not in inputs]
    if extra:
        return "parameter(s) provided are not required by pipeline: " + ", ".join(extra)
    return ""


# robfig/cron v1.2.0 Parse, which the server uses for a recurring run's cron: 5 or 6 fields,
# seconds first, the day of week optional; or a descriptor.
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_CRON_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),  # second
    (0, 59, {}),  # minute
    (0, 23, {}),  # hour
    (1, 31, {}),  # day of month
    (1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    (0, 6, {d: i for i, d in enumerate(_DAYS)}),  # day of week
)
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def _cron_value(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(
            f"Failed to parse int from {text}: strconv.Atoi: parsing {text!r}: invalid syntax"
        )
    return int(text)


def _cron_field(text: str, low: int, high: int, names: dict[str, int]) -> None:
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span in ("*", "?"):
            start, end = low, high
        else:
            first, _, last = span.partition("-")
            start = _cron_value(first, names)
            end = _cron_value(last, names) if last else start
        if step and (not step.isdigit() or int(step) <= 0):
            raise ValueError(f"Step of range should be a positive number: {step}")
        if start < low:
            raise ValueError(f"Beginning of range ({start}) below minimum ({low}): {part}")
        if end > high:
            raise ValueError(f"End of range ({end}) above maximum ({high}): {part}")
        if start > end:
            raise ValueError(f"Beginning of range ({start}) beyond end of range ({end}): {part}")


def cron_error(spec: str) -> str:
    """robfig/cron's error for `spec`, or "" when the server's parser takes it."""
    if spec.startswith("@"):
        if spec in _DESCRIPTORS or (
            spec.startswith("@every ") and _GO_DURATION.match(spec[len("@every ") :])
        ):
            return ""
        return f"Unrecognized descriptor: {spec}"
    fields = spec.split()
    if not 5 <= len(fields) <= 6:
        return f"Expected 5 to 6 fields, found {len(fields)}: {spec}"
    try:
        for text, (low, high, names) in zip(fields, _CRON_FIELDS, strict=False):
            _cron_field(text, low, high, names)
    except ValueError as exc:
        return str(exc)
    return ""
