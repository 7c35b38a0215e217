"""The promotion lock in the MLflow registry, against real `mlflow server`s (SQLite and
PostgreSQL backend stores): its safety rests on the backend's unique registered-model names."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from mlflow import MlflowClient

from ctrflow.components.names import TAG_LOCK_EXPIRES as TAG_EXPIRES
from ctrflow.components.names import TAG_LOCK_OWNER as TAG_OWNER
from ctrflow.components.registry._registry_lock import (
    LockTimeoutError,
    RegistryLock,
    _Holder,
    lock_name,
)

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", params=["mlflow_server", "mlflow_server_postgres"])
def client(request: pytest.FixtureRequest) -> MlflowClient:
    return MlflowClient(request.getfixturevalue(request.param))


def _names(client: MlflowClient, model: str) -> set[str]:
    return {m.name for m in client.search_registered_models(f"name LIKE '{model}%'")}


def _plant_stale(client: MlflowClient, model: str, owner: str = "dead-host.1.x") -> None:
    client.create_registered_model(
        lock_name(model), tags={TAG_OWNER: owner, TAG_EXPIRES: f"{time.time() - 5:.3f}"}
    )


def test_only_one_holder_at_a_time(client: MlflowClient) -> None:
    model = f"lock-{uuid.uuid4().hex[:8]}"
    inside, most, entries = 0, 0, 0
    guard = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, most, entries
        try:
            for _ in range(3):
                with RegistryLock(client, model, ttl=60, wait=120, poll=0.05):
                    with guard:
                        inside += 1
                        most, entries = max(most, inside), entries + 1
                    time.sleep(0.05)
                    with guard:
                        inside -= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert (most, entries) == (1, 12)
    assert _names(client, model) == set()  # released: no lock left behind


def test_a_held_lock_times_out_naming_its_owner(client: MlflowClient) -> None:
    model = f"lock-{uuid.uuid4().hex[:8]}"
    holder = RegistryLock(client, model, ttl=60)
    holder.acquire()
    try:
        with pytest.raises(LockTimeoutError, match=f"is held by {holder.token} "):
            RegistryLock(client, model, wait=0.5, poll=0.1).acquire()
    finally:
        holder.release()
    assert _names(client, model) == set()


def test_a_stale_lock_is_broken_once_and_kept_as_evidence(client: MlflowClient) -> None:
    model = f"lock-{uuid.uuid4().hex[:8]}"
    _plant_stale(client, model)
    first = RegistryLock(client, model, ttl=60, wait=5, poll=0.05)
    first.acquire()
    names = _names(client, model)
    assert lock_name(model) in names
    (stale,) = names - {lock_name(model)}
    assert stale.startswith(f"{lock_name(model)}.stale-")
    assert client.get_registered_model(stale).tags[TAG_OWNER] == "dead-host.1.x"
    # A second waiter that read the same stale holder before the first broke it now tries to
    # break it too: the rename target exists, so the first waiter's fresh lock is not touched.
    late = RegistryLock(client, model)
    created = client.get_registered_model(stale).creation_timestamp
    late._break_stale(_Holder("dead-host.1.x", expires_at=time.time() - 5, created_ms=created))
    assert client.get_registered_model(lock_name(model)).tags[TAG_OWNER] == first.token
    first.release()
    assert _names(client, model) == {stale}


def test_a_create_whose_answer_was_lost_counts_as_acquired(client: MlflowClient) -> None:
    model = f"lock-{uuid.uuid4().hex[:8]}"
    lock = RegistryLock(client, model, ttl=60, wait=0)
    # As if our create reached the server and the client's retry got "already exists".
    client.create_registered_model(
        lock_name(model), tags={TAG_OWNER: lock.token, TAG_EXPIRES: f"{time.time() + 60:.3f}"}
    )
    lock.acquire()
    assert lock.held
    lock.release()
    assert _names(client, model) == set()


def test_an_expired_lock_is_not_deleted_by_its_late_owner(client: MlflowClient) -> None:
    model = f"lock-{uuid.uuid4().hex[:8]}"
    lock = RegistryLock(client, model, ttl=0.2)
    lock.acquire()
    time.sleep(0.4)  # paused past its ttl: someone may have broken it and hold a new one
    lock.release()
    assert _names(client, model) == {lock_name(model)}  # left for the next waiter to break
    with RegistryLock(client, model, wait=5, poll=0.05):
        pass
    assert len(_names(client, model)) == 1  # only the broken copy remains


def test_bad_settings_are_rejected(client: MlflowClient) -> None:
    with pytest.raises(ValueError, match="need ttl > 0"):
        RegistryLock(client, "m", ttl=0)
    with pytest.raises(ValueError, match="lease > 0"):
        RegistryLock(client, "m", lease=0)


def test_a_live_holder_keeps_its_lock_past_many_leases_by_its_heartbeat(
    client: MlflowClient,
) -> None:
    model = f"lock-{uuid.uuid4().hex[:8]}"
    with RegistryLock(client, model, lease=3.0) as holder:
        with pytest.raises(LockTimeoutError, match=f"is held by {holder.token} "):
            RegistryLock(client, model, wait=12.0, poll=0.1).acquire()
        assert holder.held
    assert _names(client, model) == set()


_HOLD_AND_HANG = """
import sys, time
from mlflow import MlflowClient
from ctrflow.components.registry._registry_lock import RegistryLock
RegistryLock(MlflowClient(sys.argv[1]), sys.argv[2]).acquire()  # default ttl and lease
print("held", flush=True)
time.sleep(3600)
"""


def test_a_killed_holders_lock_is_taken_over_within_seconds(
    client: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real process takes the lock with the default settings and is SIGKILLed holding it.
    The waiter's own wait (120 s) is the hang guard: the lock of a killed holder used to stand
    for its whole 300 s ttl."""
    model = f"lock-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_HANG, client.tracking_uri, model],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        dead_owner = client.get_registered_model(lock_name(model)).tags[TAG_OWNER]
        assert dead_owner.split(".")[1] == str(proc.pid)  # host.pid.uuid, for people to read
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        with RegistryLock(client, model, wait=120, poll=0.2) as waiter:
            took = time.monotonic() - killed
            assert client.get_registered_model(lock_name(model)).tags[TAG_OWNER] == waiter.token
    finally:
        proc.kill()
        proc.wait(timeout=30)
    (stale,) = _names(client, model)  # the dead holder's lock, kept as evidence
    assert client.get_registered_model(stale).tags[TAG_OWNER] == dead_owner
    with capsys.disabled():
        print(f"\n[lock takeover] a SIGKILLed holder's lock was taken over {took:.1f} s after")
