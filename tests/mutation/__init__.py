"""Mutation checks run by hand or by make (not collected by pytest: no test_ modules)."""
