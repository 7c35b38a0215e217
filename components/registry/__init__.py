"""The MLflow registry: logging and registering a model (register), the champion/challenger
gate (promotion) and the served pyfunc model (serving_model)."""
