"""The ctrflow Kubeflow pipeline, its compiled spec and the `ctrflow` command line."""
