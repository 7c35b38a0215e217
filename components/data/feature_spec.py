"""Feature spec: how raw columns (label, numeric, categorical, timestamp) become FFM features.

    spec = FeatureSpec.criteo()                # or FeatureSpec.from_file("spec.json")
    fitted = spec.fit(frames)                  # streaming counts over training frames
    dataset = fitted.transform(frame)          # ffm_ext.Dataset, one feature per field
    fitted.save("feature_spec.json"); FittedFeatureSpec.load("feature_spec.json")

`fit` does not change the spec: it returns a FittedFeatureSpec (spec + vocabularies). For chunked
input with your own row selection, use `spec.fitter()` (`update(parsed, rows=...)`, `finish()`).
The transform is deterministic across processes and machines: categorical values are hashed with
a keyed SipHash (see `_hashing`), never Python's `hash()`.
"""

from __future__ import annotations

from ctrflow.components.data._fitted import BadRowsError, FittedFeatureSpec
from ctrflow.components.data._fitting import SpecFitter
from ctrflow.components.data._raw_columns import Coded, Problems
from ctrflow.components.data._schema import FeatureSpec, ParsedTable, SpecError

__all__ = [
    "BadRowsError",
    "Coded",
    "FeatureSpec",
    "FittedFeatureSpec",
    "ParsedTable",
    "Problems",
    "SpecError",
    "SpecFitter",
]
