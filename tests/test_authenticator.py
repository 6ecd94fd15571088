"""The authenticator and its cache, in-process on a real SQLite key database (no server).

The decisive one: a key lookup racing a revoke in the same worker must not leave the revoked
key cached as active (the next request is refused at once)."""

from __future__ import annotations

import base64
import threading

import pytest

from mlflow_hokusai.auth.authenticator import Authenticator, AuthFailure, Identity
from mlflow_hokusai.auth.cache import LookupCache
from mlflow_hokusai.auth.credentials import Credential, parse
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import Actor, KeyManager, issue_key
from mlflow_hokusai.store.audit import AuditStore
from mlflow_hokusai.store.keys import KeyStore
from mlflow_hokusai.store.models import mlflow_users
from tests.helpers import key_database


class Users:
    """The part of MLflow's user store KeyManager uses, over the same ``users`` table."""

    def __init__(self, engine):
        self.engine = engine

    def has_user(self, username):
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    mlflow_users.select().where(mlflow_users.c.username == username)
                ).first()
                is not None
            )


@pytest.fixture
def store(tmp_path):
    return KeyStore(key_database(tmp_path / "keys.db"))


def bearer(key: str) -> Credential:
    return parse(f"Bearer {key}", None)


def test_peek_answers_only_from_the_cache(store):
    authenticator = Authenticator(store, LookupCache(ttl=60))
    key, _ = issue_key(store, "alice")
    assert authenticator.peek(bearer(key)) is None  # not looked up yet
    identity = authenticator.resolve(bearer(key))
    assert isinstance(identity, Identity) and identity.username == "alice"
    assert authenticator.peek(bearer(key)) == identity
    authenticator.cache.clear()
    assert authenticator.peek(bearer(key)) is None


@pytest.mark.parametrize(
    "credential, reason",
    [
        (parse(None, None), "missing"),
        (parse("Token x", None), "malformed"),
        (parse("Bearer hk_live_short", None), "malformed"),
    ],
)
def test_failures_that_need_no_lookup_are_answered_by_peek(store, credential, reason):
    authenticator = Authenticator(store, LookupCache(ttl=60))
    result = authenticator.peek(credential)
    assert isinstance(result, AuthFailure) and result.reason == reason
    assert authenticator.resolve(credential) == result


def test_a_zero_ttl_caches_nothing(store):
    authenticator = Authenticator(store, LookupCache(ttl=0))
    key, record = issue_key(store, "alice")
    assert isinstance(authenticator.resolve(bearer(key)), Identity)
    assert authenticator.peek(bearer(key)) is None
    store.revoke(record.id)  # no clear: nothing was cached to clear
    refused = authenticator.resolve(bearer(key))
    assert isinstance(refused, AuthFailure) and refused.reason == "revoked"
    assert refused.key_id == record.id and refused.username == "alice"


def test_password_checks_are_cached_by_a_keyed_digest(store):
    calls = []

    def check(username, password):
        calls.append(username)
        return False if password == "right" else None

    authenticator = Authenticator(store, LookupCache(ttl=60), check_password=check)
    good = parse("Basic " + base64.b64encode(b"bob:right").decode(), None)
    bad = parse("Basic " + base64.b64encode(b"bob:wrong").decode(), None)
    assert authenticator.resolve(good) == Identity("bob", False, None, "write")
    assert authenticator.peek(good) == Identity("bob", False, None, "write")
    assert authenticator.resolve(bad).reason == "bad-password"
    assert calls == ["bob", "bob"]
    assert not any("right" in repr(k) for k in authenticator.cache._entries)


class SlowLookups(KeyStore):
    """The real store, with a lookup that pauses after reading its row (as a slow database
    round trip would) until the test lets it go on."""

    def __init__(self, engine):
        super().__init__(engine)
        self.read, self.go_on = threading.Event(), threading.Event()

    def lookup(self, digest):
        record = super().lookup(digest)
        self.read.set()
        assert self.go_on.wait(10)
        return record


def test_a_lookup_racing_a_revoke_does_not_keep_the_key_alive(store):
    slow = SlowLookups(store.engine)
    cache = LookupCache(ttl=60)
    authenticator = Authenticator(slow, cache)
    manager = KeyManager(
        store, Users(store.engine), AuditLog(AuditStore(store.engine)), on_change=cache.clear
    )
    key, record = issue_key(store, "alice")
    results = []
    in_flight = threading.Thread(target=lambda: results.append(authenticator.resolve(bearer(key))))
    in_flight.start()
    assert slow.read.wait(10)  # the lookup has read the key as active...
    manager.revoke(Actor("alice", False), record.id)  # ...and the key is revoked meanwhile
    slow.go_on.set()
    in_flight.join(10)
    assert isinstance(results[0], Identity)  # the request already in flight got through
    # The next request in this worker is refused at once, not after the cache TTL.
    slow.read.clear()
    after = authenticator.resolve(bearer(key))
    assert isinstance(after, AuthFailure) and after.reason == "revoked", after
    assert authenticator.peek(bearer(key)) == after
