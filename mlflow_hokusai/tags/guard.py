"""The service behind the token-tag hook: checks one registry tag write before it happens.

Rules come from ``tags/rules.py`` (shared with the SDK). On top of them this adds what needs
the server's data: the entity's existing tags (so the second of ``benchmark_metric`` and
``benchmark_value`` is checked against the first) and the uniqueness of a token id across
registered models, made safe against concurrent writers by ``store/token_claims.py``.
No Flask here: the hook hands in plain values.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Literal

from mlflow.exceptions import MlflowException

from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.store.token_claims import ClaimedElsewhere, TokenClaims
from mlflow_hokusai.tags.rules import (
    METRIC_TAG,
    TOKEN_ID_TAG,
    TOKEN_TAGS,
    VALUE_TAG,
    TagRuleError,
    TagRules,
    validate_tags,
)

_logger = logging.getLogger(__name__)
Entity = Literal["registered_model", "model_version"]
REGISTERED_MODEL: Entity = "registered_model"
MODEL_VERSION: Entity = "model_version"
_PAGE = 1000
HOLD_WAIT_SECONDS = 10.0  # a write of the benchmark pair waits this long for another's
IS_PROMPT_TAG = "mlflow.prompt.is_prompt"  # MLflow's prompt marker (a public tag name)


class TokenTagGuard:
    def __init__(self, rules: TagRules, registry_store: Callable[[], object], claims: TokenClaims):
        self.rules = rules
        self.registry_store = registry_store
        self.claims = claims

    def check(
        self,
        entity: Entity,
        model_name: str,
        version: str | None,
        pairs: Iterable[tuple[object, object]],
        creating: bool,
        may_read: Callable[[str], bool] = lambda name: False,
    ) -> list[str]:
        """Check the (key, value) pairs about to be written to a registered model or model
        version. Raises HokusaiError (400 or 409; the 409 names the model holding the token
        id only when ``may_read(name)``). Returns the ids of the claims the caller must
        release once the write is done (committed or failed)."""
        written: dict[str, object] = {}
        for key, value in pairs:
            if key not in TOKEN_TAGS:
                continue
            if not isinstance(value, str):
                raise _invalid(TagRuleError(key, value, "tag values must be strings"))
            if key in written and written[key] != value:
                raise _invalid(TagRuleError(key, value, "the tag is given twice with two values"))
            written[key] = value
        if not written:
            return []
        held = []
        if not creating and {METRIC_TAG, VALUE_TAG} & written.keys():
            # The pair is checked against the entity's current tags: hold the entity until
            # this write is done, so a concurrent write of the other half waits and then
            # sees this one (else both could pass against the old values).
            held.append(self._hold_entity(entity, model_name, version))
        try:
            existing = {} if creating else self._existing_tags(entity, model_name, version)
            try:
                checked = validate_tags(written, existing, self.rules)
            except TagRuleError as error:
                raise _invalid(error) from None
            token_id = checked.get(TOKEN_ID_TAG)
            if token_id is not None:
                held.append(self._claim(token_id, model_name, may_read))
        except BaseException:
            self.release(held)
            raise
        return held

    def release(self, claim_ids: Iterable[str]) -> None:
        for claim_id in claim_ids:
            self.claims.release(claim_id)

    def _hold_entity(self, entity: Entity, model_name: str, version: str | None) -> str:
        """A claim on (entity, name, version) for this writer alone, waiting up to
        ``HOLD_WAIT_SECONDS`` for another writer's to end; 409 if it does not."""
        subject = hashlib.sha256(f"{entity}\0{model_name}\0{version}".encode()).hexdigest()
        writer = secrets.token_hex(16)
        deadline = time.monotonic() + HOLD_WAIT_SECONDS
        while True:
            try:
                return self.claims.acquire(subject, writer)
            except ClaimedElsewhere:
                if time.monotonic() > deadline:
                    raise HokusaiError(
                        "RESOURCE_ALREADY_EXISTS",
                        f"Another write of {METRIC_TAG}/{VALUE_TAG} to this {_noun(entity)} "
                        "is in progress; retry.",
                    ) from None
                time.sleep(0.01 + secrets.randbelow(40) / 1000)  # jitter: two waiters part

    def _claim(self, token_id: str, model_name: str, may_read: Callable[[str], bool]) -> str:
        try:
            claim_id = self.claims.acquire(token_id, model_name)
        except ClaimedElsewhere as busy:
            shown = busy.model_name if may_read(busy.model_name) else None
            raise _taken(token_id, shown, in_flight=True) from None
        try:
            holder = self.holder_of(token_id, model_name)
        except BaseException:
            self.claims.release(claim_id)
            raise
        if holder is not None:
            self.claims.release(claim_id)
            raise _taken(token_id, holder if may_read(holder) else None)
        return claim_id

    def holder_of(self, token_id: str, model_name: str) -> str | None:
        """The name of another registered model -- prompt or not -- whose own tags or whose
        versions' tags carry ``token_id`` (compared case-insensitively), or None."""
        store = self.registry_store()
        # Validated ids hold only letters, digits and '-': safe to quote, and no LIKE
        # wildcards, so ILIKE is a case-insensitive equality here.
        where = f"tags.`{TOKEN_ID_TAG}` ILIKE '{token_id}'"
        # MLflow's searches leave prompts out unless the filter asks for them: ask both ways.
        filters = (where, f"{where} AND tags.`{IS_PROMPT_TAG}` = 'true'")
        for search in (store.search_model_versions, store.search_registered_models):
            for filter_string in filters:
                token = None
                while True:
                    page = search(filter_string=filter_string, max_results=_PAGE, page_token=token)
                    for item in page:
                        if item.name != model_name:
                            return item.name
                    token = page.token
                    if not token:
                        break
        return None

    def _existing_tags(self, entity: Entity, model_name: str, version: str | None) -> dict:
        store = self.registry_store()
        try:
            if entity == MODEL_VERSION:
                return dict(store.get_model_version(model_name, version).tags)
            return dict(store.get_registered_model(model_name).tags)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # never check the pair against tags we could not read
            return {}  # no such entity: MLflow's handler answers the request with its error


def _noun(entity: Entity) -> str:
    return "model version" if entity == MODEL_VERSION else "registered model"


def _invalid(error: TagRuleError) -> HokusaiError:
    return HokusaiError("INVALID_PARAMETER_VALUE", str(error) + ".")


def _taken(token_id: str, holder: str | None, in_flight: bool = False) -> HokusaiError:
    """``holder``: the model to name, or None when the caller may not read it."""
    how = "is being assigned to" if in_flight else "already belongs to"
    whom = f"registered model {holder!r}" if holder else "another registered model"
    return HokusaiError(
        "RESOURCE_ALREADY_EXISTS",
        f"Invalid tag {TOKEN_ID_TAG}={token_id!r}: the token id {how} {whom}; a token id "
        "belongs to at most one registered model.",
    )
