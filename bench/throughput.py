"""Request throughput: plain MLflow vs MLflow basic-auth vs mlflow-hokusai, side by side.

Starts, on 127.0.0.1, a plain ``mlflow server``, ``--app-name basic-auth`` (credential cache
off, and on with ``auth_cache_ttl_seconds = 60``) and ``--app-name hokusai``, all on SQLite with
the same worker count. Each target gets its own experiment and one run per client thread, made
by the identity under test (a non-admin user; for Hokusai also the admin key, and the same
user's key with a rate limit the run never reaches, to show what counting costs, the same
user's key limited to its one experiment by name, to show what resource limits cost, and the
same user signed in with a browser session cookie instead of a key). Then, in
several rounds whose order rotates, each target gets the same mixed workload for the same time:
log-metric, log-batch, get-run and search-runs, from several threads. The client speaks raw
HTTP over one keep-alive connection per thread (``http.client``), the cheapest client Python
has, so the servers are the bottleneck.

Prints the median req/s per target, its ratio to plain MLflow (the median of the per-round
ratios, so machine noise that hits a whole round cancels out) and the CPU time the server's
process tree spent per request (less sensitive to other load on the machine than req/s). The
SQLite files live in /dev/shm when the machine has it (``--data-dir``), so disk syncs do not
hide CPU costs; MLflow's background job runner is off on every server alike.

    python bench/throughput.py [--rounds 5] [--duration 10] [--slices 5] [--threads 4]
                               [--workers 2] [--mix mixed|metric-get] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import _support

API = "/api/2.0/mlflow"
LIMIT_NOT_REACHED = 1_000_000  # per hour: the largest limit a key may have
# Sign-in on, so that a session cookie is a credential; the provider is never asked (the
# session is made in the key database, as a sign-in would make it).
SIGN_IN_ENV = {
    "HOKUSAI_OIDC_ISSUER": "http://127.0.0.1:9",
    "HOKUSAI_OIDC_CLIENT_ID": "bench",
    "HOKUSAI_OIDC_CLIENT_SECRET": "bench",
}


def session_headers(server, username: str) -> dict:
    """The headers of a browser signed in as ``username`` (an existing user): its session
    cookie, and the ``Origin`` of the server's own pages (sessions write only from there)."""
    import secrets

    import sqlalchemy as sa

    from mlflow_hokusai.store.clock import utcnow
    from mlflow_hokusai.store.engine import get_engine
    from mlflow_hokusai.store.models import mlflow_users
    from mlflow_hokusai.store.sessions import SessionStore, digest_of

    engine = get_engine(server.database_uri)
    with engine.connect() as conn:
        user_id = conn.execute(
            sa.select(mlflow_users.c.id).where(mlflow_users.c.username == username)
        ).scalar_one()
    secret = secrets.token_urlsafe(32)
    SessionStore(engine).add(digest_of(secret), username, user_id, now=utcnow(), lifetime=86400)
    return {"Cookie": f"hokusai_session={secret}", "Origin": server.url}


@dataclass
class Target:
    name: str
    server: object
    headers: dict
    experiment_id: str = ""
    experiment_name: str = ""  # made up when empty
    run_ids: list = field(default_factory=list)
    rates: list = field(default_factory=list)
    cpu_ms: list = field(default_factory=list)  # server CPU per request
    ratios: list = field(default_factory=list)


class Client:
    """One keep-alive HTTP/1.1 connection with fixed headers."""

    def __init__(self, url: str, headers: dict):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        self.headers = {"Content-Type": "application/json", **headers}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=payload, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = self.call(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:300]!r}")
        return json.loads(data)

    def close(self):
        self.conn.close()


def setup(target: Target, threads: int) -> None:
    client = Client(target.server.url, target.headers)
    name = target.experiment_name or f"bench-{target.name}-{time.time_ns()}"
    target.experiment_id = client.json("POST", f"{API}/experiments/create", {"name": name})[
        "experiment_id"
    ]
    for _ in range(threads):
        run = client.json(
            "POST",
            f"{API}/runs/create",
            {"experiment_id": target.experiment_id, "start_time": int(time.time() * 1000)},
        )
        target.run_ids.append(run["run"]["info"]["run_id"])
    client.close()


MIXES = {
    "mixed": ("log-metric", "log-batch", "get-run", "search-runs"),
    "metric-get": ("log-metric", "get-run"),
}


def workload(
    target: Target, run_id: str, stop_at: float, counts: list, index: int, mix: str = "mixed"
) -> None:
    """The request cycle of ``mix``, repeated until ``stop_at``."""
    wanted = MIXES[mix]
    client = Client(target.server.url, target.headers)
    search = {"experiment_ids": [target.experiment_id], "max_results": 10}
    done = errors = step = 0
    try:
        while time.monotonic() < stop_at:
            step += 1
            now = int(time.time() * 1000)
            calls = {
                "log-metric": (
                    "POST",
                    f"{API}/runs/log-metric",
                    {
                        "run_id": run_id,
                        "key": f"m{step % 5}",
                        "value": step * 0.5,
                        "timestamp": now,
                        "step": step,
                    },
                ),
                "log-batch": (
                    "POST",
                    f"{API}/runs/log-batch",
                    {
                        "run_id": run_id,
                        "metrics": [
                            {"key": f"b{i}", "value": step + i, "timestamp": now, "step": step}
                            for i in range(5)
                        ],
                    },
                ),
                "get-run": ("GET", f"{API}/runs/get?run_id={run_id}", None),
                "search-runs": ("POST", f"{API}/runs/search", search),
            }
            for method, path, body in (calls[name] for name in wanted):
                status, data = client.call(method, path, body)
                if status == 200:
                    done += 1
                else:
                    errors += 1
                    if errors == 1:
                        print(
                            f"  {target.name}: {method} {path} -> {status} {data[:200]!r}",
                            file=sys.stderr,
                        )
    finally:
        client.close()
        counts[index] = (done, errors)


def measure(
    target: Target, threads: int, duration: float, mix: str = "mixed"
) -> tuple[float, float, int]:
    """(requests/s, server CPU ms per request, failed requests) for one timed interval."""
    counts: list = [(0, 0)] * threads
    cpu_before = _support.tree_cpu_seconds(target.server.proc.pid)
    stop_at = time.monotonic() + duration
    started = time.monotonic()
    pool = [
        threading.Thread(target=workload, args=(target, target.run_ids[i], stop_at, counts, i, mix))
        for i in range(threads)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    cpu = _support.tree_cpu_seconds(target.server.proc.pid) - cpu_before
    done = sum(c[0] for c in counts)
    return done / elapsed, 1000 * cpu / max(done, 1), sum(c[1] for c in counts)


def measure_round(order: list[Target], options) -> int:
    """One round: each target measured for ``duration`` seconds in all, in ``slices`` turns
    taken in ``order`` (so a slow spell of the machine falls on every target alike); appends
    each target's rate and CPU per request; returns the failed requests."""
    slices = [[] for _ in order]
    errors = 0
    for _ in range(options.slices):
        for i, target in enumerate(order):
            rate, cpu_ms, failed = measure(
                target, options.threads, options.duration / options.slices, options.mix
            )
            slices[i].append((rate, cpu_ms))
            errors += failed
    for target, measured in zip(order, slices, strict=True):
        rates = [rate for rate, _ in measured]
        target.rates.append(sum(rates) / len(rates))  # equal turns: the mean rate
        weight = max(sum(rates), 1e-9)
        target.cpu_ms.append(sum(rate * cpu for rate, cpu in measured) / weight)
    return errors


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per target, not counted")
    parser.add_argument(
        "--slices",
        type=int,
        default=5,
        help="turns per round: each target gets duration/slices seconds per turn, the targets "
        "taking turns, so that a slow spell of a shared machine hits all of them",
    )
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="server workers (all servers)")
    parser.add_argument(
        "--mix",
        choices=sorted(MIXES),
        default="mixed",
        help="the request cycle: 'mixed' = log-metric, log-batch, get-run, search-runs; "
        "'metric-get' = log-metric, get-run",
    )
    parser.add_argument(
        "--data-dir",
        default=_support.memory_dir(),
        help="where the servers keep their SQLite files (default: /dev/shm when "
        "present, so disk syncs do not hide CPU costs)",
    )
    options = parser.parse_args(argv)
    _support.use_base_dir(options.data_dir)

    workers = options.workers
    plain = _support.plain_server(workers=workers)
    basic_auth = _support.BasicAuthServer(workers=workers)
    basic_cached = _support.BasicAuthServer(workers=workers, cache_ttl=60)
    hokusai = _support.hokusai_server(workers=workers, env=SIGN_IN_ENV)
    servers = [plain, basic_auth, basic_cached, hokusai]
    try:
        _support.start_all(servers)
        hokusai_key = hokusai.create_key("bench-user")
        # The same user's key with a rate limit it never reaches (the cost of counting).
        limited_key = hokusai.create_key("bench-user", "--rate-limit", f"{LIMIT_NOT_REACHED}/hour")
        # The same user's key limited to one experiment, named by name (the costlier form: an
        # id is matched by its name); the key creates that experiment itself.
        resource_experiment = f"bench-resource-limited-{time.time_ns()}"
        resource_key = hokusai.create_key("bench-user", "--experiment", resource_experiment)
        targets = [
            Target("mlflow (no auth)", plain, {}),
            Target(
                "basic-auth, non-admin", basic_auth, basic(*basic_auth.create_user("bench-user"))
            ),
            Target(
                "basic-auth + cache, non-admin",
                basic_cached,
                basic(*basic_cached.create_user("bench-user")),
            ),
            Target(
                "hokusai, non-admin write key", hokusai, {"Authorization": f"Bearer {hokusai_key}"}
            ),
            Target("hokusai, admin key", hokusai, {"Authorization": f"Bearer {hokusai.admin_key}"}),
            Target(
                f"hokusai, non-admin key, {LIMIT_NOT_REACHED:,}/hour limit",
                hokusai,
                {"Authorization": f"Bearer {limited_key}"},
            ),
            Target(
                "hokusai, non-admin key limited to its experiment",
                hokusai,
                {"Authorization": f"Bearer {resource_key}"},
                experiment_name=resource_experiment,
            ),
            Target(
                "hokusai, non-admin session cookie",
                hokusai,
                session_headers(hokusai, "bench-user"),
            ),
        ]
        for target in targets:
            setup(target, options.threads)
        print(
            f"throughput: {len(targets)} targets, {options.workers} workers each, "
            f"{options.threads} client threads, {options.rounds} rounds x {options.duration:g} s "
            f"in {options.slices} turns, "
            f"mix {options.mix} ({', '.join(MIXES[options.mix])}), "
            f"SQLite files in {options.data_dir or tempfile.gettempdir()}"
        )
        if options.warmup > 0:
            for target in targets:
                measure(target, options.threads, options.warmup, options.mix)
        errors = 0
        for round_no in range(options.rounds):
            order = targets[round_no % len(targets) :] + targets[: round_no % len(targets)]
            errors += measure_round(order, options)
            for target in targets:
                target.ratios.append(target.rates[-1] / targets[0].rates[-1])
            print(
                f"round {round_no + 1}: "
                + ", ".join(f"{t.name} {t.rates[-1]:.0f}/s" for t in targets),
                flush=True,
            )
    finally:
        _support.stop_and_remove(servers)

    print()
    _support.print_table(
        ["server", "req/s (median)", "ratio to plain MLflow", "server CPU per request"],
        [
            [
                t.name,
                f"{_support.median(t.rates):.0f}",
                f"{_support.median(t.ratios):.2f}x",
                f"{_support.median(t.cpu_ms):.1f} ms",
            ]
            for t in targets
        ],
    )
    ours = _support.median(targets[3].ratios)
    print(f"\nratio hokusai non-admin / plain: {ours:.2f}x (target >= 0.95x)")
    print(f"ratio hokusai admin / plain: {_support.median(targets[4].ratios):.2f}x")
    limited = _support.median(targets[5].ratios)
    print(
        f"ratio hokusai non-admin with a rate limit (not reached) / plain: {limited:.2f}x; "
        f"drop from no limit: {ours - limited:.2f} (target <= 0.03)"
    )
    resources = _support.median(targets[6].ratios)
    print(
        f"ratio hokusai non-admin limited to its experiment / plain: {resources:.2f}x; "
        f"drop from an unlimited key: {ours - resources:.2f} (target <= 0.03)"
    )
    session = _support.median(targets[7].ratios)
    print(
        f"ratio hokusai non-admin session cookie / plain: {session:.2f}x; "
        f"drop from a key: {ours - session:.2f} (target <= 0.03)"
    )
    print(
        f"ratio hokusai non-admin / basic-auth non-admin: "
        f"{_support.median(targets[3].rates) / _support.median(targets[1].rates):.2f}x"
    )
    if errors:
        print(f"{errors} requests failed; the figures above are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
