"""Data: raw logs in, prepared datasets and the fitted feature spec out (prepare_data); the
synthetic Criteo-like log generator."""
