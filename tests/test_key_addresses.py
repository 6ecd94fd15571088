"""Where each key is used from (``addresses`` in a key's description; ``store/key_addresses.py``,
migration 0013): the last five client addresses per key, each with when it was last seen,
written as rarely as the key's last use, shown to its owner and admins only.

In-process on a real SQLite database (the store, the authenticator's writes, who sees what),
on real PostgreSQL (the upsert and the pruning), and against a real server with real peers:
the loopback range is 127.0.0.0/8, so a client bound to 127.0.0.2 is another peer than
127.0.0.1."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from mlflow_hokusai.auth.authenticator import Authenticator, Identity
from mlflow_hokusai.auth.cache import LookupCache
from mlflow_hokusai.auth.credentials import parse
from mlflow_hokusai.keys.management import Actor, KeyManager, issue_key
from mlflow_hokusai.store.engine import get_engine, upgrade
from mlflow_hokusai.store.key_addresses import KEPT
from mlflow_hokusai.store.keys import KeyStore
from tests.helpers import key_database
from tests.security.raw import send

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
T0 = datetime(2026, 12, 1, 12, 0, 0)


def _addresses(store: KeyStore, key_id: str) -> list[str]:
    return [seen.address for seen in store.addresses([key_id]).get(key_id, [])]


# -- the store ---------------------------------------------------------------------------------
def _keeps_the_five_most_recent(store: KeyStore) -> None:
    for number in range(7):  # seven addresses, a second apart
        store.touch("k-seven", T0 + timedelta(seconds=number), f"10.0.0.{number}")
    assert _addresses(store, "k-seven") == [f"10.0.0.{n}" for n in (6, 5, 4, 3, 2)]
    store.touch("k-seven", T0 + timedelta(seconds=30), "10.0.0.3")  # seen again: first
    store.touch("k-seven", T0 + timedelta(seconds=31), "10.0.0.9")  # new: the oldest goes
    seen = store.addresses(["k-seven"])["k-seven"]
    assert [s.address for s in seen] == ["10.0.0.9", "10.0.0.3", "10.0.0.6", "10.0.0.5", "10.0.0.4"]
    assert seen[0].to_dict() == {"address": "10.0.0.9", "last_seen_at": "2026-12-01T12:00:31+00:00"}
    # Times are to the second: in a tie the address just seen stays.
    for number in range(7):
        store.touch("k-tie", T0, f"10.0.1.{9 - number}")
    assert len(_addresses(store, "k-tie")) == KEPT and "10.0.1.3" in _addresses(store, "k-tie")
    with store.engine.connect() as conn:  # no more than five rows are kept, not just shown
        rows = conn.exec_driver_sql("SELECT count(*) FROM hokusai_key_addresses").scalar()
    assert rows == 2 * KEPT
    # Many keys at once (an admin's list), in chunks of ids; keys never used are left out.
    many = store.addresses([f"k-{n}" for n in range(1200)] + ["k-seven"])
    assert list(many) == ["k-seven"]


def test_the_store_keeps_each_keys_five_most_recent_addresses(tmp_path):
    _keeps_the_five_most_recent(KeyStore(key_database(tmp_path / "keys.db")))


@pytest.mark.postgres
def test_the_store_keeps_five_on_postgresql(postgres):
    engine = get_engine(postgres.create_database("key_addresses"))
    upgrade(engine)
    _keeps_the_five_most_recent(KeyStore(engine))


def test_touch_with_an_address_also_records_last_use(tmp_path):
    store = KeyStore(key_database(tmp_path / "keys.db"))
    _, record = issue_key(store, "alice")
    store.touch(record.id, T0, "192.0.2.7")
    assert store.get(record.id).last_used_at == T0
    store.touch(record.id, T0 + timedelta(seconds=5))  # no address: last use only
    assert store.get(record.id).last_used_at == T0 + timedelta(seconds=5)
    assert _addresses(store, record.id) == ["192.0.2.7"]


# -- the authenticator writes as rarely as it records last use ----------------------------------
class CountedTouches(KeyStore):
    """The real store, counting its writes of last use."""

    def __init__(self, engine):
        super().__init__(engine)
        self.touches = []

    def touch(self, key_id, when, address=None):
        self.touches.append(address)
        super().touch(key_id, when, address)


def _wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_write_only_for_a_new_address_or_once_a_minute(tmp_path):
    store = CountedTouches(key_database(tmp_path / "keys.db"))
    authenticator = Authenticator(store, LookupCache(ttl=60))
    key, record = issue_key(store, "alice")
    credential = parse(f"Bearer {key}", None)
    for _ in range(50):
        assert isinstance(authenticator.resolve(credential, "10.0.0.1"), Identity)
    for _ in range(50):
        assert isinstance(authenticator.peek(credential, "10.0.0.2"), Identity)  # cache hits
    _wait_for(lambda: len(_addresses(store, record.id)) == 2, "two addresses")
    # 100 requests, 2 writes (the first, and the first from the second address)
    assert store.touches == ["10.0.0.1", "10.0.0.2"]
    assert set(_addresses(store, record.id)) == {"10.0.0.1", "10.0.0.2"}
    assert authenticator.resolve(credential, None).username == "alice"  # no address: no write
    time.sleep(0.5)
    assert store.touches == ["10.0.0.1", "10.0.0.2"]


# -- who sees them -----------------------------------------------------------------------------
def test_only_the_owner_and_admins_get_a_keys_addresses(tmp_path):
    store = KeyStore(key_database(tmp_path / "keys.db", users=("alice", "bob")))
    manager = KeyManager(store, users=None, audit=None)
    _, alices = issue_key(store, "alice")
    _, bobs = issue_key(store, "bob")
    store.touch(alices.id, T0, "192.0.2.1")
    store.touch(bobs.id, T0, "192.0.2.2")
    both = [alices, bobs]
    shown = {a: manager.described(Actor(a, a == "admin"), both) for a in ("alice", "bob", "admin")}
    assert [d.get("addresses") for d in shown["alice"]] == [
        [{"address": "192.0.2.1", "last_seen_at": "2026-12-01T12:00:00+00:00"}],
        None,  # bob's key, to alice: no field at all
    ]
    assert [d.get("addresses") for d in shown["bob"]][0] is None
    assert [len(d["addresses"]) for d in shown["admin"]] == [1, 1]
    assert shown["alice"][0]["expiring"] is False  # no expiry


# -- a real server -----------------------------------------------------------------------------
def _new_key(server, username: str, **body) -> tuple[str, str]:
    made = server.post(f"{KEYS}/create", server.admin_key, json={"username": username, **body})
    assert made.status_code == 200, made.text
    return made.json()["key"], made.json()["api_key"]["id"]


def _use(server, key: str, source: str) -> None:
    reply = send(server.url, "GET", WHOAMI, [("Authorization", f"Bearer {key}")], source=source)
    assert reply.status == 200, reply.text


def _listed(server, asker: str, key_id: str, username: str | None = None) -> dict:
    params = {"username": username} if username else {}
    listed = server.get(f"{KEYS}/list", asker, params=params)
    assert listed.status_code == 200, listed.text
    return next(k for k in listed.json()["api_keys"] if k["id"] == key_id)


def _seen(server, asker: str, key_id: str, wanted: set[str], username=None) -> list[dict]:
    """The key's addresses as ``asker`` lists them, once ``wanted`` are among them (each
    worker writes in the background)."""
    found = []

    def arrived():
        found[:] = _listed(server, asker, key_id, username)["addresses"]
        return wanted <= {entry["address"] for entry in found}

    _wait_for(arrived, f"addresses {sorted(wanted)}")
    return found


def test_the_owner_sees_the_addresses_a_key_was_used_from(server):
    username = f"seen-{time.time_ns()}"
    key, key_id = _new_key(server, username)
    other, other_id = _new_key(server, username, name="unused")
    _use(server, key, "127.0.0.1")
    _use(server, key, "127.0.0.2")
    seen = _seen(server, key, key_id, {"127.0.0.1", "127.0.0.2"})
    assert sorted(entry["address"] for entry in seen) == ["127.0.0.1", "127.0.0.2"]
    for entry in seen:
        assert set(entry) == {"address", "last_seen_at"}
        assert datetime.fromisoformat(entry["last_seen_at"]).utcoffset() == timedelta(0)
    times = [entry["last_seen_at"] for entry in seen]
    assert times == sorted(times, reverse=True)  # newest first
    # A key never used has none (listing with a key uses that key, not the others).
    assert _listed(server, key, other_id)["addresses"] == []
    # An admin sees them too, in the list and in what a revoke answers.
    assert _listed(server, server.admin_key, key_id, username)["addresses"] == seen
    revoked = server.post(f"{KEYS}/revoke", server.admin_key, json={"key_id": key_id})
    assert revoked.json()["api_key"]["addresses"] == seen
    assert server.post(f"{KEYS}/revoke", other, json={"key_id": other_id}).status_code == 200


def test_nobody_else_sees_them(server):
    owner = f"seen-owner-{time.time_ns()}"
    key, key_id = _new_key(server, owner)
    outsider, outsider_id = _new_key(server, f"seen-outsider-{time.time_ns()}")
    _use(server, key, "127.0.0.2")
    _seen(server, key, key_id, {"127.0.0.2"})
    for refused in (
        server.get(f"{KEYS}/list", outsider, params={"username": owner}),
        server.get(f"{KEYS}/list", outsider, params={"all": "true"}),
        server.post(f"{KEYS}/revoke", outsider, json={"key_id": key_id}),
        server.post(f"{KEYS}/rotate", outsider, json={"key_id": key_id}),
    ):
        assert refused.status_code == 403, refused.text
        assert "127.0.0.2" not in refused.text
    mine = server.get(f"{KEYS}/list", outsider).json()["api_keys"]
    assert [k["id"] for k in mine] == [outsider_id]
    assert "127.0.0.2" not in str(mine)  # only where the outsider's own key was used


def test_at_most_five_addresses_are_kept_the_most_recent(server):
    """Seven peers, one after the other: the last five stay, newest first. (The admin looks,
    so that the key is used from these peers only.)"""
    username = f"seen-many-{time.time_ns()}"
    key, key_id = _new_key(server, username)
    used = [f"127.0.0.{n}" for n in range(2, 9)]
    for address in used:
        _use(server, key, address)
        _seen(server, server.admin_key, key_id, {address}, username)  # before the next use
        time.sleep(1.1)  # so that each is last seen in a second of its own
    seen = _listed(server, server.admin_key, key_id, username)["addresses"]
    assert [entry["address"] for entry in seen] == list(reversed(used[-KEPT:]))
