"""Regression tests for three findings of the issue-22 review about what MLflow itself answers,
each against a real server (uvicorn, and gunicorn where the gate's WSGI shape differs):

1. ``HEAD`` of a ``GET`` route was refused to non-admins (403: MLflow's validator tables have no
   ``HEAD`` entries) and was a 400 even for admins; it now answers as the ``GET`` does, and
   is refused wherever the ``GET`` is (every Flask ``GET`` route, ``NO_PERMISSIONS`` server);
2. the key page went out with ``X-Frame-Options: SAMEORIGIN`` (MLflow's security middleware
   overwrote our ``DENY``); it is ``DENY`` again, and MLflow's header elsewhere is unchanged;
3. MLflow's 400 for a taken name carried the database driver's error, its SQL statement and
   the other user's name; the client now gets a plain message, other 400s keep theirs.

Fast tests of the gate's pure response-rewriting helpers close the file.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
import requests

from mlflow_hokusai.gate import json_errors as gate
from tests.helpers import api_key_for
from tests.server import Server

EXPERIMENTS = "/api/2.0/mlflow/experiments"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
KEY_PAGE_PATHS = ("/hokusai/keys", "/api/mlflow/hokusai/keys")
# What MLflow's database errors look like; none of it may reach a client.
DATABASE_TEXT = re.compile(r"SQL|sqlite3|IntegrityError|INSERT|UPDATE|psycopg|sqlalche", re.I)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _call(server, method: str, path: str, key: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.request(method, server.url + path, headers=headers, timeout=60)


def _experiment(server, key: str, name: str) -> str:
    made = server.post(f"{EXPERIMENTS}/create", key, json={"name": name})
    assert made.status_code == 200, made.text
    return made.json()["experiment_id"]


def _run(server, key: str, experiment_id: str) -> str:
    made = server.post("/api/2.0/mlflow/runs/create", key, json={"experiment_id": experiment_id})
    assert made.status_code == 200, made.text
    return made.json()["run"]["info"]["run_id"]


def _headers(response: requests.Response) -> dict:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() != "date"}


def _assert_head_is_get(server, path: str, key: str, status: int) -> None:
    got = _call(server, "GET", path, key)
    head = _call(server, "HEAD", path, key)
    assert got.status_code == status, (path, got.text)
    assert head.status_code == status, (path, head.status_code)
    assert head.content == b""
    assert _headers(head) == _headers(got), path


@pytest.fixture(scope="module")
def private_server(tmp_path_factory):
    """A server where users see nothing they were not granted (``NO_PERMISSIONS``)."""
    config = tmp_path_factory.mktemp("findings-mlflow-config") / "hokusai.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n")
    workdir = str(tmp_path_factory.mktemp("findings-mlflow-private"))
    srv = Server(workdir, workers=1, env={"HOKUSAI_CONFIG": str(config)}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory):
    """The same app behind gunicorn: the gate's WSGI shape."""
    workdir = str(tmp_path_factory.mktemp("findings-mlflow-gunicorn"))
    srv = Server(workdir, workers=1, args=["--gunicorn-opts", "--timeout 120", "--workers", "1"])
    srv.start()
    yield srv
    srv.stop()


# -- 1. HEAD answers as GET, and is refused where GET is --------------------------------------
def test_head_answers_as_get_for_admins_owners_and_other_users(server):
    alice_name, bob_name = _unique("head-alice"), _unique("head-bob")
    alice, bob = api_key_for(server, alice_name), api_key_for(server, bob_name)
    experiment = _experiment(server, alice, _unique("head-exp"))
    run = _run(server, alice, experiment)
    paths = (
        f"{EXPERIMENTS}/get?experiment_id={experiment}",
        f"{EXPERIMENTS}/get?experiment_id=0",
        f"/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment}",
        f"/api/mlflow/api/2.0/mlflow/runs/get?run_id={run}",
        f"{EXPERIMENTS}/search?max_results=5",
        WHOAMI,
        *KEY_PAGE_PATHS,
        "/hokusai/keys.js",
    )
    for key in (server.admin_key, alice, bob):  # default READ: bob may read alice's
        for path in paths:
            _assert_head_is_get(server, path, key, 200)
    assert _call(server, "HEAD", WHOAMI, bob).headers["Content-Type"] == "application/json"


def test_head_is_refused_where_get_is(private_server):
    server = private_server
    alice, bob = api_key_for(server, "head-owner"), api_key_for(server, "head-stranger")
    experiment = _experiment(server, alice, _unique("private-head"))
    run = _run(server, alice, experiment)
    private = (
        f"{EXPERIMENTS}/get?experiment_id={experiment}",
        f"/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment}",
        f"/api/2.0/mlflow/runs/get?run_id={run}",
        f"/api/mlflow/api/2.0/mlflow/runs/get?run_id={run}",
    )
    for path in private:
        _assert_head_is_get(server, path, server.admin_key, 200)
        _assert_head_is_get(server, path, alice, 200)
        _assert_head_is_get(server, path, bob, 403)
    _assert_head_is_get(server, WHOAMI, bob, 200)
    # A HEAD of a write route is the GET of it (refused: 403 or 405); nothing is written.
    delete = f"{EXPERIMENTS}/delete?experiment_id={experiment}"
    for key in (server.admin_key, alice):
        refused = _call(server, "GET", delete, key).status_code
        assert refused in (403, 405)
        _assert_head_is_get(server, delete, key, refused)
    still = server.get(f"{EXPERIMENTS}/get", alice, params={"experiment_id": experiment})
    assert still.json()["experiment"]["lifecycle_stage"] == "active"


def _flask_get_paths(routes, experiment: str, run: str) -> list[str]:
    def fill(template: str) -> str:
        template = re.sub(r"<(?:int|float):[^>]+>", "1", template)
        template = re.sub(r"<path:[^>]+>", f"{experiment}/x", template)
        return re.sub(r"<[^>]+>", "dummy", template)

    query = f"experiment_id={experiment}&run_id={run}&run_uuid={run}&path=x&name=x"
    return sorted(
        {
            f"{fill(route['path'])}?{query}"
            for route in routes
            if route["kind"] == "flask"
            and "GET" in route["methods"]
            and "/gateway/" not in route["path"]  # asks model providers over the network
        }
    )


def test_no_head_gets_what_its_get_is_refused(private_server, routes):
    """Every Flask GET route, for a user granted nothing, with another user's experiment and
    run in the query: HEAD answers with the GET's status (a 403 stays a 403)."""
    server = private_server
    alice, bob = api_key_for(server, "head-walk-owner"), api_key_for(server, "head-walk-other")
    experiment = _experiment(server, alice, _unique("head-walk"))
    run = _run(server, alice, experiment)
    differ, refused = [], 0
    for path in _flask_get_paths(routes, experiment, run):
        got = _call(server, "GET", path, bob)
        head = _call(server, "HEAD", path, bob)
        refused += got.status_code == 403
        if head.status_code != got.status_code:
            differ.append(f"{path}: GET {got.status_code}, HEAD {head.status_code}")
    assert not differ, "\n".join(differ)
    assert refused > 10  # the walk reached routes that refuse this user


# -- 2. the key page forbids framing in both headers --------------------------------------------
def test_the_key_page_goes_out_with_x_frame_options_deny(server):
    key = api_key_for(server, _unique("frames"))
    for path in (*KEY_PAGE_PATHS, "/hokusai/keys.js", "/hokusai/keys.css"):
        for method in ("GET", "HEAD"):
            page = _call(server, method, path, key)
            assert page.status_code == 200, (method, path)
            assert page.headers["X-Frame-Options"] == "DENY", (method, path)
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    # MLflow's own header stays as MLflow sets it everywhere else.
    for path in ("/", WHOAMI):
        assert _call(server, "GET", path, key).headers["X-Frame-Options"] == "SAMEORIGIN"


# -- 3. no database text in MLflow's 400s -------------------------------------------------------
def _assert_plain_conflict(answer: requests.Response, taken: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["message"] == gate.CONFLICT_MESSAGE, body
    assert body["error_code"] in ("BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"), body
    assert DATABASE_TEXT.search(answer.text) is None, answer.text
    assert taken not in answer.text


def test_a_rename_onto_a_taken_name_shows_no_database_text(server):
    alice, bob = api_key_for(server, _unique("rename-a")), api_key_for(server, _unique("rename-b"))
    taken = _unique("bob-private-experiment")
    _experiment(server, bob, taken)
    mine = _experiment(server, alice, _unique("alice-experiment"))
    renamed = server.post(
        f"{EXPERIMENTS}/update", alice, json={"experiment_id": mine, "new_name": taken}
    )
    _assert_plain_conflict(renamed, taken)
    again = server.post(f"{EXPERIMENTS}/create", alice, json={"name": taken})
    _assert_plain_conflict(again, taken)
    assert "database text" in server.log_text()  # the original is in the server's log


def test_other_400s_keep_mlflows_message(server):
    alice = api_key_for(server, _unique("plain-400"))
    mine = _experiment(server, alice, _unique("plain"))
    missing = server.post(f"{EXPERIMENTS}/update", alice, json={"experiment_id": mine})
    assert missing.status_code == 400
    assert missing.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Missing value for required parameter 'new_name'" in missing.json()["message"]
    long_name = server.post(
        f"{EXPERIMENTS}/update", alice, json={"experiment_id": mine, "new_name": "x" * 600}
    )
    assert long_name.status_code == 400
    assert "exceeds the maximum length" in long_name.json()["message"]


# -- the same three behind gunicorn (the gate's WSGI shape) -------------------------------------
def test_gunicorn_answers_the_same(gunicorn_server):
    server = gunicorn_server
    alice, bob = api_key_for(server, "wsgi-alice"), api_key_for(server, "wsgi-bob")
    taken = _unique("wsgi-bob-experiment")
    _experiment(server, bob, taken)
    mine = _experiment(server, alice, _unique("wsgi-alice-experiment"))
    for path in (f"{EXPERIMENTS}/get?experiment_id={mine}", WHOAMI, *KEY_PAGE_PATHS):
        _assert_head_is_get(server, path, alice, 200)
    for path in KEY_PAGE_PATHS:
        assert _call(server, "GET", path, alice).headers["X-Frame-Options"] == "DENY"
    assert _call(server, "GET", WHOAMI, alice).headers["X-Frame-Options"] == "SAMEORIGIN"
    renamed = server.post(
        f"{EXPERIMENTS}/update", alice, json={"experiment_id": mine, "new_name": taken}
    )
    _assert_plain_conflict(renamed, taken)


# -- the pure parts -----------------------------------------------------------------------------
POSTGRES_CONFLICT = json.dumps(
    {
        "error_code": "RESOURCE_ALREADY_EXISTS",
        "message": "(psycopg2.errors.UniqueViolation) duplicate key value violates unique "
        'constraint "experiment_name_unique"\nDETAIL:  Key (name)=(secret) already exists.\n'
        "[SQL: INSERT INTO experiments (name) VALUES (%(name)s)]",
    }
).encode()


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (400, POSTGRES_CONFLICT, "RESOURCE_ALREADY_EXISTS", gate.CONFLICT_MESSAGE),
        (
            409,
            b"(sqlite3.IntegrityError) UNIQUE constraint failed: registered_models.name\n"
            b"[SQL: INSERT INTO registered_models (name) VALUES (?)]",
            "RESOURCE_ALREADY_EXISTS",
            gate.CONFLICT_MESSAGE,
        ),
        (
            400,
            b'{"error_code": "<b>", "message": "(pymysql.err.DataError) [SQL: UPDATE t]"}',
            "INVALID_PARAMETER_VALUE",
            gate.DATABASE_REFUSED_MESSAGE,
        ),
    ],
    ids=["postgres-json", "sqlite-plain-text-409", "mysql-odd-error-code"],
)
def test_database_text_is_replaced_keeping_status_and_code(status, body, code, message):
    assert gate._needs_rewrite(status, [("Content-Type", "application/json")])
    replaced_status, headers, replaced = gate._rewritten(status, [], body)
    assert replaced_status == status
    assert dict(headers)["Content-Type"] == "application/json"
    assert json.loads(replaced) == {"error_code": code, "message": message}


def test_bodies_without_database_text_are_sent_unchanged():
    for body in (
        b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "Missing value for \'name\'."}',
        b'{"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Token id x is taken."}',
        b"not json",
        b"",
    ):
        assert gate._rewritten(400, [], body) is None
        assert gate._rewritten(409, [], body) is None
    assert not gate._needs_rewrite(404, [("Content-Type", "application/json")])


def test_x_frame_options_follows_a_policy_that_forbids_every_frame_ancestor():
    policy = "default-src 'none'; frame-ancestors 'none'"
    asgi = [(b"content-security-policy", policy.encode()), (b"x-frame-options", b"SAMEORIGIN")]
    assert gate._deny_framing(asgi) == [asgi[0], (b"x-frame-options", b"DENY")]
    wsgi = [("Content-Security-Policy", policy), ("X-Frame-Options", "SAMEORIGIN")]
    assert gate._deny_framing(wsgi) == [wsgi[0], ("X-Frame-Options", "DENY")]
    assert gate._deny_framing([("X-Frame-Options", "SAMEORIGIN")]) is None
    assert gate._deny_framing([("Content-Security-Policy", "frame-ancestors 'self'")]) is None
    assert gate._deny_framing([]) is None
