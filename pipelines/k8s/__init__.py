"""Launching and following HPO workers as a Kubernetes Indexed Job, and checking a namespace."""
