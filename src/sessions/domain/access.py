"""Whom a caller may act for: the agent rule (README, "Security":
who may do what). Which roles may call which methods is the API's business
(sessions.api.access); which agent's sessions a credential may touch is the
domain's, decided here and nowhere else.

``acting_for`` is the set of agent ids a caller's credential is bound to, or
None for a caller not limited to any (an admin, or a server run without
credentials).
"""

from __future__ import annotations

from sessions.domain.errors import PermissionDenied

ActingFor = frozenset[str] | None


def require_acting_for(agent_id: str, acting_for: ActingFor, action: str) -> None:
    """Refuse (PERMISSION_DENIED) unless the caller may act for ``agent_id``."""
    if acting_for is not None and agent_id not in acting_for:
        raise PermissionDenied(f"cannot {action}: this credential does not act for agent {agent_id!r}")
