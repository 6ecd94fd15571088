"""Authentication cost per request with 10 keys vs 100,000 keys in the key database.

In-process, through the real authentication path: ``Authenticator.resolve`` on a parsed
``Authorization: Bearer`` credential, with the lookup cache turned off (TTL 0) so
every call runs the checksum, the SHA-256 and the indexed lookup in the real ``KeyStore`` on a
SQLite file (with MLflow's auth tables, as the server has them). The two databases are measured
in alternating rounds; the medians and their ratio are printed (target: <= 1.2).

    python bench/key_scaling.py [--keys 100000] [--rounds 7] [--calls 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import tempfile
import time

import _support  # noqa: F401  (puts the repository on sys.path)

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.authenticator import Authenticator, Identity
from mlflow_hokusai.auth.cache import LookupCache
from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.keys.management import issue_key
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.engine import get_engine, upgrade
from mlflow_hokusai.store.keys import KeyStore
from mlflow_hokusai.store.models import ApiKey

USER = "bench-user"
KNOWN_KEYS = 10


def make_database(directory: str, total_keys: int) -> tuple[Authenticator, list]:
    """A key database holding ``total_keys`` keys; returns a cache-less service and the
    credentials of ``KNOWN_KEYS`` of them, spread over the table."""
    uri = f"sqlite:///{os.path.join(directory, f'keys-{total_keys}.db')}"
    _mlflow.user_store(uri).create_user(USER, secrets.token_urlsafe(16))
    engine = get_engine(uri)
    upgrade(engine)
    store = KeyStore(engine)
    filler = total_keys - KNOWN_KEYS
    known = []
    now = utcnow()
    batch = []

    def flush():
        if batch:
            with engine.begin() as conn:
                conn.execute(ApiKey.__table__.insert(), batch)  # executemany
            batch.clear()

    for index in range(filler):
        if index % (filler // KNOWN_KEYS or 1) == 0 and len(known) < KNOWN_KEYS - 1:
            flush()
            known.append(issue_key(store, USER, name="known")[0])
        batch.append(
            {
                "id": secrets.token_hex(8),
                "digest": hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
                "display_prefix": "hk_live_fill",
                "username": USER,
                "name": "filler",
                "scope": "write",
                "created_at": now,
            }
        )
        if len(batch) >= 10_000:
            flush()
    flush()
    while len(known) < KNOWN_KEYS:
        known.append(issue_key(store, USER, name="known")[0])
    credentials = [
        from_headers(lambda name, k=k: [f"Bearer {k}"] if name == "Authorization" else [])
        for k in known
    ]
    return Authenticator(store, LookupCache(ttl=0)), credentials


def time_per_call(service: Authenticator, credentials: list, calls: int) -> float:
    """Mean seconds per ``resolve`` over ``calls`` calls, cycling through the credentials."""
    started = time.perf_counter()
    for index in range(calls):
        result = service.resolve(credentials[index % len(credentials)])
        if not isinstance(result, Identity):
            raise RuntimeError(f"authentication failed: {result}")
    return (time.perf_counter() - started) / calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="keys in the large database")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="resolve calls per round")
    options = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="hokusai-bench-keys-")
    started = time.perf_counter()
    small = make_database(directory, KNOWN_KEYS)
    large = make_database(directory, options.keys)
    print(
        f"key_scaling: databases ready in {time.perf_counter() - started:.1f} s; "
        f"{options.rounds} rounds x {options.calls} calls, key cache off"
    )
    for service, credentials in (small, large):  # warm up connections and page cache
        time_per_call(service, credentials, max(50, options.calls // 10))
    times: dict[int, list] = {KNOWN_KEYS: [], options.keys: []}
    for round_no in range(options.rounds):
        pairs = [(KNOWN_KEYS, small), (options.keys, large)]
        for count, (service, credentials) in pairs if round_no % 2 == 0 else pairs[::-1]:
            times[count].append(time_per_call(service, credentials, options.calls))
    small_us = _support.median(times[KNOWN_KEYS]) * 1e6
    large_us = _support.median(times[options.keys]) * 1e6
    print()
    _support.print_table(
        ["keys in database", "authentication per request (median)"],
        [[f"{KNOWN_KEYS:,}", f"{small_us:.0f} µs"], [f"{options.keys:,}", f"{large_us:.0f} µs"]],
    )
    print(
        f"\nratio {options.keys:,} keys / {KNOWN_KEYS} keys: {large_us / small_us:.2f}x "
        f"(target <= 1.2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
