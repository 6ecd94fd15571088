"""Hammer one rate-limited key from many clients and measure what got through: shared by the
rate-limit tests and ``bench/rate_limits.py``."""

from __future__ import annotations

import math
import threading
import time

import requests

WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


def hammer(urls: list[str], key: str, clients: int, seconds: float) -> list[tuple[float, int]]:
    """``clients`` threads, spread over ``urls``, each sending requests with ``key`` as fast
    as it can for ``seconds``. Returns (time the request was sent, status) per request, in
    order: the server decides a request's limit as soon as it reads it (the gate, before any
    MLflow code runs), so the sending time is the closest a client sees to the server's
    decision; the time the answer arrives adds the handler's time, which differs between
    requests by tens of milliseconds on a busy machine."""
    results: list[tuple[float, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(url: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        mine = []
        start.wait()
        deadline = time.time() + seconds
        while time.time() < deadline:
            sent = time.time()
            mine.append((sent, session.get(url + WHOAMI, timeout=30).status_code))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(urls[i % len(urls)],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


def analyse(results: list[tuple[float, int]], limit: int, period: float) -> dict:
    """The most requests accepted in any interval of ``period`` (sliding, at every accepted
    answer), and the share of the limit that was usable: requests accepted in the whole periods
    from the first request, over ``limit`` per period. (The last, partial period is left out:
    each period's burst of permits starts a client round trip later than the one before, so
    a tail shorter than a period says nothing about the limit.)"""
    accepted = [t for t, status in results if status == 200]
    statuses = sorted({status for _, status in results})
    most, j = 0, 0
    for i, t in enumerate(accepted):
        while accepted[j] <= t - period:
            j += 1
        most = max(most, i - j + 1)
    first, last = results[0][0], results[-1][0]
    periods = math.floor((last - first) / period)
    counted = sum(1 for t in accepted if t < first + periods * period)
    usable = counted / (limit * periods) if periods else 0.0
    return {
        "requests": len(results),
        "accepted": len(accepted),
        "statuses": statuses,
        "max_in_any_window": most,
        "over_limit": most / limit - 1,
        "usable": usable,
    }
