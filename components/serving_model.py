"""Kept for models already in users' registries: the MLflow entry file stored with each model
logged before components/ was split by concern runs
``from ctrflow.components.serving_model import CtrModel``. New models import the class from
``ctrflow.components.registry.serving_model``."""

from ctrflow.components.registry.serving_model import CtrModel

__all__ = ["CtrModel"]
