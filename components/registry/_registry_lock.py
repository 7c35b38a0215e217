"""A mutex in the MLflow model registry, so two pipelines cannot both move alias ``champion``.

MLflow has no compare-and-set on aliases or tags (``set_registered_model_alias`` and
``set_registered_model_tag`` overwrite), so a tag cannot be a lock. Creating a registered model
*is* atomic: the name is the primary key of the backend's table, and a second
``create_registered_model`` with the same name fails with RESOURCE_ALREADY_EXISTS, on SQLite and
PostgreSQL alike. So the lock is a registered model ``<model>.ctrflow-promotion-lock``: create
it to acquire (owner token and expiry as its tags, written in the same transaction), delete it
to release.

A holder that dies leaves the lock behind, so the lock is a lease kept alive by a heartbeat: while
held, a thread of the holder rewrites the expiry tag to ``now + lease`` every ``lease / 3`` s
(only after checking the lock is still its own). A waiter treats the lock as dead when its expiry
has passed, or when the lock has not changed for a whole ``lease`` as the waiter itself watched it
(on its own monotonic clock, so a holder whose clock runs ahead cannot keep a dead lock alive).
A killed holder is so taken over within about ``lease`` seconds (10 by default), however long
the critical section may take; ``ttl`` caps how long one holder may keep renewing (a hung but
living holder loses the lock after ``ttl + lease``).
Why a heartbeat and not the holder's host and pid (which the owner token records for people to
read): pods are separate pid namespaces, so "no such pid here" says nothing about another pod,
and a restarted container often gets the same hostname and the same small pid back.

A waiter breaks a dead lock by *renaming* it to ``<lock>.stale-<hash of its owner and creation
time>``: a rename is atomic and its target name is unique per incarnation of the lock, so when two
waiters break the same dead lock only the first rename succeeds; the second fails (target exists)
and cannot rename the fresh lock the first one created meanwhile. The stale copy stays in the
registry as evidence (deleting it would let a very late second breaker rename a fresh lock).

What remains unsafe, said here rather than hidden: a holder paused for longer than ``lease`` (a
stopped VM, a long GC, a partition from the registry) that then resumes still believes it holds
the lock while a waiter may have broken it and hold a new one. ``held`` turns false once the
holder's own last renewal is a lease old, and ``promotion`` checks it before moving the alias,
then re-reads the alias right after setting it and fails loudly if it is not its version: that
catches an overwrite that lands before that read, not one that lands after it. A heartbeat that
resumes can rewrite the next holder's expiry between its ownership check and its write: that only
keeps that (live) lock a lease longer. A registry that allows no new registered models for the
pipeline's identity cannot host the lock (then ``promote`` fails and the champion stays).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import threading
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
    owner: str  # "" when the lock was read without its tags (being created or deleted)
    expires_at: float
    created_ms: int = 0  # identifies this incarnation of the lock name
    beat: str = ""  # the expiry tag as written: it changes at every heartbeat

    def expired(self) -> bool:
        return bool(self.owner) and self.expires_at < time.time()


class _Silence:
    """How long a waiter has seen the lock unchanged, on the waiter's own monotonic clock."""

    def __init__(self) -> None:
        self._seen: tuple[str, int, str] | None = None
        self._since = 0.0

    def for_seconds(self, holder: _Holder) -> float:
        key = (holder.owner, holder.created_ms, holder.beat)
        if key != self._seen:
            self._seen, self._since = key, time.monotonic()
        return time.monotonic() - self._since


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
        lease: float = 10.0,
    ) -> None:
        if ttl <= 0 or wait < 0 or poll <= 0 or lease <= 0:
            raise ValueError(
                f"need ttl > 0, wait >= 0, poll > 0, lease > 0; got {ttl}, {wait}, {poll}, {lease}"
            )
        self.client, self.name = client, lock_name(model_name)
        self.ttl, self.wait, self.poll, self.lease = ttl, wait, poll, min(lease, ttl)
        self.token = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"
        self._acquired_at: float | None = None  # monotonic; None when not held
        self._renewed_at = 0.0  # monotonic time of the last expiry the server accepted
        self._lost = False
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def _holder(self) -> _Holder | None:
        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == _MISSING:
                return None
            raise
        tags = model.tags or {}
        beat = str(tags.get(TAG_EXPIRES, ""))
        try:
            expires = float(beat or "0")
        except ValueError:
            expires = 0.0  # an unreadable expiry is treated as past
        return _Holder(
            owner=str(tags.get(TAG_OWNER, "")),
            expires_at=expires,
            created_ms=int(model.creation_timestamp or 0),
            beat=beat,
        )

    def _try_create(self) -> bool:
        started = time.monotonic()
        expires = time.time() + self.lease
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
        self._start(started)
        return True

    def _start(self, renewed_at: float) -> None:
        self._acquired_at = self._renewed_at = renewed_at
        self._lost = False
        self._stop.clear()
        self._heart = threading.Thread(target=self._beat, name=f"lease {self.name}", daemon=True)
        self._heart.start()

    def _beat(self) -> None:
        """Renew the expiry every lease/3 s while the lock is ours, for at most ttl."""
        assert self._acquired_at is not None
        give_up = self._acquired_at + self.ttl
        while not self._stop.wait(self.lease / 3):
            if time.monotonic() >= give_up:
                _log.warning(
                    "promotion lock %s held for its whole ttl: no longer renewed", self.name
                )
                return
            started = time.monotonic()
            try:
                holder = self._holder()
                if holder is None or holder.owner != self.token:
                    self._lost = True
                    _log.warning("promotion lock %s was taken over by another owner", self.name)
                    return
                expires = time.time() + self.lease
                self.client.set_registered_model_tag(self.name, TAG_EXPIRES, f"{expires:.3f}")
                self._renewed_at = started
            except Exception:  # the registry is unreachable for now: held lapses after a lease
                _log.warning("could not renew promotion lock %s", self.name, exc_info=True)

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
            "broke the dead promotion lock of %s (expiry %s); kept as %s",
            holder.owner or "an unknown owner", holder.beat or "none", target,
        )  # fmt: skip

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        silence = _Silence()
        while True:
            if self._try_create():
                return
            holder = self._holder()
            if holder is None:
                continue  # released between our create and our read
            if holder.owner == self.token:
                # Our create reached the server but its response was lost and the client
                # retried: the lock is ours.
                self._start(time.monotonic())
                return
            if holder.expired() or silence.for_seconds(holder) > self.lease:
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
        """Stop the heartbeat and delete the lock if it is still ours and its lease is current;
        a lapsed one is left for the next waiter to break (deleting it could delete a new
        holder's lock)."""
        if self._acquired_at is None:
            return
        self._stop.set()
        if self._heart is not None:
            self._heart.join()
        was_held = self.held
        self._acquired_at, self._heart = None, None
        holder = self._holder()
        if holder is None or holder.owner != self.token:
            _log.warning("promotion lock %s was no longer ours at release", self.name)
            return
        if not was_held:
            _log.warning("promotion lock %s lapsed while held; leaving it to be broken", self.name)
            return
        try:
            self.client.delete_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != _MISSING:
                raise

    @property
    def held(self) -> bool:
        """Ours, renewed less than a lease ago (our clock), and not past ttl."""
        if self._acquired_at is None or self._lost:
            return False
        now = time.monotonic()
        return now < self._renewed_at + self.lease and now < self._acquired_at + self.ttl

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
