"""Turn a step's plain `<step>_component` function into a KFP lightweight component.

The step modules use `from __future__ import annotations`, so their annotations are strings, which
KFP 2.17's component factory cannot read ("Artifacts must have both a schema_title and a
schema_version ... Got: str"). We hand KFP a copy of the function whose annotations are the
evaluated types; the source KFP embeds in the component is still the original one, and there the
annotations evaluate at definition time (KFP prepends `from kfp import dsl` and
`from typing import *` to it).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

__all__ = ["step_component"]


def _with_evaluated_annotations(func: Callable[..., Any]) -> Callable[..., Any]:
    if not isinstance(func, types.FunctionType):
        raise TypeError(f"{func!r} is not a plain Python function")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except NameError as exc:
        raise TypeError(f"cannot evaluate the annotations of {func.__qualname__}: {exc}") from exc
    if hints.get("return") is type(None):
        del hints["return"]  # KFP reads a missing return annotation as "no outputs", not NoneType
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__annotations__ = hints
    copy.__doc__ = func.__doc__
    copy.__module__ = func.__module__
    copy.__qualname__ = func.__qualname__
    return copy


def step_component(func: Callable[..., Any], *, image: str, name: str) -> PythonComponent:
    """A lightweight component running ``func`` on ``image`` (which already holds ctrflow and
    kfp: no pip install at start-up). ``name`` becomes the component and task name."""
    component = dsl.component(
        func=_with_evaluated_annotations(func), base_image=image, install_kfp_package=False
    )
    # Task names in the compiled DAG come from the component name; "train-final" reads better
    # than the function's "train-final-component". The executor still calls func.__name__.
    component.component_spec.name = name
    component.name = name
    return component
