"""Start-up time: plain ``mlflow server`` vs ``mlflow server --app-name hokusai``.

Each round starts one server of each kind in a fresh directory (SQLite stores, nothing
migrated yet: a first start), one at a time and in alternating order, and measures from launch
to ``/health`` answering 200 and, for ours, to the admin key file existing and to the
``mlflow-hokusai ready:`` line in the log. Prints the medians and the difference (target: ours
answers ``/health`` within 2 s of plain MLflow).

    python bench/startup.py [--rounds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

import _support
import requests

READY_LINE = "mlflow-hokusai ready:"


def timed_start(server, timeout: float) -> dict:
    """Launch ``server`` and poll until it is ready; the seconds from launch to each event."""
    began = time.monotonic()
    server.launch()
    found: dict[str, float] = {}
    key_file = server.workdir / "hokusai_admin_key"
    wanted = {"health"} if server.app_name is None else {"health", "key file", "ready line"}
    while set(found) < wanted:
        elapsed = time.monotonic() - began
        if found.keys() >= {"health", "key file"} and elapsed > max(found.values()) + 20:
            break  # an older release without the ready line
        if elapsed > timeout:
            raise TimeoutError(f"not ready after {timeout} s:\n{server.log_text()[-4000:]}")
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log_text()[-4000:]}")
        if "health" not in found:
            try:
                if requests.get(server.url + "/health", timeout=1).status_code == 200:
                    found["health"] = elapsed
            except requests.RequestException:
                pass
        if "key file" in wanted and "key file" not in found and key_file.exists():
            found["key file"] = elapsed
        if "ready line" in wanted and "ready line" not in found:
            if READY_LINE in server.log_text():
                found["ready line"] = elapsed
        time.sleep(0.05)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    options = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = {"plain": {}, "hokusai": {}}
    for round_number in range(options.rounds):
        kinds = ["plain", "hokusai"] if round_number % 2 == 0 else ["hokusai", "plain"]
        for kind in kinds:
            make = _support.plain_server if kind == "plain" else _support.hokusai_server
            server = make(workers=options.workers)
            try:
                found = timed_start(server, options.timeout)
                for event, seconds in found.items():
                    times[kind].setdefault(event, []).append(seconds)
                shown = ", ".join(f"{event} {seconds:.2f} s" for event, seconds in found.items())
                print(f"round {round_number + 1}, {kind}: {shown}", flush=True)
            finally:
                _support.stop_and_remove([server])
    _report(times, options)


def _report(times, options) -> None:
    def cell(kind, event):
        values = times[kind].get(event)
        return f"{_support.median(values):.2f}" if values else "-"

    print(f"start-up, seconds from launch (median of {options.rounds} rounds, ", end="")
    print(f"{options.workers} workers, fresh SQLite stores)")
    _support.print_table(
        ["server", "/health answers", "admin key file", "ready line"],
        [
            ["mlflow (no auth)", cell("plain", "health"), "-", "-"],
            ["hokusai", *(cell("hokusai", e) for e in ("health", "key file", "ready line"))],
        ],
    )
    plain = _support.median(times["plain"]["health"])
    ours = _support.median(times["hokusai"]["health"])
    print(f"difference hokusai - plain, /health: {ours - plain:+.2f} s")
    if times["hokusai"].get("ready line"):
        ready = _support.median(times["hokusai"]["ready line"])
        print(f"difference hokusai ready line - plain /health: {ready - plain:+.2f} s")


if __name__ == "__main__":
    main()
