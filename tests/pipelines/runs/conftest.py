"""The KFP API stand-in's fixture (test_remote.py) for the other KFP contract tests here."""

from tests.pipelines.runs.test_remote import kfp_api

__all__ = ["kfp_api"]
