"""Write every route of the app ``create_app`` builds, as JSON, to the file named by argv[1].

Run in a subprocess with a running server's environment (the test copies it from the server's
uvicorn process), so the app is built exactly as the server built it.
"""

import json
import sys


def _native_routes(app):
    from starlette.routing import Mount

    found = []

    def walk(routes):
        for route in routes:
            if isinstance(route, Mount):  # MLflow's Flask app, mounted at "/"
                continue
            candidates = getattr(route, "effective_candidates", None)
            if callable(candidates):
                walk(candidates())
            elif getattr(route, "path", None) is not None:
                kind = "websocket" if type(route).__name__.startswith("WebSocket") else "http"
                methods = sorted(getattr(route, "methods", None) or ["GET"])
                found.append({"kind": f"fastapi-{kind}", "path": route.path, "methods": methods})

    walk(getattr(app, "routes", []))
    return found


def main():
    from mlflow_hokusai.app import create_app

    gate = create_app()
    from mlflow.server import app as flask_app

    routes = [
        {"kind": "flask", "path": rule.rule, "methods": sorted(rule.methods or ["GET"])}
        for rule in flask_app.url_map.iter_rules()
    ]
    if gate.app is not flask_app:
        routes += _native_routes(gate.app)
    with open(sys.argv[1], "w") as handle:
        json.dump(routes, handle)


if __name__ == "__main__":
    main()
