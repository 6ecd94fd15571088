"""Authentication: parse the credential (``credentials``), resolve it to an identity through
the worker's one lookup cache (``authenticator``, ``cache``), hand it on to the rest of the
request (``context``, ``flask_auth``), and the read-only key table (``scopes``).

Imports only downward: ``keys``, ``store``, ``errors``, ``_mlflow``."""
