"""Check JSON against the KFP API's own models (the installed kfp_server_api, generated from the
v2beta1 OpenAPI spec): what the stand-in server in tests/pipelines/runs receives and answers must
be what a real KFP API server accepts and sends, field by field, enum value by enum value."""

from __future__ import annotations

import datetime
from typing import Any

from kfp_server_api import models

_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    # The generator types int64 fields (max_concurrency, interval_second) as str; protobuf's JSON
    # mapping takes them as a number or a string, and the SDK sends numbers.
    "str": (str, int),
    "int": (int, str),
    "bool": bool,
    "float": (int, float),
    "object": object,
}


def check_model(data: Any, type_name: str, where: str = "$") -> None:
    """AssertionError naming the JSON path of the first field or value the model lacks."""
    if data is None:
        return
    if type_name.startswith("list["):
        assert isinstance(data, list), f"{where}: expected a list for {type_name}"
        for i, item in enumerate(data):
            check_model(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        assert isinstance(data, dict), f"{where}: expected an object for {type_name}"
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for key, value in data.items():
            check_model(value, inner, f"{where}.{key}")
        return
    if type_name == "datetime":
        datetime.datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        return
    if type_name in _PRIMITIVES:
        assert isinstance(data, _PRIMITIVES[type_name]), f"{where}: {data!r} is not {type_name}"
        return
    model = getattr(models, type_name)
    allowed = getattr(model, "allowable_values", None)
    if allowed is not None:
        assert data in allowed, f"{where}: {data!r} is not one of {type_name}'s {allowed}"
        return
    assert isinstance(data, dict), f"{where}: expected an object for {type_name}"
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json, f"{where}: {type_name} has no field {key!r}"
        check_model(value, model.openapi_types[by_json[key]], f"{where}.{key}")
