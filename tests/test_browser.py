"""The MLflow UI in headless Chromium, at ``/`` and under the prefix, with a key as the Basic
auth password, showing an experiment created through the REST API.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no WebDriver or websocket
library is needed; every request of the page carries the ``Authorization`` header set with
``Network.setExtraHTTPHeaders``.
"""

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    "--remote-debugging-pipe",
]

pytestmark = pytest.mark.browser


class Chromium:
    """A headless Chromium and a DevTools session on one page."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="hokusai-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes answers on fd 4.
        high_r = os.dup2(to_browser_r, 100)
        high_w = os.dup2(from_browser_w, 101)

        def wire():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            pass_fds=(3, 4, high_r, high_w),
            start_new_session=True,
        )
        for fd in (to_browser_r, from_browser_w, high_r, high_w):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.session = None

    def call(self, method, timeout=60, session=True, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"no answer to {method}")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk

    def open_page(self, headers):
        target = self.call("Target.createTarget", url="about:blank", session=False)["targetId"]
        self.session = self.call(
            "Target.attachToTarget", targetId=target, flatten=True, session=False
        )["sessionId"]
        self.call("Network.enable")
        self.call("Network.setExtraHTTPHeaders", headers=headers)
        self.call("Page.enable")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for_text(self, text, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"!!document.body && document.body.innerText.includes({text!r})"):
                return True
            time.sleep(0.5)
        return False

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_user(server):
    key = server.create_key("browser-user")
    name = "browser-visible-experiment"
    created = server.post("/api/2.0/mlflow/experiments/create", key, json={"name": name})
    assert created.status_code == 200, created.text
    return key, name


@pytest.fixture
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


@pytest.mark.parametrize("prefix", ["", "/api/mlflow"])
def test_ui_shows_an_experiment_with_a_key_as_basic_password(
    server, browser_user, chromium, prefix, tmp_path
):
    key, name = browser_user
    token = base64.b64encode(f"browser-user:{key}".encode()).decode()
    chromium.open_page({"Authorization": f"Basic {token}"})
    chromium.call("Page.navigate", url=f"{server.url}{prefix}/#/experiments")
    shown = chromium.wait_for_text(name)
    shot = tmp_path / f"ui{prefix.replace('/', '-') or '-root'}.png"
    shot.write_bytes(base64.b64decode(chromium.call("Page.captureScreenshot")["data"]))
    location = chromium.evaluate("location.href")
    assert shown, f"{name!r} not on the page at {location} (screenshot: {shot})"
    assert location.startswith(f"{server.url}{prefix}/")
