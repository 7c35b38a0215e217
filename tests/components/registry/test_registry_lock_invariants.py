"""The promotion lock's rules one by one, on an MLflow registry in a SQLite file (MLflow's own
SQL store, no server): create to acquire, a lease renewed by a heartbeat, a dead lock broken by
a rename, and a release that never deletes another holder's lock.

Fast checks that `make mutation` runs against every mutant of `_registry_lock.py`; the
concurrent holders and killed processes against real `mlflow server`s are in
test_registry_lock.py."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from ctrflow.components.names import TAG_LOCK_EXPIRES as TAG_EXPIRES
from ctrflow.components.names import TAG_LOCK_OWNER as TAG_OWNER
from ctrflow.components.registry import _registry_lock
from ctrflow.components.registry._registry_lock import (
    LOCK_SUFFIX,
    LockTimeoutError,
    RegistryLock,
    _Holder,
    _Silence,
    lock_name,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def client(registry_db: str) -> MlflowClient:
    return MlflowClient(registry_db, registry_db)


def _model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _names(client: MlflowClient) -> set[str]:
    return {m.name for m in client.search_registered_models()}


def _plant(client: MlflowClient, model: str, owner: str, expires: str) -> None:
    client.create_registered_model(lock_name(model), tags={TAG_OWNER: owner, TAG_EXPIRES: expires})


def _stale_name(client: MlflowClient, model: str, owner: str) -> str:
    created = client.get_registered_model(lock_name(model)).creation_timestamp
    digest = hashlib.sha256(f"{owner}@{created}".encode()).hexdigest()[:16]
    return f"{lock_name(model)}.stale-{digest}"


def test_the_lock_is_a_registered_model_beside_the_model() -> None:
    assert LOCK_SUFFIX == ".ctrflow-promotion-lock"
    assert lock_name("ctr") == "ctr.ctrflow-promotion-lock"


@pytest.mark.parametrize(
    "settings",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"wait": -0.1},
        {"poll": 0},
        {"poll": -1},
        {"lease": 0},
        {"lease": -1},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need ttl > 0, wait >= 0, poll > 0, lease > 0; got"):
        RegistryLock(None, "m", **settings)


def test_settings_kept_and_the_lease_is_at_most_the_ttl() -> None:
    lock = RegistryLock(None, "m", ttl=5, wait=0, poll=0.25, lease=10)
    assert (lock.name, lock.ttl, lock.wait, lock.poll, lock.lease) == (
        lock_name("m"),
        5,
        0,
        0.25,
        5,
    )
    assert RegistryLock(None, "m", ttl=50, lease=3).lease == 3
    assert not lock.held
    lock.release()  # never acquired: nothing to do
    a, b = RegistryLock(None, "m"), RegistryLock(None, "m")
    assert a.token != b.token and a.token.count(".") >= 2


def test_holder_expiry_and_the_waiters_own_clock_of_silence() -> None:
    assert not _Holder(owner="", expires_at=0.0).expired()  # being created: no tags yet
    assert _Holder(owner="x", expires_at=time.time() - 1).expired()
    assert not _Holder(owner="x", expires_at=time.time() + 60).expired()
    silence = _Silence()
    holder = _Holder(owner="x", expires_at=1.0, created_ms=5, beat="1.000")
    assert silence.for_seconds(holder) < 0.05
    time.sleep(0.2)
    assert silence.for_seconds(holder) >= 0.2
    for changed in (
        _Holder(owner="y", expires_at=1.0, created_ms=5, beat="1.000"),
        _Holder(owner="y", expires_at=1.0, created_ms=6, beat="1.000"),
        _Holder(owner="y", expires_at=1.0, created_ms=6, beat="2.000"),
    ):
        time.sleep(0.1)
        assert silence.for_seconds(changed) < 0.05


def test_acquire_writes_owner_and_expiry_and_release_deletes_it(client: MlflowClient) -> None:
    model = _model()
    lock = RegistryLock(client, model, lease=30, poll=0.05)
    before = time.time()
    with lock as entered:
        # entered.held, not lock.held: the same object, but mypy would keep lock.held narrowed
        # to True past the block and call the check that it was released unreachable.
        assert entered is lock and entered.held
        tags = client.get_registered_model(lock.name).tags
        assert tags[TAG_OWNER] == lock.token
        # written with 3 decimals: rounded by up to half a millisecond either way
        assert before + 30 - 0.0005 <= float(tags[TAG_EXPIRES]) <= time.time() + 30 + 0.0005
        other = RegistryLock(client, model, wait=0, poll=0.05)
        with pytest.raises(LockTimeoutError) as err:
            other.acquire()
        assert str(err.value).startswith(
            f"registry lock '{lock.name}' is held by {lock.token} (until 20"
        )
        assert str(err.value).endswith("waited 0 s")
    assert not lock.held
    assert lock.name not in _names(client)
    with RegistryLock(client, model, wait=0) as again:  # free again at once
        assert again.held


def test_a_waiter_gets_the_lock_once_it_is_released(client: MlflowClient) -> None:
    model = _model()
    first = RegistryLock(client, model, lease=30)
    first.acquire()
    waiter = RegistryLock(client, model, wait=30, poll=0.05, lease=30)
    got = threading.Event()

    def acquire_then_signal() -> None:
        waiter.acquire()
        got.set()

    thread = threading.Thread(target=acquire_then_signal, daemon=True)
    thread.start()
    assert not got.wait(0.5)
    first.release()
    assert got.wait(20)
    thread.join()
    assert waiter.held
    assert client.get_registered_model(waiter.name).tags[TAG_OWNER] == waiter.token
    waiter.release()


# "expired" is made into a time when the test runs: a value computed at collection would differ
# between pytest-xdist's workers, which must collect the same test ids.
@pytest.mark.parametrize("expires", ["expired", "soon", ""])
def test_an_expired_or_unreadable_lock_is_broken_by_a_rename(
    client: MlflowClient, expires: str, caplog: pytest.LogCaptureFixture
) -> None:
    if expires == "expired":
        expires = f"{time.time() - 5:.3f}"
    model = _model()
    _plant(client, model, "dead-host.1.x", expires)
    stale = _stale_name(client, model, "dead-host.1.x")
    with (
        caplog.at_level(logging.WARNING, logger=_registry_lock.__name__),
        RegistryLock(client, model, wait=0, poll=0.05) as lock,
    ):
        assert client.get_registered_model(lock.name).tags[TAG_OWNER] == lock.token
    assert stale in _names(client)  # kept as evidence
    assert client.get_registered_model(stale).tags[TAG_OWNER] == "dead-host.1.x"
    assert (
        f"broke the dead promotion lock of dead-host.1.x (expiry {expires or 'none'}); "
        f"kept as {stale}"
    ) in caplog.messages


def test_a_lock_without_tags_is_broken_after_a_lease_and_logged_as_unknown(
    client: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model()
    client.create_registered_model(lock_name(model))  # neither owner nor expiry
    stale = _stale_name(client, model, "")
    with (
        caplog.at_level(logging.WARNING, logger=_registry_lock.__name__),
        RegistryLock(client, model, wait=30, poll=0.05, lease=0.6) as lock,
    ):
        assert lock.held
    assert f"broke the dead promotion lock of an unknown owner (expiry none); kept as {stale}" in (
        caplog.messages
    )


def test_a_lock_silent_for_a_whole_lease_is_broken(client: MlflowClient) -> None:
    model = _model()
    _plant(client, model, "paused-host.1.x", f"{time.time() + 3600:.3f}")  # a clock far ahead
    started = time.monotonic()
    with RegistryLock(client, model, wait=30, poll=0.05, lease=0.6) as lock:
        assert lock.held
    assert 0.6 <= time.monotonic() - started < 20
    assert any(".stale-" in n for n in _names(client))


def test_a_live_lock_is_not_broken(client: MlflowClient) -> None:
    model = _model()
    with RegistryLock(client, model, lease=3) as holder:
        waiter = RegistryLock(client, model, wait=4, poll=0.1, lease=3)
        with pytest.raises(LockTimeoutError):
            waiter.acquire()  # the heartbeat keeps changing the expiry: never silent a lease
        assert holder.held
    assert not any(".stale-" in n for n in _names(client))


def test_a_create_whose_answer_was_lost_counts_as_acquired(client: MlflowClient) -> None:
    model = _model()
    lock = RegistryLock(client, model, wait=0, lease=30)
    _plant(client, model, lock.token, f"{time.time() + 30:.3f}")
    lock.acquire()
    assert lock.held
    lock.release()
    assert lock.name not in _names(client)


def test_the_heartbeat_renews_the_expiry_while_held(client: MlflowClient) -> None:
    model = _model()
    # A lease of 1.5 s: a renewal may take a good part of a second on a loaded machine.
    with RegistryLock(client, model, lease=1.5, ttl=60) as lock:
        first = client.get_registered_model(lock.name).tags[TAG_EXPIRES]
        time.sleep(3.75)  # 2.5 leases: held only because it was renewed
        assert lock.held
        assert float(client.get_registered_model(lock.name).tags[TAG_EXPIRES]) > float(first)
    assert lock.name not in _names(client)


def test_past_its_ttl_a_lock_is_no_longer_held_and_is_left_to_be_broken(
    client: MlflowClient,
) -> None:
    model = _model()
    lock = RegistryLock(client, model, lease=0.3, ttl=0.3)
    lock.acquire()
    time.sleep(0.8)
    assert not lock.held
    lock.release()
    assert lock.name in _names(client)  # lapsed: deleting it could delete a new holder's
    assert not lock.held


def test_a_lock_taken_over_is_not_held_and_not_deleted(client: MlflowClient) -> None:
    model = _model()
    lock = RegistryLock(client, model, lease=0.6, ttl=60)
    lock.acquire()
    client.delete_registered_model(lock.name)
    _plant(client, model, "next-holder.2.y", f"{time.time() + 60:.3f}")
    time.sleep(0.8)  # the heartbeat sees another owner
    assert not lock.held
    lock.release()
    assert client.get_registered_model(lock.name).tags[TAG_OWNER] == "next-holder.2.y"


def test_a_lock_deleted_under_its_holder_is_not_held(client: MlflowClient) -> None:
    model = _model()
    lock = RegistryLock(client, model, lease=0.6, ttl=60)
    lock.acquire()
    client.delete_registered_model(lock.name)
    time.sleep(0.8)
    assert not lock.held
    lock.release()
    assert lock.name not in _names(client)


def test_the_defaults_are_a_ten_second_lease_within_five_minutes() -> None:
    lock = RegistryLock(None, "m")
    assert (lock.ttl, lock.wait, lock.poll, lock.lease) == (300.0, 600.0, 0.5, 10.0)


def test_a_holder_read_is_a_frozen_value() -> None:
    holder = _Holder(owner="x", expires_at=1.0, created_ms=5, beat="1.000")
    with pytest.raises(dataclasses.FrozenInstanceError):
        holder.owner = "y"  # type: ignore[misc]
    assert hash(holder) == hash(_Holder(owner="x", expires_at=1.0, created_ms=5, beat="1.000"))


@pytest.mark.parametrize(
    ("renewed", "now", "held"),
    [
        (125.0, 129.5, True),  # renewed 4.5 s ago, 29.5 s after acquiring: within both bounds
        (125.0, 130.0, False),  # exactly ttl after acquiring: over, however recent the renewal
        (110.0, 120.0, False),  # exactly a lease after the last renewal: lapsed
        (110.0, 121.0, False),  # lapsed, although the ttl is far off
    ],
)
def test_held_means_renewed_within_a_lease_and_within_the_ttl(
    monkeypatch: pytest.MonkeyPatch, renewed: float, now: float, held: bool
) -> None:
    lock = RegistryLock(None, "m", ttl=30, lease=10)
    lock._acquired_at, lock._renewed_at = 100.0, renewed
    # _registry_lock reads its clocks as time.monotonic() etc.: the module patched here
    monkeypatch.setattr(time, "monotonic", lambda: now)
    assert lock.held is held


def test_the_heartbeat_is_a_daemon_so_a_holder_that_exits_is_not_kept_alive(
    client: MlflowClient,
) -> None:
    with RegistryLock(client, _model(), lease=30) as lock:
        (heart,) = [t for t in threading.enumerate() if t.name == f"lease {lock.name}"]
        assert heart.daemon


def test_the_heartbeat_that_sees_a_takeover_drops_the_lock_before_its_lease_lapses(
    client: MlflowClient,
) -> None:
    model = _model()
    lock = RegistryLock(client, model, lease=4.5, ttl=60)
    lock.acquire()
    acquired = time.monotonic()
    client.delete_registered_model(lock.name)
    _plant(client, model, "next-holder.2.y", f"{time.time() + 60:.3f}")
    assert lock._heart is not None
    lock._heart.join(10)  # its first beat, after lease/3 s, sees the other owner and stops
    assert not lock._heart.is_alive()
    assert time.monotonic() - acquired < lock.lease  # the own lease alone would still hold
    assert not lock.held
    lock.release()
    assert client.get_registered_model(lock.name).tags[TAG_OWNER] == "next-holder.2.y"


class _DeletedJustBefore(MlflowClient):
    """Another party deletes the lock between the holder's last read and its own delete."""

    def delete_registered_model(self, name: str) -> None:
        super().delete_registered_model(name)
        super().delete_registered_model(name)  # ours: RESOURCE_DOES_NOT_EXIST


class _DeleteRefused(MlflowClient):
    def delete_registered_model(self, name: str) -> None:
        raise MlflowException(f"may not delete {name}", PERMISSION_DENIED)


def test_a_lock_already_gone_at_its_delete_is_released_quietly(registry_db: str) -> None:
    lock = RegistryLock(_DeletedJustBefore(registry_db, registry_db), _model(), lease=30)
    lock.acquire()
    lock.release()
    assert not lock.held
    assert lock.name not in _names(MlflowClient(registry_db, registry_db))


def test_any_other_error_of_the_delete_is_raised(registry_db: str) -> None:
    lock = RegistryLock(_DeleteRefused(registry_db, registry_db), _model(), lease=30)
    lock.acquire()
    with pytest.raises(MlflowException, match="may not delete") as err:
        lock.release()
    assert err.value.error_code == "PERMISSION_DENIED"
    assert not lock.held


def test_an_unreadable_expiry_reads_as_the_epoch(client: MlflowClient) -> None:
    model = _model()
    client.create_registered_model(lock_name(model), tags={TAG_EXPIRES: "soon"})  # no owner yet
    with pytest.raises(LockTimeoutError, match=r"is held by  \(until 1970-01-01T00:00:00Z\)"):
        RegistryLock(client, model, wait=0, poll=0.05).acquire()


def test_a_wait_of_zero_looks_once_and_never_sleeps(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    _plant(client, model, "live-host.1.x", f"{time.time() + 60:.3f}")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s with no time left to wait")

    monkeypatch.setattr(time, "monotonic", lambda: 1000.0)  # a clock that stands
    monkeypatch.setattr(time, "sleep", no_sleep)
    with pytest.raises(LockTimeoutError, match="waited 0 s"):
        RegistryLock(client, model, wait=0).acquire()


def test_waiters_poll_with_a_jitter_of_half_to_one_and_a_half_polls(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    _plant(client, model, "live-host.1.x", f"{time.time() + 3600:.3f}")
    clock, slept = [1000.0], []

    def sleep(seconds: float) -> None:  # a waiting that only moves the clock
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    with pytest.raises(LockTimeoutError, match="waited 80 s"):
        RegistryLock(client, model, wait=80, poll=2, lease=100).acquire()
    assert len(slept) >= 20
    assert min(slept) >= 1.0 and max(slept) <= 3.0  # poll * [0.5, 1.5]
    assert max(slept) - min(slept) > 1.0  # spread: waiters do not march in step


class _BrokenJustBefore(MlflowClient):
    """Another waiter renames the same dead lock a moment before this one."""

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        super().rename_registered_model(name, new_name)
        return super().rename_registered_model(name, new_name)  # ours: the lock is gone


def test_a_dead_lock_broken_by_another_waiter_first_is_retried(registry_db: str) -> None:
    model = _model()
    _plant(MlflowClient(registry_db, registry_db), model, "dead-host.1.x", f"{time.time() - 5:.3f}")
    with RegistryLock(
        _BrokenJustBefore(registry_db, registry_db), model, wait=0, poll=0.05
    ) as lock:
        assert lock.held
    assert any(".stale-" in n for n in _names(MlflowClient(registry_db, registry_db)))


class _OneRenewalLost(MlflowClient):
    """The registry is unreachable for the heartbeat's first renewal, then back."""

    failed = False

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("registry unreachable")
        super().set_registered_model_tag(name, key, value)


def test_the_heartbeat_outlives_a_renewal_that_fails(
    registry_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = _OneRenewalLost(registry_db, registry_db)
    with (
        caplog.at_level(logging.WARNING, logger=_registry_lock.__name__),
        RegistryLock(client, _model(), lease=1.5, ttl=60) as lock,  # slack for a loaded machine
    ):
        time.sleep(3.75)  # 2.5 leases: held only because a later beat renewed it
        assert client.failed
        assert lock.held
    # the warning carries the traceback: "could not renew" alone does not say why
    (failure,) = [
        r for r in caplog.records if r.getMessage() == f"could not renew promotion lock {lock.name}"
    ]
    assert failure.levelno == logging.WARNING
    assert failure.exc_info and failure.exc_info[0] is ConnectionError
    assert "ConnectionError: registry unreachable" in caplog.text


class _TimedStop(threading.Event):
    """The heartbeat's stop signal, recording the timeout of every wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.three_beats = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        if len(self.timeouts) >= 3:
            self.three_beats.set()
        return super().wait(timeout)


def test_the_heartbeat_renews_every_third_of_a_lease(client: MlflowClient) -> None:
    """Three beats per lease: a renewal lost now and then still leaves the lease current."""
    lock = RegistryLock(client, _model(), lease=0.6, ttl=60)
    lock._stop = stop = _TimedStop()
    with lock:
        assert stop.three_beats.wait(20)
    assert stop.timeouts[:3] == [0.6 / 3] * 3
    assert set(stop.timeouts) == {0.6 / 3}


# The boundaries, with the module's clock pinned. The holder stops counting itself as held at
# exactly a lease after its last renewal and exactly ttl after acquiring (`held`); a waiter
# breaks a lock only once it is strictly past its expiry or silent for strictly more than a
# lease, so that at no instant both count on the same lock.


def test_a_lock_expires_only_once_its_expiry_has_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    assert not _Holder(owner="x", expires_at=1000.0).expired()  # due now: not yet past
    assert _Holder(owner="x", expires_at=999.999).expired()


@pytest.mark.parametrize(
    ("wait", "broken"),
    [
        (10.0, False),  # silent for exactly a lease when the wait ends: still alive
        (15.0, True),  # the next look, silent 15 s > the 10 s lease: broken and taken
    ],
)
def test_a_lock_silent_for_more_than_a_lease_is_broken(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch, wait: float, broken: bool
) -> None:
    model = _model()
    _plant(client, model, "paused-host.1.x", f"{time.time() + 3600:.3f}")  # a clock far ahead
    clock = [1000.0]

    def sleep(seconds: float) -> None:  # every poll moves the waiter's clock 5 s on
        clock[0] += 5.0

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    lock = RegistryLock(client, model, wait=wait, poll=5, lease=10)
    if broken:
        with lock:
            assert client.get_registered_model(lock.name).tags[TAG_OWNER] == lock.token
        assert clock[0] == 1015.0
        assert any(".stale-" in n for n in _names(client))
    else:
        with pytest.raises(LockTimeoutError, match="waited 10 s"):
            lock.acquire()
        assert clock[0] == 1010.0
        assert client.get_registered_model(lock.name).tags[TAG_OWNER] == "paused-host.1.x"
        assert not any(".stale-" in n for n in _names(client))


def test_the_heartbeat_stops_renewing_at_exactly_the_ttl(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def clock() -> float:  # the heartbeat looks at exactly ttl after the acquisition at 1000
        return 1030.0 if threading.current_thread().name.startswith("lease ") else 1000.0

    monkeypatch.setattr(time, "monotonic", clock)
    lock = RegistryLock(client, _model(), lease=0.3, ttl=30)
    with caplog.at_level(logging.WARNING, logger=_registry_lock.__name__):
        lock.acquire()
        written = client.get_registered_model(lock.name).tags[TAG_EXPIRES]
        assert lock._heart is not None
        lock._heart.join(10)  # its first beat, after lease/3 s, gives up
        assert not lock._heart.is_alive()
    assert f"promotion lock {lock.name} held for its whole ttl: no longer renewed" in (
        caplog.messages
    )
    assert client.get_registered_model(lock.name).tags[TAG_EXPIRES] == written  # never renewed
    lock.release()


class _ReleasedBeforeOurRead(MlflowClient):
    """The other holder releases the lock between our failed create and our read of it."""

    released = False

    def get_registered_model(self, name: str) -> Any:
        if not self.released:
            self.released = True
            super().delete_registered_model(name)
        return super().get_registered_model(name)


def test_a_lock_released_between_our_create_and_our_read_is_taken(registry_db: str) -> None:
    model = _model()
    _plant(
        MlflowClient(registry_db, registry_db), model, "live-host.1.x", f"{time.time() + 60:.3f}"
    )
    client = _ReleasedBeforeOurRead(registry_db, registry_db)
    with RegistryLock(client, model, wait=0, poll=0.05) as lock:
        assert client.released
        assert lock.held
        tags = MlflowClient(registry_db, registry_db).get_registered_model(lock.name).tags
        assert tags[TAG_OWNER] == lock.token


class _SlowRenewal(MlflowClient):
    """The heartbeat's first read of the lock is slow to answer (a second); the writes to the
    lock are recorded with the thread that made them."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri, uri)
        self.writes: list[str] = []
        self.reading = threading.Event()  # the heartbeat's read has begun
        self.checked = threading.Event()  # the test has looked: the slow answer may come

    @staticmethod
    def _in_heartbeat() -> bool:
        return threading.current_thread().name.startswith("lease ")

    def get_registered_model(self, name: str) -> Any:
        if self._in_heartbeat() and not self.reading.is_set():
            self.reading.set()
            self.checked.wait(1.0)
        return super().get_registered_model(name)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.writes.append(f"{'heartbeat' if self._in_heartbeat() else 'caller'} renew")
        super().set_registered_model_tag(name, key, value)

    def delete_registered_model(self, name: str) -> None:
        self.writes.append(f"{'heartbeat' if self._in_heartbeat() else 'caller'} delete")
        super().delete_registered_model(name)


def test_release_waits_for_a_renewal_in_progress(registry_db: str) -> None:
    """A renewal still running after release() could land after the delete, on the next
    holder's lock: release returns only once the heartbeat has ended."""
    client = _SlowRenewal(registry_db)
    lock = RegistryLock(client, _model(), lease=3, ttl=60)  # a beat each second
    lock.acquire()
    heart = lock._heart
    assert heart is not None and client.reading.wait(20)
    try:
        lock.release()  # while the heartbeat waits for its read's answer
        alive = heart.is_alive()
    finally:
        client.checked.set()
    assert not alive
    assert client.writes == ["heartbeat renew", "caller delete"]
    assert lock.name not in _names(MlflowClient(registry_db, registry_db))
