#!/bin/sh
# Sourced by the postgres image's entrypoint on the first start of an empty data directory, as
# $POSTGRES_USER against the temporary local server. The role passwords come from the Secret
# `ctrflow-postgres` as env vars and reach psql as variables, never as part of the SQL text.
psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" \
  --dbname "$POSTGRES_DB" \
  -v optuna_password="$CTRFLOW_OPTUNA_DB_PASSWORD" \
  -v mlflow_password="$CTRFLOW_MLFLOW_DB_PASSWORD" \
  -v dashboard_password="$CTRFLOW_DASHBOARD_DB_PASSWORD" \
  -f "${CTRFLOW_INITDB_DIR:-/docker-entrypoint-initdb.d}/ctrflow-roles.psql"
