"""A real OIDC issuer for the keyless-CI tests: RSA and EC key pairs, the discovery document
and the JWKS served over HTTP on loopback, and tokens minted with GitHub-Actions-like claims
(PyJWT). ``rotate()`` replaces the signing keys (new ``kid``s), as an issuer does."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "https://mlflow.example"
REPOSITORY = "octo-org/octo-repo"


class OidcIssuer:
    def __init__(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                issuer.requests.append(self.path)
                if self.path.startswith("/github-token?"):
                    body = issuer.github_token(self)
                    if body is None:
                        self.send_error(403)
                        return
                elif self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": issuer.public_jwks()}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.requests: list[str] = []
        self.rotate()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    GITHUB_SECRET = "ghs_request_token_for_tests"

    def github_token(self, handler) -> dict | None:
        """GitHub Actions' token endpoint as a job sees it: ``ACTIONS_ID_TOKEN_REQUEST_URL``
        with ``&audience=…``, authorized by ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``."""
        from urllib.parse import parse_qs, urlsplit

        if handler.headers.get("Authorization") != f"bearer {self.GITHUB_SECRET}":
            return None
        query = parse_qs(urlsplit(handler.path).query)
        audience = query.get("audience", [None])[0]
        if query.get("api-version") != ["2.0"] or not audience:
            return None
        return {"value": self.token(aud=audience), "count": 1}

    def rotate(self) -> None:
        """New RSA and EC signing keys under new key ids; the old ones are no longer published."""
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa_kid = "rsa-" + secrets.token_hex(4)
        self.ec_kid = "ec-" + secrets.token_hex(4)

    def public_jwks(self) -> list[dict]:
        keys = []
        for kid, key, alg in (
            (self.rsa_kid, self.rsa, "RS256"),
            (self.ec_kid, self.ec, "ES256"),
        ):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        return keys

    def claims(self, **overrides) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": f"repo:{REPOSITORY}:ref:refs/heads/main",
            "repository": REPOSITORY,
            "repository_owner": "octo-org",
            "ref": "refs/heads/main",
            "environment": "prod",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, algorithm: str = "RS256", kid: str | None = None, **overrides) -> str:
        key = self.rsa if algorithm == "RS256" else self.ec
        default_kid = self.rsa_kid if algorithm == "RS256" else self.ec_kid
        headers = {"kid": kid or default_kid}
        return jwt.encode(self.claims(**overrides), key, algorithm=algorithm, headers=headers)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
