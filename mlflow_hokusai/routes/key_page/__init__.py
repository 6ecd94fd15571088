"""The self-service key page: ``GET /hokusai/keys`` (and under the URL prefix, where the gate
maps it), with its script and style beside it.

The page is static: its script does everything through the key and audit REST endpoints, with
the browser's own credentials (the Basic prompt the gate answers a browser with), so the
rules and errors are those of ``keys.management`` and ``keys.audit``, in one place. Nothing it
serves depends on who asks; nothing secret is in it. It is authenticated like every other
route (the gate) and, being a read, open to read-only keys.

The answers forbid framing, inline script and every other origin (``Content-Security-Policy``)
and caching of the page. MLflow's security middleware sets ``X-Frame-Options: SAMEORIGIN`` on
every response after the view; the gate's response rewriting (``gate/json_errors.py``
``_deny_framing``) puts back ``DENY`` wherever the policy says ``frame-ancestors 'none'``, so
the two headers agree. Cross-origin writes through a signed-in browser are refused before
they reach the REST endpoints, by MLflow's cross-origin check (an ``Origin`` the server does
not serve); ``tests/test_key_page.py`` shows it from a page on another origin.
"""

from __future__ import annotations

from importlib import resources

from flask import Flask, Response

from mlflow_hokusai import _mlflow
from mlflow_hokusai.routes.services import Services

PAGE = "/hokusai/keys"
FILES = {
    PAGE: ("keys.html", "text/html; charset=utf-8"),
    "/hokusai/keys.js": ("keys.js", "text/javascript; charset=utf-8"),
    "/hokusai/keys.css": ("keys.css", "text/css; charset=utf-8"),
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def _view(name: str, content_type: str):
    body = resources.files(__package__).joinpath(name).read_bytes()

    def view():
        return Response(body, content_type=content_type, headers=HEADERS)

    view.__name__ = f"hokusai_key_page_{name.replace('.', '_')}"
    return view


def install(app: Flask, services: Services) -> None:
    rules = []
    for path, (name, content_type) in FILES.items():
        full = services.static_prefix + path
        app.add_url_rule(full, endpoint=f"hokusai:{full}", view_func=_view(name, content_type))
        rules.append((full, "GET"))
    _mlflow.patches.allow_authenticated(rules)
