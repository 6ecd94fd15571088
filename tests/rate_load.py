"""Hammer one rate-limited key from many clients and measure what got through: shared by the
rate-limit tests (which assert what the server surely decided) and ``bench/rate_limits.py``
(which also prints the estimate by sending time)."""

from __future__ import annotations

import math
import threading
import time

import requests

WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


def hammer(
    urls: list[str],
    key: str,
    clients: int,
    seconds: float,
    rotate_after: float | None = None,
    rotate=None,
) -> list[tuple[float, float, int]]:
    """``clients`` threads, spread over ``urls``, each sending requests with ``key`` as fast
    as it can for ``seconds``. With ``rotate``: after ``rotate_after`` seconds ``rotate()``
    gives the key's replacement (the old key works on in its grace window) and every other
    client switches to it. Returns (time sent, time answered, status) per request, sorted: the
    server decided each request somewhere between the two."""
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + (1 if rotate else 0))
    keys = [key]

    def client(index: int) -> None:
        url = urls[index % len(urls)]
        session = requests.Session()
        mine = []
        start.wait()
        deadline = time.time() + seconds
        while time.time() < deadline:
            current = keys[-1] if index % 2 else key
            sent = time.time()
            status = session.get(
                url + WHOAMI, headers={"Authorization": f"Bearer {current}"}, timeout=30
            ).status_code
            mine.append((sent, time.time(), status))
        with lock:
            results.extend(mine)

    def rotator() -> None:
        start.wait()
        time.sleep(rotate_after)
        keys.append(rotate())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    if rotate:
        threads.append(threading.Thread(target=rotator))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


def surely_in_a_window(accepted: list[tuple[float, float]], period: float) -> int:
    """The most accepted requests that the server must have decided within one interval of
    ``period``: those sent at or after its start and answered by its end. A lower bound of
    what the server admitted in its busiest interval, whatever the client's timing errors
    (on a loaded machine a request may wait tens of milliseconds before the server reads
    it), so more than the limit here means the server admitted more than the limit."""
    most = 0
    for i, (start, _) in enumerate(accepted):  # sorted by sending time
        end = start + period
        count = 0
        for sent, answered in accepted[i:]:
            if sent > end:
                break
            if answered <= end:
                count += 1
        most = max(most, count)
    return most


def analyse(results: list[tuple[float, float, int]], limit: int, period: float) -> dict:
    """What got through: ``surely_in_window`` (``surely_in_a_window``: what tests assert),
    the most requests accepted in any interval of ``period`` by their sending time
    (``max_in_any_window``, sliding, at every accepted request: an estimate of the server's,
    which client timing can push either way), and the share of the limit that was usable:
    requests accepted in the whole periods from the first request, over ``limit`` per period.
    (The last, partial period is left out: each period's burst of permits starts a client
    round trip later than the one before, so a tail shorter than a period says nothing about
    the limit.)"""
    accepted = [(sent, answered) for sent, answered, status in results if status == 200]
    statuses = sorted({status for _, _, status in results})
    times = [sent for sent, _ in accepted]
    most, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - period:
            j += 1
        most = max(most, i - j + 1)
    first, last = results[0][0], results[-1][0]
    periods = math.floor((last - first) / period)
    counted = sum(1 for t in times if t < first + periods * period)
    usable = counted / (limit * periods) if periods else 0.0
    return {
        "requests": len(results),
        "accepted": len(accepted),
        "statuses": statuses,
        "surely_in_window": surely_in_a_window(accepted, period),
        "max_in_any_window": most,
        "over_limit": most / limit - 1,
        "usable": usable,
    }
