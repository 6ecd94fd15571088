"""Timing: a response must not tell whether a key's prefix belongs to a real key.

Interleaved requests with (a) unknown well-formed keys and (b) keys that share a real key's
displayed prefix but carry a wrong secret (valid checksum, so both reach the database lookup).
Each key is fresh, so neither class is ever served from the cache. The test compares the two
latency distributions (Mann-Whitney U): no wall-clock threshold, only "indistinguishable" with a
generous margin on the effect size, which noise on a shared machine does not move much.
"""

import random
import statistics
import time

import requests
from scipy.stats import mannwhitneyu

from mlflow_hokusai.keys.format import _checksum, generate_key

ROUNDS = 200
PATH = "/api/2.0/mlflow/hokusai/whoami"


def _same_prefix_wrong_secret(real: str) -> str:
    head = generate_key()[:-6]
    head = real[:12] + head[12:]  # the displayed prefix of a real key, another secret
    return head + _checksum(head)


def test_unknown_key_and_wrong_secret_take_indistinguishable_time(server):
    real = server.create_key("timing-owner")
    session = requests.Session()
    url = server.url + PATH
    for _ in range(20):  # warm connections and workers
        session.get(url, headers={"Authorization": f"Bearer {generate_key()}"}, timeout=30)
    samples = {"unknown": [], "prefix": []}
    order = ["unknown", "prefix"] * ROUNDS
    random.Random(7).shuffle(order)
    for kind in order:
        key = generate_key() if kind == "unknown" else _same_prefix_wrong_secret(real)
        started = time.perf_counter()
        response = session.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        samples[kind].append(time.perf_counter() - started)
        assert response.status_code == 401
        assert response.json()["message"] == "Invalid API key: no such key."
    unknown, prefix = samples["unknown"], samples["prefix"]
    u, p = mannwhitneyu(unknown, prefix, alternative="two-sided")
    effect = u / (len(unknown) * len(prefix))  # P(unknown slower than prefix); 0.5 = same
    ratio = statistics.median(prefix) / statistics.median(unknown)
    print(
        f"\ntiming: median unknown {statistics.median(unknown) * 1000:.2f} ms, "
        f"same-prefix {statistics.median(prefix) * 1000:.2f} ms, ratio {ratio:.3f}; "
        f"Mann-Whitney U={u:.0f} p={p:.3f}, effect size {effect:.3f} (0.5 = indistinguishable)"
    )
    assert 0.35 <= effect <= 0.65, "one class of bad key is measurably slower than the other"
