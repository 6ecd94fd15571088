"""Where keys are used from: rows in ``hokusai_key_addresses`` (migration 0013).

A row per key and client address, with when the key was last seen from there; at most
``KEPT`` per key, the most recently seen (the others are deleted as a new one comes). Written
by ``KeyStore.touch``, in the transaction that records the key's last use, so no more often
than that (the authenticator decides when: ``auth/authenticator.py``); read in one query per
page of keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from mlflow_hokusai.store.engine import insert_for
from mlflow_hokusai.store.models import KeyAddress

KEPT = 5
_TABLE = KeyAddress.__table__
_LONGEST = 64  # the column's length: an address that is not an IP (see auth/addresses.py) is cut
_CHUNK = 500  # ids per IN (…): under the oldest SQLite's 999 parameters


@dataclass(frozen=True)
class SeenAddress:
    address: str
    last_seen_at: datetime  # naive UTC

    def to_dict(self) -> dict:
        return {
            "address": self.address,
            "last_seen_at": self.last_seen_at.replace(tzinfo=timezone.utc).isoformat(),
        }


def record(conn, key_id: str, address: str, when: datetime) -> None:
    """The key was used from ``address`` at ``when``; keep its ``KEPT`` most recent."""
    address = address[:_LONGEST]
    insert = insert_for(conn.dialect.name)
    conn.execute(
        insert(_TABLE)
        .values(key_id=key_id, address=address, last_seen_at=when)
        .on_conflict_do_update(
            index_elements=[_TABLE.c.key_id, _TABLE.c.address], set_={"last_seen_at": when}
        )
    )
    # This address and the others most recently seen (times are to the second: on a tie, the
    # one just seen stays).
    others = (_TABLE.c.key_id == key_id, _TABLE.c.address != address)
    kept = (
        sa.select(_TABLE.c.address)
        .where(*others)
        .order_by(_TABLE.c.last_seen_at.desc(), _TABLE.c.address)
        .limit(KEPT - 1)
    )
    conn.execute(sa.delete(_TABLE).where(*others, _TABLE.c.address.not_in(kept)))


def recent(conn, key_ids: Iterable[str]) -> dict[str, list[SeenAddress]]:
    """Each key's most recently seen addresses, newest first (at most ``KEPT``; keys never
    used are left out)."""
    ids = sorted(set(key_ids))
    found: dict[str, list[SeenAddress]] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            sa.select(_TABLE.c.key_id, _TABLE.c.address, _TABLE.c.last_seen_at)
            .where(_TABLE.c.key_id.in_(ids[start : start + _CHUNK]))
            .order_by(_TABLE.c.key_id, _TABLE.c.last_seen_at.desc(), _TABLE.c.address)
        )
        for key_id, address, seen in rows:
            # Two workers adding at once may leave a sixth row until the next write.
            if len(found.setdefault(key_id, [])) < KEPT:
                found[key_id].append(SeenAddress(address, seen))
    return found
