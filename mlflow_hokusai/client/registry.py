"""``ModelRegistry.register_tokenized_model``: register a model version for a Hokusai token.

The seed guide registers a model and then sets the three token tags by hand, one call each; a
typo or a failure half-way leaves a version that looks like a token's model but is not. This
helper checks every input with the same rule functions the server runs (``tags.rules``) before
anything is sent, registers the version, waits until it is READY, tags it, and removes the version
again if tagging fails, so a version either carries all its token tags or does not exist.

Only MLflow's public client API is used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from mlflow_hokusai.client.sources import expected_sources, resolve_source
from mlflow_hokusai.tags.rules import (
    DEFAULT_RULES,
    METRIC_TAG,
    TOKEN_ID_TAG,
    TOKEN_TAGS,
    VALUE_TAG,
    TagRuleError,
    TagRules,
    validate_metric,
    validate_tags,
    validate_token_id,
    validate_value,
)

READY = ModelVersionStatus.to_string(ModelVersionStatus.READY)
PENDING = ModelVersionStatus.to_string(ModelVersionStatus.PENDING_REGISTRATION)
_logger = logging.getLogger(__name__)
_ALREADY_EXISTS = (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), "ALREADY_EXISTS")


@dataclass(frozen=True)
class TokenizedModel:
    """A registered model version that carries a Hokusai token's tags."""

    name: str
    version: str
    token_id: str
    metric: str
    baseline: float
    run_id: str | None
    source: str


class ModelRegistry:
    """Token-aware registration on an MLflow model registry (ours or any other).

    ``tracking_uri`` defaults to MLflow's (``MLFLOW_TRACKING_URI``); credentials are MLflow's
    as well (``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_AUTH=hokusai`` with
    ``HOKUSAI_API_KEY``). ``rules`` must match the server's when it lists its own metrics.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        rules: TagRules = DEFAULT_RULES,
        await_registration_for: float = 300,
    ):
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._rules = rules
        self._await = await_registration_for

    def register_tokenized_model(
        self,
        model_uri: str,
        model_name: str,
        token_id: str,
        metric_name: str,
        baseline_value: float,
        tags: Mapping[str, object] | None = None,
    ) -> TokenizedModel:
        """Register ``model_uri`` as a version of ``model_name`` for token ``token_id``.

        Raises ``TagRuleError`` (a ``ValueError``) for an invalid token id, metric or value
        before anything is sent, and ``MlflowException`` with the server's message when the
        server refuses. Calling again with the same model source and token returns the
        version made the first time.
        """
        token_tags, baseline = self._validated(token_id, metric_name, baseline_value, tags)
        if not isinstance(model_uri, str) or not model_uri.strip():
            raise ValueError("model_uri must be a non-empty string such as runs:/<run_id>/model")
        if not isinstance(model_name, str) or not model_name.strip():
            raise ValueError("model_name must be a non-empty string")

        source, run_id, model_id = resolve_source(self._client, model_uri)
        existing = self._find_existing(
            model_name, token_tags[TOKEN_ID_TAG], expected_sources(self._client, model_uri, source)
        )
        if existing is not None:
            self._check_same_benchmark(existing, token_tags)
            return self._result(existing, baseline)

        created_model = self._ensure_registered_model(model_name)
        try:
            version = self._client.create_model_version(
                model_name, source, run_id=run_id, model_id=model_id, await_creation_for=0
            )
        except Exception:
            if created_model:
                self._delete_quietly(model_name, None)
            raise
        try:
            version = self._wait_until_ready(version)
            # Token id last: a version is claimed for a token only once it is fully described.
            for key, value in token_tags.items():
                self._client.set_model_version_tag(model_name, version.version, key, value)
        except BaseException as exc:  # an interrupt half-way must not leave tags behind either
            self._roll_back(model_name, version.version, created_model, exc)
            raise
        return self._result(self._client.get_model_version(model_name, version.version), baseline)

    # -- steps -----------------------------------------------------------------------------

    def _validated(self, token_id, metric_name, baseline_value, tags):
        """The tags to write, in writing order, and the baseline as a float."""
        token_id = validate_token_id(token_id)
        metric = validate_metric(metric_name, self._rules)
        baseline = validate_value(baseline_value, metric, self._rules)
        # Keep a string exactly as given (the server stores it as sent); write numbers in full.
        value_text = baseline_value if isinstance(baseline_value, str) else repr(baseline)
        extra = {}
        for key, value in dict(tags or {}).items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"tag names must be non-empty strings, not {key!r}")
            if key in TOKEN_TAGS:
                raise TagRuleError(
                    key,
                    value,
                    "set token tags through the arguments "
                    "token_id, metric_name and baseline_value, not through tags",
                )
            extra[key] = str(value)
        ordered = {METRIC_TAG: metric, VALUE_TAG: value_text, **extra, TOKEN_ID_TAG: token_id}
        validate_tags(ordered, rules=self._rules)
        return ordered, baseline

    def _find_existing(self, name: str, token_id: str, sources: set[str]):
        """A usable version of ``name`` already registered from one of ``sources`` for
        ``token_id`` (token ids compare case-insensitively, as on the server)."""
        quote = '"' if "'" in name else "'"
        page_token = None
        while True:
            page = self._client.search_model_versions(
                f"name = {quote}{name}{quote}", page_token=page_token
            )
            for version in page:
                if (
                    version.source in sources
                    and str(version.tags.get(TOKEN_ID_TAG, "")).lower() == token_id.lower()
                    and version.status in (READY, PENDING)
                ):
                    return self._wait_until_ready(version)
            page_token = page.token
            if not page_token:
                return None

    def _check_same_benchmark(self, version, token_tags) -> None:
        for key in (METRIC_TAG, VALUE_TAG):
            have, want = version.tags.get(key), token_tags[key]
            if not (have == want if key == METRIC_TAG else _same_number(have, want)):
                raise MlflowException(
                    f"Version {version.version} of model {version.name!r} already registers this "
                    f"model for token {token_tags[TOKEN_ID_TAG]!r} with {key}={have!r}, not "
                    f"{want!r}. Change the tag on that version, or register a new model.",
                    error_code=ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
                )

    def _ensure_registered_model(self, name: str) -> bool:
        """Create the registered model if absent; True when this call created it."""
        try:
            self._client.create_registered_model(name)
            return True
        except MlflowException as exc:
            if exc.error_code in _ALREADY_EXISTS:
                return False
            raise

    def _wait_until_ready(self, version):
        deadline = time.monotonic() + self._await
        while version.status == PENDING:
            if time.monotonic() > deadline:
                raise MlflowException(
                    f"Version {version.version} of model {version.name!r} was not READY after "
                    f"{self._await:g} s (status {version.status})."
                )
            time.sleep(1)
            version = self._client.get_model_version(version.name, version.version)
        if version.status != READY:
            raise MlflowException(
                f"Version {version.version} of model {version.name!r} failed to register: "
                f"{version.status} {version.status_message or ''}".rstrip()
            )
        return version

    def _roll_back(self, name: str, version: str, created_model: bool, cause: Exception) -> None:
        """Delete the version this call made (and the registered model, if this call made it)."""
        problem = self._delete_quietly(name, version)
        if problem is None and created_model:
            problem = self._delete_quietly(name, None)
        if problem is not None:
            note = (
                f"mlflow-hokusai could not remove the incomplete version {version} of model "
                f"{name!r}: {problem}. Delete it by hand."
            )
            _logger.warning(note)
            if hasattr(cause, "add_note"):  # Python >= 3.11
                cause.add_note(note)

    def _delete_quietly(self, name: str, version: str | None) -> Exception | None:
        try:
            if version is None:
                self._client.delete_registered_model(name)
            else:
                self._client.delete_model_version(name, version)
        except Exception as exc:  # reported as a note on the original error
            return exc
        return None

    @staticmethod
    def _result(version, baseline: float) -> TokenizedModel:
        return TokenizedModel(
            name=version.name,
            version=str(version.version),
            token_id=version.tags[TOKEN_ID_TAG],
            metric=version.tags[METRIC_TAG],
            baseline=baseline,
            run_id=version.run_id or None,
            source=version.source,
        )


def _same_number(have, want: str) -> bool:
    try:
        return float(have) == float(want)
    except (TypeError, ValueError):
        return False
