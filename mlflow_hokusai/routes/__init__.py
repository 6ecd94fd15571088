"""HTTP layer: the outer gate (prefix + authentication), our REST endpoints, the hooks we add to
MLflow's Flask app, and the one error path. Installers take the ``Services`` that
``create_app`` builds."""
