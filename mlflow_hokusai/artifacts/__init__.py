"""Artifact storage behind MLflow's proxied artifact API."""
