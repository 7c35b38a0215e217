"""Helpers the tests (and the benchmarks) share: real servers on loopback, generated data, a fake
Kubernetes API server, the CLI run in a child process. Imported as ``tests.testkit``."""
