"""MLflow's users, as the manifests' Job `ctrflow-mlflow-bootstrap` makes them.

The tracking server runs MLflow's basic-auth app with ``default_permission = READ``
(manifests/base/mlflow-auth/basic_auth.ini): every user may read, and only what a user created or
was granted may it change. This makes, through the admin API and idempotently, the registering
user (the pipeline steps' credentials: it creates the experiment, the registered model and so owns
its versions and the `champion` alias) and the read-only user (serving, people in the UI). Neither
is an admin; a user that exists gets its password from the Secret again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MlflowUser", "MlflowUsersError", "ensure_users", "users_from_env"]

# Env vars of the bootstrap Job (manifests/base/mlflow-bootstrap.yaml), per user: <PREFIX>_USERNAME
# and <PREFIX>_PASSWORD. The admin signs in with MLFLOW_TRACKING_USERNAME/PASSWORD.
USER_ENV_PREFIXES = ("CTRFLOW_MLFLOW_REGISTER", "CTRFLOW_MLFLOW_READER")


class MlflowUsersError(RuntimeError):
    """A user could not be made; the message names it and what the server said."""


@dataclass(frozen=True)
class MlflowUser:
    username: str
    password: str


def users_from_env(env: Mapping[str, str] | None = None) -> list[MlflowUser]:
    env = os.environ if env is None else env
    users = []
    for prefix in USER_ENV_PREFIXES:
        name, password = env.get(f"{prefix}_USERNAME"), env.get(f"{prefix}_PASSWORD")
        if not name or not password:
            raise MlflowUsersError(f"{prefix}_USERNAME and {prefix}_PASSWORD must both be set")
        users.append(MlflowUser(name, password))
    return users


def ensure_users(tracking_uri: str, users: list[MlflowUser]) -> list[str]:
    """Create each user, or set its password if it exists; make sure none is an admin. Signs in
    with MLFLOW_TRACKING_USERNAME/PASSWORD (the admin). Returns one line per user."""
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    done = []
    for user in users:
        try:
            try:
                auth.get_user(user.username)
            except RestException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                auth.create_user(user.username, user.password)
                state = "created"
            else:
                auth.update_user_password(user.username, user.password)
                state = "password set"
            auth.update_user_admin(user.username, False)
        except MlflowException as exc:
            raise MlflowUsersError(
                f"MLflow at {tracking_uri}: user {user.username!r}: {exc.message}"
            ) from None
        done.append(f"{user.username}: {state}, not admin")
    return done
