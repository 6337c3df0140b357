"""The read side as the API sees it: serve snapshot rows, and wait until a
write's own events are in them (read-your-writes)."""

from __future__ import annotations

from sessions.projection.listing import ListedRow, PageQuery
from sessions.projection.runner import Projector, wait_until
from sessions.projection.snapshots import ServedRow, SessionSnapshots


class ReadModel:
    def __init__(self, view: SessionSnapshots, projector: Projector | None = None):
        self.view = view
        self.projector = projector

    def wait_for(self, position: int, timeout: float) -> bool:
        if position <= 0:
            return True
        if self.projector is not None:
            return self.projector.wait_for(position, timeout)
        # The projector runs in another process: watch its tracking position.
        return wait_until(lambda: self.view.position() >= position, timeout)

    def get(self, session_id: str) -> ServedRow | None:
        return self.view.get(session_id)

    def list_newest(self, subject_container_id: str, limit: int) -> list[ServedRow]:
        return self.view.list_newest(subject_container_id, limit)

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        return self.view.list_page(query)

    def page_token_key(self) -> bytes:
        return self.view.page_token_key()
