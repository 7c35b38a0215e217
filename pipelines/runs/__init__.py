"""Running the compiled pipeline: locally through kfp.local, or on a Kubeflow Pipelines host
(runs and recurring runs)."""
