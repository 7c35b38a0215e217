"""Search spaces per model type, defined once as data, with a version that hashes the definition.

Optuna itself only checks parameter *names* when it reuses trials (``CmaEsSampler(source_trials)``
keeps a trial whose names match even if a range or scale changed), so the warm start compares this
version instead: any change of a name, type, range, log flag, choice list or fixed training setting
gives a new version. A study stores its space as JSON (``SearchSpace.to_dict``) so that every
worker suggests from exactly the space the study was created with, whatever code version it runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ctrflow.components.names import MODEL_TYPES

__all__ = [
    "MODEL_TYPES",
    "Param",
    "SearchSpace",
    "default_params",
    "get_space",
    "space_version",
    "suggest",
]

Kind = Literal["int", "float", "categorical"]
Scalar = int | float | str | bool
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: an int/float range (optionally log-scaled) or a choice list."""

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Scalar, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"parameter name {self.name!r} is not an identifier")
        if self.kind == "categorical":
            if not self.choices or self.low is not None or self.high is not None or self.log:
                raise ValueError(f"categorical parameter {self.name!r} needs choices only")
            return
        if self.kind not in ("int", "float"):
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r}")
        if self.low is None or self.high is None or self.choices:
            raise ValueError(f"{self.kind} parameter {self.name!r} needs low and high, no choices")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"parameter {self.name!r}: need finite low < high")
        if self.log and self.low <= 0:
            raise ValueError(f"parameter {self.name!r}: a log scale needs low > 0")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"int parameter {self.name!r} needs integer bounds")

    def contains(self, value: Scalar) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        assert self.low is not None and self.high is not None
        if isinstance(value, str) or (self.kind == "int" and value != int(value)):
            return False
        return self.low <= value <= self.high

    def distribution(self) -> BaseDistribution:
        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def typed(self, value: Any) -> Scalar:
        """``value`` as this parameter's type. Values that crossed a JSON or protobuf boundary
        come back as floats (KFP passes a dict parameter as a Struct, whose numbers are doubles):
        an int parameter takes 6.0 as 6 and refuses 6.5; a choice is matched by equality."""
        if self.kind == "categorical":
            for choice in self.choices:  # True is not the choice 1, nor 1.0 the choice True
                if choice == value and isinstance(choice, bool) == isinstance(value, bool):
                    return choice
            raise ValueError(f"parameter {self.name}={value!r} is not one of {list(self.choices)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"parameter {self.name}={value!r} is not a number")
        if self.kind == "int":
            if not float(value).is_integer():
                raise ValueError(f"int parameter {self.name}={value!r} is not a whole number")
            return int(value)
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        assert self.low is not None and self.high is not None
        cast = int if self.kind == "int" else float
        return {
            "name": self.name,
            "kind": self.kind,
            "low": cast(self.low),
            "high": cast(self.high),
            "log": self.log,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Param:
        return cls(
            name=data["name"],
            kind=data["kind"],
            low=data.get("low"),
            high=data.get("high"),
            log=bool(data.get("log", False)),
            choices=tuple(data.get("choices", ())),
        )


@dataclass(frozen=True)
class SearchSpace:
    """Searched parameters, the defaults trial, and fixed (not searched) training settings.

    ``fixed`` holds settings that change what an objective value means (epoch or round budget,
    early-stopping patience), so they are part of the version.
    """

    model_type: str
    params: tuple[Param, ...]
    defaults: Mapping[str, Scalar]
    fixed: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.model_type}: duplicate parameter names in {names}")
        if set(self.defaults) != set(names):
            raise ValueError(
                f"{self.model_type}: defaults {sorted(self.defaults)} must name exactly the "
                f"searched parameters {sorted(names)}"
            )
        for p in self.params:
            if not p.contains(self.defaults[p.name]):
                raise ValueError(
                    f"{self.model_type}: default {p.name}={self.defaults[p.name]!r} lies outside "
                    f"its search range {p.distribution()}"
                )

    def typed(self, params: Mapping[str, Any]) -> dict[str, Scalar]:
        """``params`` with each value as its parameter's type (this definition is the one place
        that says which parameter is an int); unknown or missing names are a ValueError."""
        names = [p.name for p in self.params]
        unknown = sorted(set(params) - set(names))
        missing = sorted(set(names) - set(params))
        if unknown or missing:
            raise ValueError(
                f"{self.model_type} parameters: unknown {unknown or 'none'}, missing "
                f"{missing or 'none'} (expected exactly {sorted(names)})"
            )
        return {p.name: p.typed(params[p.name]) for p in self.params}

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-serializable form (what the version hashes, plus the defaults)."""
        return {
            "model_type": self.model_type,
            "params": [p.to_dict() for p in self.params],
            "fixed": dict(sorted(self.fixed.items())),
            "defaults": dict(sorted(self.defaults.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(
            model_type=data["model_type"],
            params=tuple(Param.from_dict(p) for p in data["params"]),
            defaults=dict(data["defaults"]),
            fixed=dict(data.get("fixed", {})),
        )

    def version(self, tag: str | None = None) -> str:
        """``<model_type>-<12 hex of sha256 of the definition>[-<tag>]``; defaults excluded."""
        definition = {
            "model_type": self.model_type,
            "params": [p.to_dict() for p in self.params],
            "fixed": dict(sorted(self.fixed.items())),
        }
        canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        if tag:
            if not _TAG_RE.match(tag):
                raise ValueError(
                    f"search-space tag {tag!r} must be 1-64 characters of [A-Za-z0-9._-]"
                )
            return f"{self.model_type}-{digest}-{tag}"
        return f"{self.model_type}-{digest}"

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "int":
                assert p.low is not None and p.high is not None
                params[p.name] = trial.suggest_int(
                    name=p.name, low=int(p.low), high=int(p.high), log=p.log
                )
            elif p.kind == "float":
                assert p.low is not None and p.high is not None
                params[p.name] = trial.suggest_float(
                    name=p.name, low=float(p.low), high=float(p.high), log=p.log
                )
            else:
                params[p.name] = trial.suggest_categorical(name=p.name, choices=p.choices)
        return params


# FFM: LIBFFM's defaults (k=4, eta=0.2, lambda=2e-5) as the first trial; a fixed epoch budget with
# early stopping on validation logloss (the best epoch's weights are kept).
_FFM = SearchSpace(
    model_type="ffm",
    params=(
        Param("k", "int", 2, 16, log=True),
        Param("eta", "float", 0.02, 1.0, log=True),
        Param("lam", "float", 1e-7, 1e-3, log=True),
    ),
    defaults={"k": 4, "eta": 0.2, "lam": 2e-5},
    fixed={"max_epochs": 30, "patience": 1, "normalize": True},
)

# XGBoost: the library's defaults (learning_rate 0.3, max_depth 6, min_child_weight 1,
# subsample 1, colsample_bytree 1, lambda 1, alpha 0) as the first trial. alpha is linear
# because its default, 0, cannot sit on a log scale.
_XGBOOST = SearchSpace(
    model_type="xgboost",
    params=(
        Param("learning_rate", "float", 0.01, 0.5, log=True),
        Param("max_depth", "int", 2, 12),
        Param("min_child_weight", "float", 0.1, 50.0, log=True),
        Param("subsample", "float", 0.5, 1.0),
        Param("colsample_bytree", "float", 0.3, 1.0),
        Param("lambda", "float", 1e-3, 100.0, log=True),
        Param("alpha", "float", 0.0, 10.0),
    ),
    defaults={
        "learning_rate": 0.3,
        "max_depth": 6,
        "min_child_weight": 1.0,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "lambda": 1.0,
        "alpha": 0.0,
    },
    fixed={"max_rounds": 500, "early_stopping_rounds": 20, "tree_method": "hist"},
)

_SPACES: dict[str, SearchSpace] = {s.model_type: s for s in (_FFM, _XGBOOST)}
if tuple(_SPACES) != MODEL_TYPES:  # names.MODEL_TYPES is the list; every type needs a space
    raise ImportError(f"search spaces {tuple(_SPACES)} != model types {MODEL_TYPES}")


def get_space(model_type: str) -> SearchSpace:
    try:
        return _SPACES[model_type]
    except KeyError:
        raise ValueError(
            f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}"
        ) from None


def space_version(model_type: str, tag: str | None = None) -> str:
    return get_space(model_type).version(tag)


def default_params(model_type: str) -> dict[str, Scalar]:
    return dict(get_space(model_type).defaults)


def suggest(trial: optuna.Trial, model_type: str) -> dict[str, Any]:
    return get_space(model_type).suggest(trial)
