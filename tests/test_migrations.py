"""A key database made by the previous release (migration 0003) upgrades cleanly: keys are
bound to their owner's user id, and keys whose owner is gone are revoked and audited."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from mlflow_hokusai.store.engine import _alembic_config, get_engine, upgrade
from mlflow_hokusai.store.models import mlflow_users


def test_upgrade_from_0003_binds_keys_to_user_ids(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
    mlflow_users.metadata.create_all(engine)
    row = {
        "display_prefix": "hk_live_abcd",
        "name": "",
        "scope": "write",
        "created_at": "2026-11-30 00:00:00",
    }
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=7, username="erin", is_admin=0))
        for key_id, username in (("k-erin", "erin"), ("k-gone", "gone")):
            conn.execute(
                sa.text(
                    "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, name, "
                    "scope, created_at) VALUES (:id, :digest, :display_prefix, :username, "
                    ":name, :scope, :created_at)"
                ),
                {**row, "id": key_id, "digest": key_id * 4, "username": username},
            )
    upgrade(engine)
    with engine.connect() as conn:
        keys = {r.id: r for r in conn.execute(sa.text("SELECT * FROM hokusai_api_keys"))}
        events = conn.execute(sa.text("SELECT * FROM hokusai_audit_events")).all()
    assert keys["k-erin"].user_id == 7 and keys["k-erin"].revoked_at is None
    assert keys["k-gone"].user_id is None and keys["k-gone"].revoked_at is not None
    assert [(e.event, e.key_id, e.actor) for e in events] == [
        ("revoked", "k-gone", "migration 0004")
    ]
    upgrade(engine)  # idempotent


def test_upgrade_from_0004_adds_the_rotation_columns(tmp_path):
    """A database made by the previous main (0004) keeps its keys, which are not rotating."""
    from mlflow_hokusai.keys.format import generate_key
    from mlflow_hokusai.keys.management import store_key
    from mlflow_hokusai.store.keys import KeyStore

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0004")
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=3, username="fay", is_admin=0))
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, user_id, "
                "name, scope, created_at) VALUES ('k-fay', 'd1', 'hk_live_abcd', 'fay', 3, '', "
                "'write', '2026-12-01 00:00:00')"
            )
        )
    upgrade(engine)
    record = KeyStore(engine).get("k-fay")
    assert record.status() == "active" and record.user_is_admin is False
    assert (record.rotation_ends_at, record.replaced_by, record.replaced_by_prefix) == (None,) * 3
    store_key(KeyStore(engine), generate_key(), "fay")  # the upgraded table takes new keys
    upgrade(engine)  # idempotent


def test_upgrade_from_0006_adds_rate_limits(tmp_path):
    """A database made by the previous main (0006) keeps its keys, with no rate limit, and
    gets the shared counters."""
    from mlflow_hokusai.auth.rate_limits import RateLimits
    from mlflow_hokusai.store.keys import KeyStore
    from mlflow_hokusai.store.rate_counters import SqlCounterStorage

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0006")
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=4, username="gus", is_admin=0))
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, user_id, "
                "name, scope, created_at, allowed_ips) VALUES ('k-gus', 'd1', 'hk_live_abcd', "
                "'gus', 4, '', 'write', '2026-12-01 00:00:00', '[\"10.0.0.0/8\"]')"
            )
        )
    upgrade(engine)
    record = KeyStore(engine).get("k-gus")
    assert record.rate_limit is None and record.allowed_ips == ("10.0.0.0/8",)
    limits = RateLimits(SqlCounterStorage(engine))
    assert [limits.check("k-gus", "2/hour").allowed for _ in range(3)] == [True, True, False]
    upgrade(engine)  # idempotent


def test_upgrade_from_0007_adds_federation(tmp_path):
    """A database made by the previous main (0007) keeps its keys (none federated) and gets
    the federation policies table."""
    from mlflow_hokusai.store.keys import KeyStore
    from mlflow_hokusai.store.trust_policies import TrustPolicyStore

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=5, username="hal", is_admin=0))
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, user_id, "
                "name, scope, created_at, rate_limit) VALUES ('k-hal', 'd1', 'hk_live_abcd', "
                "'hal', 5, '', 'write', '2026-12-01 00:00:00', '10/minute')"
            )
        )
    upgrade(engine)
    record = KeyStore(engine).get("k-hal")
    assert record.federated_by is None and record.rate_limit == "10/minute"
    policies = TrustPolicyStore(engine)
    made = policies.add(
        issuer="https://issuer.example",
        audience="a",
        subject="s",
        username="hal",
        scope="read",
        lifetime_seconds=900,
        claims={"environment": "prod"},
        rate_limit=None,
        allowed_ips=(),
        created_by="test",
    )
    assert policies.list("https://issuer.example") == [made]
    upgrade(engine)  # idempotent


def test_upgrade_from_0008_adds_resource_limits(tmp_path):
    """A database made by the previous main (0008) keeps its keys, unlimited, and takes
    resource limits afterwards (kept on rotation)."""
    from mlflow_hokusai.keys.format import generate_key, parse_key
    from mlflow_hokusai.keys.resource_limits import from_json, parse_limits
    from mlflow_hokusai.store.keys import KeyStore

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0008")
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=6, username="ida", is_admin=0))
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, user_id, "
                "name, scope, created_at, federated_by) VALUES ('k-ida', 'd1', 'hk_live_abcd', "
                "'ida', 6, 'ci', 'write', '2026-12-01 00:00:00', NULL)"
            )
        )
    upgrade(engine)
    store = KeyStore(engine)
    record = store.get("k-ida")
    assert record.resource_limits is None and record.to_dict()["limits"] is None
    assert record.name == "ci" and record.status() == "active"
    limits = parse_limits(["7=EDIT"], ["ci-*"])
    store.set_limits("k-ida", limits.to_json())
    parsed = parse_key(generate_key())
    replacement = store.rotate("k-ida", parsed.digest, parsed.display_prefix)
    assert from_json(store.get(replacement.id).resource_limits) == limits
    assert store.get(replacement.id).to_dict()["limits"]["registered_models"] == [
        {"name": "ci-*", "permission": "MANAGE"}
    ]
    upgrade(engine)  # idempotent


def test_upgrade_from_0009_gives_rotation_chains_one_lineage(tmp_path):
    """A database made by the previous main (0009) with a key rotated twice: after the
    upgrade the three keys share the first one's lineage (one rate-limit counter), an
    unrelated key has its own, and a new rotation continues the chain."""
    from mlflow_hokusai.keys.format import generate_key, parse_key
    from mlflow_hokusai.store.keys import KeyStore

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0009")
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=7, username="jo", is_admin=0))
        for key_id, replaced_by in (("k1", "k2"), ("k2", "k3"), ("k3", None), ("other", None)):
            conn.execute(
                sa.text(
                    "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, "
                    "user_id, name, scope, created_at, replaced_by) VALUES (:id, :digest, "
                    "'hk_live_abcd', 'jo', 7, 'ci', 'write', '2026-12-02 00:00:00', :by)"
                ),
                {"id": key_id, "digest": "d-" + key_id, "by": replaced_by},
            )
    upgrade(engine)
    store = KeyStore(engine)
    assert [store.get(k).counter_id for k in ("k1", "k2", "k3")] == ["k1", "k1", "k1"]
    assert store.get("other").counter_id == "other"
    parsed = parse_key(generate_key())
    replacement = store.rotate("k3", parsed.digest, parsed.display_prefix)
    assert store.get(replacement.id).counter_id == "k1"
    upgrade(engine)  # idempotent


def test_upgrade_from_0011_adds_the_key_webhook_tables(tmp_path):
    """A database made by the previous main (0011) keeps its keys and gets the webhook
    outbox, the notices (once per key) and the leases."""
    from datetime import timedelta

    from mlflow_hokusai.keys.lifetime import LifetimeRules
    from mlflow_hokusai.keys.notices import KeyNotices
    from mlflow_hokusai.store.clock import utcnow
    from mlflow_hokusai.store.keys import KeyStore
    from mlflow_hokusai.store.leases import LeaseStore
    from mlflow_hokusai.store.webhooks import WebhookStore

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0011")
    mlflow_users.metadata.create_all(engine)
    soon = utcnow() + timedelta(hours=5)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=8, username="kim", is_admin=0))
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, user_id, "
                "name, scope, created_at, expires_at, lineage) VALUES ('k-kim', 'd1', "
                "'hk_live_abcd', 'kim', 8, 'ci', 'write', '2026-12-03 00:00:00', :soon, 'k-kim')"
            ),
            {"soon": soon},
        )
    upgrade(engine)
    assert KeyStore(engine).get("k-kim").expires_at == soon
    store = WebhookStore(engine)
    notices = KeyNotices(store, LifetimeRules())
    assert notices.check() == 1 and notices.check() == 0
    (pending,) = store.pending()
    assert pending.event == "expiring" and pending.results == {}
    assert LeaseStore(engine).take("key-webhooks", "me", 30)
    upgrade(engine)  # idempotent


def _revision_before(filename_end: str) -> str:
    """The revision the migration in the file ending ``filename_end`` upgrades from (the
    chain is re-linked when branches merge: never a hard-coded id)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(None))
    ours = [rev for rev in script.walk_revisions() if rev.path.endswith(filename_end)]
    assert len(ours) == 1, [rev.path for rev in script.walk_revisions()]
    return ours[0].down_revision


def test_upgrade_from_the_previous_main_adds_key_addresses(tmp_path):
    """A database made by the previous main keeps its keys (used, but from no recorded
    address) and records where they are used from afterwards."""
    from datetime import datetime

    from mlflow_hokusai.store.keys import KeyStore

    engine = get_engine(f"sqlite:///{tmp_path / 'main.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), _revision_before("_key_addresses.py"))
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(mlflow_users.insert().values(id=8, username="kim", is_admin=0))
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, digest, display_prefix, username, user_id, "
                "name, scope, created_at, last_used_at, lineage) VALUES ('k-kim', 'd1', "
                "'hk_live_abcd', 'kim', 8, 'ci', 'write', '2026-12-02 00:00:00', "
                "'2026-12-03 00:00:00', 'k-kim')"
            )
        )
    upgrade(engine)
    store = KeyStore(engine)
    assert store.get("k-kim").last_used_at == datetime(2026, 12, 3)
    assert store.addresses(["k-kim"]) == {}
    store.touch("k-kim", datetime(2026, 12, 4), "192.0.2.8")
    assert [seen.address for seen in store.addresses(["k-kim"])["k-kim"]] == ["192.0.2.8"]
    assert store.get("k-kim").last_used_at == datetime(2026, 12, 4)
    upgrade(engine)  # idempotent
