"""MLflow "models from code" entry: the file MLflow stores with a logged ctrflow model and runs
at load time. It only names the class; the class itself comes from the installed ctrflow package
(the model's pip requirement), so no code beyond these lines travels with the model."""

import mlflow

from ctrflow.components.registry.serving_model import CtrModel

mlflow.models.set_model(CtrModel())
