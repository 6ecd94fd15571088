"""MLflow roles from the provider's groups (``oidc_group_roles = ml-team:trainers, …``).

At each sign-in, a member of a listed group is assigned the MLflow roles of that name (MLflow's
own RBAC, through its auth store's public role API: every workspace's role of that name), and a
role assignment sign-in made earlier is removed when the person is no longer in a group that
grants it. Assignments an admin made by hand are never touched: sign-in records the ones it
made (``store/sessions.py``, ``hokusai_group_role_grants``). A role named in the setting that
does not exist is logged, and the sign-in goes on.
"""

from __future__ import annotations

import logging

from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.sessions import SessionStore

_logger = logging.getLogger(__name__)


class GroupRoles:
    def __init__(self, pairs: tuple[tuple[str, str], ...], users, store: SessionStore):
        self.pairs = pairs
        self.users = users  # MLflow's auth store (assign_role_to_user, list_roles, …)
        self.store = store

    def wanted(self, groups) -> set[str]:
        """The role names ``groups`` grant."""
        groups = set(groups)
        return {role for group, role in self.pairs if group in groups}

    def apply(self, person, user) -> tuple[list[str], list[str]]:
        """Assign and remove ``user``'s group roles for ``person``'s groups: (the role names
        assigned, the role names removed)."""
        if not self.pairs:
            return [], []
        names = self.wanted(person.groups)
        every_role = self.users.list_roles()
        roles = [r for r in every_role if r.name in names]
        for missing in sorted(names - {r.name for r in roles}):
            _logger.warning(
                "oidc_group_roles names the MLflow role %r, which does not exist", missing
            )
        current = {r.id for r in self.users.list_user_roles(user.id)}
        granted = self.store.role_grants(user.id)
        added, removed = [], []
        for role in roles:
            if role.id not in current:
                self.users.assign_role_to_user(user.id, role.id)
                self.store.add_role_grant(user.id, role.id, utcnow())
                added.append(role.name)
        wanted_ids = {r.id for r in roles}
        name_of = {r.id: r.name for r in every_role}
        for role_id in sorted(granted - wanted_ids):
            if role_id in current:
                self.users.unassign_role_from_user(user.id, role_id)
                removed.append(name_of.get(role_id, str(role_id)))
            self.store.remove_role_grant(user.id, role_id)
        return added, removed
