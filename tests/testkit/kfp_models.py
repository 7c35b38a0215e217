"""JSON against the KFP API's own models (the installed kfp_server_api, generated from the v2beta1
OpenAPI spec), as strictly as the KFP API server decodes a request body.

The server decodes bodies with grpc-gateway's protojson marshaler, `DiscardUnknown: false`
(backend/src/apiserver/common/utils.go, CustomMarshaler): an unknown field, a value of the wrong
JSON type or an enum name the proto lacks fails the request with HTTP 400, gRPC code 3 and a
"proto: ..." message. `parse_model` applies those rules field by field over the kfp_server_api
models, then builds the model with the SDK's own deserialiser. Where protojson says
"(line 1:15)", the message here names the JSON path instead.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

from kfp_server_api import ApiClient, models

# The generator types int64 fields as str. protojson takes an int64 as a JSON number or a decimal
# string; a string field takes strings only. The int64 fields of the v2beta1 messages, from
# backend/api/v2beta1/swagger/*.swagger.json ("format": "int64"):
_INT64_FIELDS = {
    ("V2beta1RecurringRun", "max_concurrency"),
    ("V2beta1PeriodicSchedule", "interval_second"),
    ("V2beta1PipelineTaskDetail", "execution_id"),
    ("V2beta1RunDetails", "pipeline_context_id"),
    ("V2beta1RunDetails", "pipeline_run_context_id"),
}
# A field typed `object` is a google.protobuf.Struct (a JSON object) except these, which are
# google.protobuf.Value (any JSON value). Map values typed `object` are Values too.
_VALUE_FIELDS = {("V2beta1MetadataValue", "value")}


class ModelError(ValueError):
    """The body does not decode into the model: the message is the server's "proto: ..." one."""


def _fail(where: str, detail: str) -> ModelError:
    return ModelError(f"proto: ({where}): {detail}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lstrip("-").isdigit()
    return _is_number(value) and float(value).is_integer()


def _check_scalar(data: Any, kind: str, name: str, where: str) -> None:
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "int64": _is_integer,
        "int32": _is_integer,
        "double": lambda v: _is_number(v) or v in ("NaN", "Infinity", "-Infinity"),
        "bool": lambda v: isinstance(v, bool),
        "Struct": lambda v: isinstance(v, dict),
        "Value": lambda v: True,
    }
    ok = checks[kind](data)
    if not ok:
        raise _fail(where, f"invalid value for {kind} field {name}: {json.dumps(data)}")


def _check(data: Any, type_name: str, name: str, where: str, owner: str = "") -> None:
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise _fail(where, f"invalid value for list field {name}: {json.dumps(data)}")
        for i, item in enumerate(data):
            if item is None:
                raise _fail(f"{where}[{i}]", f"invalid value for list field {name}: null")
            _check(item, type_name[5:-1], name, f"{where}[{i}]", owner="list")
        return
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            raise _fail(where, f"invalid value for map field {name}: {json.dumps(data)}")
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for key, value in data.items():
            _check(value, inner, name, f"{where}.{key}", owner="map")
        return
    if type_name == "datetime":
        try:
            datetime.datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        except ValueError:
            raise _fail(
                where, f"invalid google.protobuf.Timestamp value {json.dumps(data)}"
            ) from None
        if not isinstance(data, str):
            raise _fail(where, f"invalid google.protobuf.Timestamp value {json.dumps(data)}")
        return
    if type_name == "str":
        kind = "int64" if (owner, name) in _INT64_FIELDS else "string"
        _check_scalar(data, kind, name, where)
        return
    if type_name == "object":
        struct = owner not in ("map", "list") and (owner, name) not in _VALUE_FIELDS
        _check_scalar(data, "Struct" if struct else "Value", name, where)
        return
    if type_name in ("int", "float", "bool"):
        _check_scalar(
            data, {"int": "int32", "float": "double"}.get(type_name, type_name), name, where
        )
        return
    _check_message(data, type_name, name, where)


def _check_message(data: Any, type_name: str, name: str, where: str) -> None:
    model = getattr(models, type_name)
    allowed = getattr(model, "allowable_values", None)
    if allowed is not None:  # an enum: its name, or its number
        if data in allowed or (isinstance(data, int) and not isinstance(data, bool)):
            return
        raise _fail(where, f"invalid value for enum field {name}: {json.dumps(data)}")
    if not isinstance(data, dict):
        raise _fail(where, f"invalid value for message field {name}: {json.dumps(data)}")
    if type_name == "GoogleProtobufAny":  # an Any carries the fields of the type it names
        if not isinstance(data.get("@type"), str):
            raise _fail(where, 'missing "@type" field')
        return
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, value in data.items():
        if key not in by_json:
            raise _fail(where, f"unknown field {json.dumps(key)}")
        if value is None:  # protojson: null leaves the field unset
            continue
        attr = by_json[key]
        _check(value, model.openapi_types[attr], attr, f"{where}.{key}", owner=type_name)


class _Body:
    """What ApiClient.deserialize reads from a response."""

    def __init__(self, data: Any) -> None:
        self.data = json.dumps(data)


def parse_model(data: Any, type_name: str) -> Any:
    """The kfp_server_api model `type_name` built from JSON `data`; ModelError where the KFP API
    server would refuse to decode it."""
    if data is None:
        raise ModelError("proto: syntax error (line 1:1): unexpected token")
    _check_message(data, type_name, type_name, "$")
    return ApiClient().deserialize(_Body(data), type_name)


def check_model(data: Any, type_name: str, where: str = "$") -> None:
    """AssertionError naming the JSON path of the first field or value the model lacks (for
    what the stand-in answers: responses follow the same proto)."""
    if data is None:
        return
    try:
        _check(data, type_name, type_name, where)
    except ModelError as exc:
        raise AssertionError(str(exc)) from None
