"""Speed measurements against a baseline run in the same process. Run from the repository root as
modules (`python -m benchmarks.ffm_bench`), so they share the tests' helpers (tests.testkit)."""
