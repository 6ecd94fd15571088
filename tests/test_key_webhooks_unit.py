"""Key event webhooks without a server: the signature is MLflow's, the settings refuse what
they must, every key event is audited and queued in one transaction with its reason, notices
are made once per key, the lease admits one sender, and the sender delivers each event once,
in order, through a receiver's outage. Real SQLite files and a real loopback receiver."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from mlflow_hokusai.config import ConfigError, load_settings
from mlflow_hokusai.keys import webhooks
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.format import generate_key
from mlflow_hokusai.keys.lifetime import LifetimeRules
from mlflow_hokusai.keys.management import Actor, KeyManager, store_key
from mlflow_hokusai.keys.notices import KeyNotices
from mlflow_hokusai.keys.webhook_sender import LEASE, WebhookSender
from mlflow_hokusai.store.audit import AuditStore
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.engine import get_engine, upgrade
from mlflow_hokusai.store.keys import KeyStore
from mlflow_hokusai.store.leases import LeaseStore
from mlflow_hokusai.store.models import ApiKey, WebhookDelivery, mlflow_users
from mlflow_hokusai.store.webhooks import WebhookStore
from tests.webhook_receiver import Receiver, verify_mlflow_signature

SECRET = "a-test-secret-of-32-characters!!"


@pytest.fixture
def engine(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    upgrade(engine)
    mlflow_users.metadata.create_all(engine)  # keys are joined to MLflow's users
    return engine


def _outbox(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)).all()


def _audit(engine, *events) -> list:
    return [r for r in AuditStore(engine).list() if not events or r.event in events]


# -- the signature -----------------------------------------------------------------------------
def test_the_signature_is_mlflows_byte_for_byte():
    """Our headers and signed content are those of MLflow's own webhook delivery (its
    signing function and header names, read from the installed MLflow)."""
    from mlflow.webhooks import constants
    from mlflow.webhooks.delivery import _generate_hmac_signature

    row = webhooks.ping_row()
    headers = webhooks.signed_headers(SECRET, row.delivery_id, row.payload, timestamp=1767225600)
    assert headers[constants.WEBHOOK_SIGNATURE_HEADER] == _generate_hmac_signature(
        SECRET, row.delivery_id, "1767225600", row.payload
    )
    assert headers[constants.WEBHOOK_TIMESTAMP_HEADER] == "1767225600"
    assert headers[constants.WEBHOOK_DELIVERY_ID_HEADER] == row.delivery_id
    assert headers[constants.WEBHOOK_SIGNATURE_HEADER].startswith(
        f"{constants.WEBHOOK_SIGNATURE_VERSION},"
    )


def test_the_documented_check_accepts_ours_and_refuses_changes():
    row = webhooks.ping_row()
    headers = webhooks.signed_headers(SECRET, row.delivery_id, row.payload)
    stamp, signature = headers["X-MLflow-Timestamp"], headers["X-MLflow-Signature"]
    assert verify_mlflow_signature(row.payload, signature, SECRET, row.delivery_id, stamp)
    changed = row.payload.replace("test", "tesT")
    assert not verify_mlflow_signature(changed, signature, SECRET, row.delivery_id, stamp)
    assert not verify_mlflow_signature(row.payload, signature, SECRET * 2, row.delivery_id, stamp)
    assert not verify_mlflow_signature(row.payload, signature, SECRET, "other-id", stamp)


def test_the_docs_receiver_snippet_accepts_ours():
    """The verification function docs/key-management.md gives receivers checks our headers."""
    import ast
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "key-management.md"
    section = page.read_text().split("### Verifying a delivery", 1)[1]
    tree = ast.parse(section.split("```python\n", 1)[1].split("```", 1)[0])
    check = next(n for n in tree.body if getattr(n, "name", "") == "verify_mlflow_signature")
    namespace: dict = {}
    exec("import base64, hashlib, hmac, time\n" + ast.unparse(check), namespace)
    row = webhooks.ping_row()
    headers = webhooks.signed_headers(SECRET, row.delivery_id, row.payload)
    args = (headers["X-MLflow-Signature"], SECRET, row.delivery_id, headers["X-MLflow-Timestamp"])
    assert namespace["verify_mlflow_signature"](row.payload, *args)
    assert not namespace["verify_mlflow_signature"](row.payload + " ", *args)


def test_urls_are_shown_without_their_secrets():
    url = "https://hook:pw@example.com:8443/in/T0K3N?token=abc"
    assert webhooks.shown_url(url) == "https://example.com:8443/in/T0K3N"
    assert webhooks.receiver_id(url) != webhooks.receiver_id("https://example.com/other")


# -- settings ----------------------------------------------------------------------------------
def test_https_urls_and_a_secret_are_taken(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    settings = load_settings(
        {
            "HOKUSAI_KEY_WEBHOOK_URLS": "https://a.example/h, http://127.0.0.1:9/x,http://[::1]/y",
            "HOKUSAI_KEY_WEBHOOK_SECRET_FILE": str(secret),
            "HOKUSAI_KEY_WEBHOOK_CHECK_INTERVAL": "1s",
        }
    )
    assert settings.key_webhook_urls == (
        "https://a.example/h",
        "http://127.0.0.1:9/x",
        "http://[::1]/y",
    )
    assert settings.key_webhook_secret == SECRET and SECRET not in repr(settings)
    assert settings.key_webhook_check_interval == 1


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("http://hooks.example.com/x", "uses http to hooks.example.com, which is not this"),
        ("http://10.0.0.7/x", "uses http to 10.0.0.7"),
        ("ftp://example.com/x", "is not an absolute http"),
        ("https://example.com/x#frag", "has a fragment"),
        ("example.com/x", "is not an absolute http"),
    ],
)
def test_other_urls_are_refused_at_start_naming_the_setting(urls, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_settings({"HOKUSAI_KEY_WEBHOOK_URLS": urls, "HOKUSAI_KEY_WEBHOOK_SECRET": SECRET})
    assert "HOKUSAI_KEY_WEBHOOK_URLS" in str(refused.value)


def test_urls_need_a_long_enough_secret():
    url = {"HOKUSAI_KEY_WEBHOOK_URLS": "https://a.example/h"}
    with pytest.raises(ConfigError, match="key_webhook_secret .* is required"):
        load_settings(url)
    with pytest.raises(ConfigError, match="at least 16 characters, not 5"):
        load_settings({**url, "HOKUSAI_KEY_WEBHOOK_SECRET": "short"})


# -- the one audit path ------------------------------------------------------------------------
@pytest.fixture
def with_users(tmp_path):
    """A key database with MLflow's own auth tables (users made by the key manager)."""
    from mlflow_hokusai import _mlflow

    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    users = _mlflow.user_store(uri)
    engine = get_engine(uri)
    upgrade(engine)
    return engine, users


def _manager(engine, users, webhooks_on=True):
    return KeyManager(KeyStore(engine), users, AuditLog(AuditStore(engine)), webhooks=webhooks_on)


def test_key_events_are_audited_and_queued_together_with_their_reasons(with_users):
    engine, users = with_users
    manager = _manager(engine, users)
    operator, alice = Actor.operator(), Actor("alice", False, source="10.0.0.7")
    key, first = manager.create(operator, username="alice", name="laptop")
    manager.revoke(alice, first.id)  # by the owner
    _, second = manager.create(operator, username="alice")
    manager.revoke(operator, second.id)  # by an admin
    _, third = manager.create(alice, name="ci")
    _, fourth, _ = manager.rotate(alice, third.id)
    manager.revoke_user_keys(operator, "alice", "deleted")  # the owner is gone
    federated = store_key(manager.store, generate_key(), "bob", federated_by="p1")
    manager.revoke_federated(operator, "p1")
    leaked = store_key(manager.store, generate_key(), "bob")
    manager._audit("revoked", Actor("github", False), leaked, "leaked: https://github.com/x")

    rows = _outbox(engine)
    sent = [json.loads(r.payload) for r in rows]
    expected = [
        ("created", first.id, None),
        ("revoked", first.id, "user"),
        ("created", second.id, None),
        ("revoked", second.id, "admin"),
        ("created", third.id, None),
        ("rotated", third.id, None),
        ("revoked", fourth.id, "owner-deleted"),
        ("revoked", federated.id, "policy-deleted"),
        ("revoked", leaked.id, "leaked"),
    ]
    assert [(p["event"], p["data"]["key_id"], p["data"].get("reason")) for p in sent] == expected
    audited = _audit(engine, *webhooks.EVENTS)
    assert [(a.event, a.key_id) for a in audited] == [(e, k) for e, k, _ in expected]
    assert {r.delivery_id for r in rows} == {p["delivery_id"] for p in sent}
    rotated = sent[5]["data"]
    assert (rotated["replaced_by"], rotated["replaced_by_prefix"]) == (
        fourth.id,
        fourth.display_prefix,
    )
    created = sent[0]
    assert created["entity"] == "api_key" and created["action"] == "created"
    assert created["data"]["key_prefix"] == first.display_prefix
    assert (created["data"]["owner"], created["data"]["name"]) == ("alice", "laptop")
    assert created["data"]["actor"] == operator.name and sent[1]["data"]["actor"] == "alice"
    body = "".join(r.payload for r in rows)
    assert key not in body and key[12:40] not in body  # never the key
    with engine.connect() as conn:
        digests = conn.execute(sa.select(ApiKey.digest)).scalars().all()
    assert digests and not any(d in body for d in digests)  # never its digest


def test_without_urls_nothing_is_queued(with_users):
    engine, users = with_users
    manager = _manager(engine, users, webhooks_on=False)
    _, record = manager.create(Actor.operator(), username="carl")
    manager.revoke(Actor.operator(), record.id)
    assert _outbox(engine) == [] and len(_audit(engine, "created", "revoked")) == 2


# -- notices -----------------------------------------------------------------------------------
def _key(engine, user, **columns):
    record = store_key(KeyStore(engine), generate_key(), user)
    if columns:
        with engine.begin() as conn:
            conn.execute(sa.update(ApiKey).where(ApiKey.id == record.id).values(**columns))
    return record.id


def test_expiring_and_dormant_notices_are_made_once(engine):
    now = utcnow()
    soon = _key(engine, "dee", expires_at=now + timedelta(hours=12))
    week = _key(engine, "dee", expires_at=now + timedelta(days=3))
    _key(engine, "dee", expires_at=now + timedelta(days=30))
    _key(engine, "dee")  # never expires, used lately
    old = _key(engine, "dee", created_at=now - timedelta(days=40))
    _key(engine, "dee", expires_at=now + timedelta(hours=2), revoked_at=now)
    _key(engine, "dee", expires_at=now + timedelta(hours=2), replaced_by="x")
    _key(engine, "dee", expires_at=now + timedelta(minutes=15), federated_by="p1")
    notices = KeyNotices(WebhookStore(engine), LifetimeRules(unused_after_days=30))
    assert notices.check() == 3
    assert notices.check() == 0  # once
    sent = [json.loads(r.payload) for r in _outbox(engine)]
    found = {(p["event"], p["data"]["key_id"], p["data"].get("within_days")) for p in sent}
    assert found == {("expiring", soon, 1), ("expiring", week, 7), ("dormant", old, None)}
    assert {(a.event, a.key_id, a.actor) for a in _audit(engine, "expiring", "dormant")} == {
        ("expiring", soon, "server"),
        ("expiring", week, "server"),
        ("dormant", old, "server"),
    }
    # the 7-day key, a week later inside its last day, gets its 1-day notice (once)
    with engine.begin() as conn:
        conn.execute(
            sa.update(ApiKey).where(ApiKey.id == week).values(expires_at=now + timedelta(hours=20))
        )
    assert notices.check() == 1 and notices.check() == 0
    assert json.loads(_outbox(engine)[-1].payload)["data"]["within_days"] == 1


def test_two_checkers_make_each_notice_once(engine):
    _key(engine, "eve", expires_at=utcnow() + timedelta(hours=3))
    first = KeyNotices(WebhookStore(engine), LifetimeRules())
    second = KeyNotices(WebhookStore(engine), LifetimeRules())
    assert first.check() + second.check() == 1
    assert len(_outbox(engine)) == 1 and len(_audit(engine, "expiring")) == 1


# -- the lease ---------------------------------------------------------------------------------
def test_one_holder_at_a_time_and_takeover(engine):
    leases = LeaseStore(engine)
    assert leases.take("job", "a", 30) and not leases.take("job", "b", 30)
    assert leases.take("job", "a", 30)  # renewed
    leases.release("job", "a")
    assert leases.take("job", "b", 0.5) and not leases.take("job", "a", 30)
    import time

    time.sleep(1.0)  # b stopped renewing: its lease lapses
    assert leases.take("job", "a", 30) and leases.holder("job") == "a"


# -- the sender --------------------------------------------------------------------------------
def _events(engine, count):
    manager = KeyManager(KeyStore(engine), _NoUsers(), AuditLog(AuditStore(engine)), webhooks=True)
    actor = Actor("fay", False)
    for i in range(count):
        manager.create(actor, name=f"k{i}")


class _NoUsers:
    """No MLflow user store: the actor creates its own keys."""

    def has_user(self, username):
        return True


def test_one_sender_delivers_each_event_once_in_order(engine):
    receiver = Receiver(SECRET).start()
    try:
        senders = [
            WebhookSender(engine, (receiver.url,), SECRET, holder=name) for name in ("a", "b")
        ]
        _events(engine, 5)
        assert [s.run_once() for s in senders] == [True, False]  # b is not the holder
        assert len(receiver.got()) == 5 and all(d.valid for d in receiver.got())
        queued = [r.delivery_id for r in _outbox(engine)]
        assert [d.delivery_id for d in receiver.got()] == queued
        assert WebhookStore(engine).delivered_ids() == queued
        assert [s.run_once() for s in senders] == [True, False] and len(receiver.got()) == 5
        assert LeaseStore(engine).holder(LEASE) == "a"
        senders[0].release()
        _events(engine, 1)
        assert senders[1].run_once() and len(receiver.got()) == 6  # b took over
    finally:
        receiver.stop()


def test_a_failing_receiver_is_retried_then_gets_everything_once_in_order(engine):
    receiver = Receiver(SECRET, status=503).start()
    try:
        sender = WebhookSender(engine, (receiver.url,), SECRET, max_backoff=1.0)
        _events(engine, 3)
        sender.run_once()
        assert len(receiver.got()) == 1  # one try, then it backs off
        receiver.status = 200
        import time

        deadline = time.monotonic() + 60
        while len(WebhookStore(engine).delivered_ids()) < 3 and time.monotonic() < deadline:
            sender.run_once()
            time.sleep(0.2)
        ids = [d.delivery_id for d in receiver.got()]
        queued = [r.delivery_id for r in _outbox(engine)]
        assert ids == [queued[0], *queued]  # the first twice (503, then 200), in order
        rows = _outbox(engine)
        assert [r.attempts for r in rows] == [2, 1, 1]
        assert all(
            json.loads(r.results) == {webhooks.receiver_id(receiver.url): "delivered"} for r in rows
        )
    finally:
        receiver.stop()


def test_an_event_failing_past_retry_for_is_given_up_and_recorded(engine):
    receiver = Receiver(SECRET, status=500).start()
    try:
        sender = WebhookSender(engine, (receiver.url,), SECRET, retry_for=0)
        _events(engine, 1)
        sender.run_once()
        (row,) = _outbox(engine)
        assert row.done_at is not None and row.attempts == 1
        assert json.loads(row.results) == {webhooks.receiver_id(receiver.url): "failed: HTTP 500"}
        assert row.last_error == f"{webhooks.shown_url(receiver.url)}: HTTP 500"
    finally:
        receiver.stop()
