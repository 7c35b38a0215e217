"""Hyperparameter search: the study (create_study), its workers (hpo_worker), its summary
(finalize_study), the search spaces and objectives, and the Optuna storage they share."""
