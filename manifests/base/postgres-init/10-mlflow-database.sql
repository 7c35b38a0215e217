-- Runs once, on the first start of an empty data directory (docker-entrypoint-initdb.d), as
-- $POSTGRES_USER: MLflow's backend store gets its own database next to Optuna's ($POSTGRES_DB).
CREATE DATABASE mlflow;
