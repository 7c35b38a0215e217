"""A mutex in the MLflow model registry, so two pipelines cannot both move alias ``champion``.

MLflow has no compare-and-set on aliases or tags (``set_registered_model_alias`` and
``set_registered_model_tag`` overwrite), so a tag cannot be a lock. Creating a registered model
*is* atomic: the name is the primary key of the backend's table, and a second
``create_registered_model`` with the same name fails with RESOURCE_ALREADY_EXISTS, on SQLite and
PostgreSQL alike. So the lock is a registered model ``<model>.ctrflow-promotion-lock``: create
it to acquire (owner token and expiry as its tags, written in the same transaction), delete it
to release.

A holder that dies leaves the lock behind; it carries an expiry (``ttl``, far longer than the
critical section, which does a few registry calls). A waiter that finds an expired lock breaks it
by *renaming* it to ``<lock>.stale-<hash of its owner and creation time>``: a rename is atomic
too and its target name is unique per incarnation of the lock, so when two waiters break the same
stale lock only the first rename succeeds; the second fails (target exists) and cannot rename the
fresh lock the first one created meanwhile. The stale copy stays in the registry as evidence
(deleting it would let a very late second breaker rename a fresh lock).

What remains unsafe, said here rather than hidden: a holder paused for longer than ``ttl`` (a
stopped VM, a long GC) that then resumes still believes it holds the lock while a waiter may
have broken it and hold a new one. ``promotion`` re-reads the alias right after setting it and
fails loudly if it is not its version, which catches an overwrite that lands before that read,
not one that lands after it. A registry that allows no new registered models for the pipeline's
identity cannot host the lock (then ``promote`` fails and the champion stays).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mlflow.exceptions import MlflowException

from ctrflow.components.names import TAG_LOCK_EXPIRES as TAG_EXPIRES
from ctrflow.components.names import TAG_LOCK_OWNER as TAG_OWNER

__all__ = ["LOCK_SUFFIX", "LockTimeoutError", "RegistryLock", "lock_name"]

_log = logging.getLogger(__name__)
LOCK_SUFFIX = ".ctrflow-promotion-lock"
_EXISTS = "RESOURCE_ALREADY_EXISTS"
_MISSING = "RESOURCE_DOES_NOT_EXIST"


class LockTimeoutError(TimeoutError):
    """The lock stayed held by another owner for the whole wait."""


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


@dataclass(frozen=True)
class _Holder:
    owner: str  # "" when the lock was read without its tags (see _holder)
    expires_at: float
    created_ms: int = 0  # identifies this incarnation of the lock name

    def stale(self, ttl: float) -> bool:
        now = time.time()
        if self.owner:
            return self.expires_at < now
        # No tags: most likely a lock being deleted right now (the server reads the model row and
        # its tags in two queries, so a read can fall between a delete's row and tag removals).
        # Only a tag-less lock older than a whole ttl is treated as dead.
        return self.created_ms / 1000 + ttl < now


class RegistryLock:
    """``with RegistryLock(client, "ctr-model"): ...`` -- see the module docstring."""

    def __init__(
        self,
        client: Any,
        model_name: str,
        *,
        ttl: float = 300.0,
        wait: float = 600.0,
        poll: float = 0.5,
    ) -> None:
        if ttl <= 0 or wait < 0 or poll <= 0:
            raise ValueError(f"need ttl > 0, wait >= 0, poll > 0; got {ttl}, {wait}, {poll}")
        self.client, self.name = client, lock_name(model_name)
        self.ttl, self.wait, self.poll = ttl, wait, poll
        self.token = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"
        self._expires_at: float | None = None

    def _holder(self) -> _Holder | None:
        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == _MISSING:
                return None
            raise
        tags = model.tags or {}
        try:
            expires = float(tags.get(TAG_EXPIRES, "0"))
        except ValueError:
            expires = 0.0  # an unreadable expiry is treated as past
        return _Holder(
            owner=str(tags.get(TAG_OWNER, "")),
            expires_at=expires,
            created_ms=int(model.creation_timestamp or 0),
        )

    def _try_create(self) -> bool:
        expires = time.time() + self.ttl
        try:
            self.client.create_registered_model(
                self.name,
                tags={TAG_OWNER: self.token, TAG_EXPIRES: f"{expires:.3f}"},
                description="ctrflow promotion lock: held while alias 'champion' is being moved",
            )
        except MlflowException as exc:
            # On a name clash the server reads the existing model to word its error; if that
            # one was deleted in between, the answer is "does not exist": just try again.
            if exc.error_code not in (_EXISTS, _MISSING):
                raise
            return False
        self._expires_at = expires
        return True

    def _break_stale(self, holder: _Holder) -> None:
        # Unique per incarnation of the lock: breaking the same dead lock twice is impossible.
        digest = hashlib.sha256(f"{holder.owner}@{holder.created_ms}".encode()).hexdigest()[:16]
        target = f"{self.name}.stale-{digest}"
        try:
            self.client.rename_registered_model(self.name, target)
        except MlflowException as exc:
            if exc.error_code in (_EXISTS, _MISSING):
                return  # another waiter broke it first (or it was released): just retry
            raise
        _log.warning(
            "broke the stale promotion lock of %s (expired %.0f s ago); kept as %s",
            holder.owner or "an unknown owner", time.time() - holder.expires_at, target,
        )  # fmt: skip

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        while True:
            if self._try_create():
                return
            holder = self._holder()
            if holder is None:
                continue  # released between our create and our read
            if holder.owner == self.token:
                # Our create reached the server but its response was lost and the client
                # retried: the lock is ours.
                self._expires_at = holder.expires_at
                return
            if holder.stale(self.ttl):
                self._break_stale(holder)
                continue
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"registry lock {self.name!r} is held by {holder.owner} (until "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(holder.expires_at))}); "
                    f"waited {self.wait:.0f} s"
                )
            time.sleep(self.poll * random.uniform(0.5, 1.5))  # jitter: waiters do not march in step

    def release(self) -> None:
        """Delete the lock if it is still ours and unexpired; an expired one is left for the
        next waiter to break (deleting it could delete a new holder's lock)."""
        expires, self._expires_at = self._expires_at, None
        if expires is None:
            return
        holder = self._holder()
        if holder is None or holder.owner != self.token:
            _log.warning("promotion lock %s was no longer ours at release", self.name)
            return
        if time.time() >= expires:
            _log.warning("promotion lock %s expired while held; leaving it to be broken", self.name)
            return
        try:
            self.client.delete_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != _MISSING:
                raise

    @property
    def held(self) -> bool:
        return self._expires_at is not None and time.time() < self._expires_at

    def __enter__(self) -> RegistryLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
