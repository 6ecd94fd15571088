"""Artifact storage behind MLflow's proxied artifact API: streaming uploads to S3 through
MLflow's S3 repository."""
