"""The attenuation walk: a key never makes a key stronger than itself.

For every dimension (expiry, scope, resource limits, rate limit, allowed IPs, a rotation's grace
window) a weaker key of a user tries to create a broader key, and to rotate and change a
stronger sibling: each attempt is refused with 403 naming the dimension, and nothing is written
(the user's keys are the same before and after). What the weaker key may do, it does, and the
result is no broader than itself. Keys made by an admin for the user are the test's roots
(an admin acting on another user's keys is not bound by the rule).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

KEYS = "/api/2.0/mlflow/hokusai/api-keys"


def _key(server, username: str, **fields) -> tuple[str, dict]:
    made = server.post(f"{KEYS}/create", server.admin_key, json={"username": username, **fields})
    assert made.status_code == 200, made.text
    return made.json()["key"], made.json()["api_key"]


def _keys_of(server, username: str) -> list[dict]:
    listed = server.get(f"{KEYS}/list", server.admin_key, params={"username": username})
    assert listed.status_code == 200, listed.text
    keys = [
        # using a key touches these
        {k: v for k, v in key.items() if k not in ("last_used_at", "addresses")}
        for key in listed.json()["api_keys"]
    ]
    return sorted(keys, key=lambda k: k["id"])


def _when(value: str | None):
    return None if value is None else datetime.fromisoformat(value)


# dimension: (the weaker key's fields, the stronger sibling's, an explicit broader create,
#             the word the refusal names)
DIMENSIONS = {
    "expiry": ({"expires_in_days": 1}, {}, {"expires_in_days": 30}, "(expiry)"),
    "rate_limit": (
        {"rate_limit": "600/minute"},
        {"rate_limit": "1000/second"},
        {"rate_limit": "none"},
        "(rate_limit)",
    ),
    "rate_limit_burst": (
        {"rate_limit": "600/minute"},
        {"rate_limit": "30000/hour"},  # a lower rate, but 30,000 requests in one minute
        {"rate_limit": "36000/hour"},
        "(rate_limit)",
    ),
    "allowed_ips": (
        {"allowed_ips": ["127.0.0.0/8"]},
        {},
        {"allowed_ips": ["126.0.0.0/7"]},
        "(allowed_ips)",
    ),
    "scope": ({"scope": "read"}, {}, {"scope": "write"}, "read-only"),
    "resource limits": (
        {"experiments": ["0"]},
        {},
        {"experiments": ["0", "1"]},
        "limited to named experiments",
    ),
}


@pytest.mark.parametrize("dimension", sorted(DIMENSIONS))
def test_a_weaker_key_is_refused_on_a_stronger_sibling(server, dimension):
    weak_fields, strong_fields, broader, named = DIMENSIONS[dimension]
    user = f"atten-{uuid.uuid4().hex[:8]}"
    weak, _ = _key(server, user, **weak_fields)
    _, strong = _key(server, user, **strong_fields)
    before = _keys_of(server, user)
    attempts = {
        "create": (f"{KEYS}/create", broader),
        "rotate": (f"{KEYS}/rotate", {"key_id": strong["id"]}),
        "rotate with grace": (f"{KEYS}/rotate", {"key_id": strong["id"], "grace_seconds": 60}),
        "update": (f"{KEYS}/update", {"key_id": strong["id"], "experiments": ["0"]}),
        "unlimit": (f"{KEYS}/update", {"key_id": strong["id"], "unlimited": True}),
    }
    for what, (path, body) in attempts.items():
        refused = server.post(path, weak, json=body)
        assert refused.status_code == 403, (what, refused.text)
        answer = refused.json()
        assert answer["error_code"] == "PERMISSION_DENIED", (what, answer)
        assert named in answer["message"], (what, answer["message"])
        assert "key" not in answer
    assert _keys_of(server, user) == before  # nothing written


def test_what_a_weaker_key_may_do_stays_within_it(server):
    """A 1-day, 600/minute, loopback-only key: a key it creates without saying otherwise is
    narrowed to it; asking for less works; it rotates itself into a key that expires no later;
    its grace window may not run past its expiry; it may revoke a stronger sibling."""
    user = f"atten-ok-{uuid.uuid4().hex[:8]}"
    weak, weak_record = _key(
        server, user, expires_in_days=1, rate_limit="600/minute", allowed_ips=["127.0.0.0/8"]
    )
    expiry = _when(weak_record["expires_at"])
    made = server.post(f"{KEYS}/create", weak, json={"name": "child"})
    assert made.status_code == 200, made.text
    child = made.json()["api_key"]
    assert _when(child["expires_at"]) <= expiry
    assert child["rate_limit"] == "600/minute"
    assert child["allowed_ips"] == ["127.0.0.0/8"]
    narrower = {"rate_limit": "10/second", "allowed_ips": ["127.0.0.1"], "scope": "read"}
    made = server.post(f"{KEYS}/create", weak, json=narrower)
    assert made.status_code == 200, made.text
    assert made.json()["api_key"]["allowed_ips"] == ["127.0.0.1/32"]

    too_long = server.post(
        f"{KEYS}/rotate", weak, json={"key_id": weak_record["id"], "grace_seconds": 2 * 86400}
    )
    assert too_long.status_code == 403 and "(grace_seconds)" in too_long.json()["message"]
    rotated = server.post(
        f"{KEYS}/rotate", weak, json={"key_id": weak_record["id"], "grace_seconds": 600}
    )
    assert rotated.status_code == 200, rotated.text
    replacement = rotated.json()["api_key"]
    assert _when(replacement["expires_at"]) <= expiry + timedelta(seconds=1)
    assert replacement["rate_limit"] == "600/minute"

    _, strong = _key(server, user)
    revoked = server.post(f"{KEYS}/revoke", weak, json={"key_id": strong["id"]})
    assert revoked.status_code == 200 and revoked.json()["api_key"]["status"] == "revoked"


def test_an_admins_own_expiring_key_is_bound_but_not_on_other_users(server):
    """An admin's 1-day key may not give the admin a key that never expires, but acting on
    another user's keys it is a root (the server's lifetime rules still apply)."""
    admin_user = f"atten-admin-{uuid.uuid4().hex[:6]}"
    short, _ = _key(server, admin_user, expires_in_days=1)
    promote = requests.patch(
        server.url + "/api/2.0/mlflow/users/update-admin",
        json={"username": admin_user, "is_admin": True},
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=30,
    )
    assert promote.status_code == 200, promote.text
    time.sleep(1.2)  # every worker knows the new admin (the staleness bound)
    refused = server.post(f"{KEYS}/create", short, json={"expires_in_days": 30})
    assert refused.status_code == 403 and "(expiry)" in refused.json()["message"]
    other = server.post(
        f"{KEYS}/create", short, json={"username": f"{admin_user}-other", "expires_in_days": 30}
    )
    assert other.status_code == 200, other.text
    expires = _when(other.json()["api_key"]["expires_at"])
    assert expires > datetime.now(timezone.utc) + timedelta(days=29)
