"""The read side of one process: reads through the live view, the rows its
commands write with their events, and the projector (unless another process
runs it).

Nothing here waits or polls to stay consistent (see projection.registry):
every read goes through the view the registry defines, so it sees the live
table of the moment; every command writes its sessions' rows, in its own
transaction, into the tables the registry names in that transaction. A
write answered by any process is in what every process reads next.
"""

from __future__ import annotations

import logging

from sessions.projection.listing import ListedRow, PageQuery
from sessions.projection.ownership import ownership_of
from sessions.projection.point_reads import point_reads
from sessions.projection.projector import Projector
from sessions.projection.registry import Registry
from sessions.projection.row_tables import live_rows, rows_on
from sessions.projection.rows import NAME, ServedRow
from sessions.projection.schema import version as code_version
from sessions.store.application import SessionsApplication

log = logging.getLogger("sessions.read_model")


class ReadModel:
    def __init__(self, app: SessionsApplication, *, run_projector: bool = True):
        self.app = app
        self.registry = Registry.of(app)
        registration = self.registry.get(NAME)
        live = rows_on(app, registration.live_table)  # (created if new)
        self.registry.define_view(NAME)
        self.live = live_rows(app)  # reads: through the view on the live table
        self.point = point_reads(app)  # GetSession's shorter way to the same rows
        self.projector = (
            Projector(app, live, registry=self.registry, ownership=ownership_of(app, NAME)) if run_projector else None
        )
        self.outdated = registration.live_version != code_version(NAME)
        if self.outdated:
            log.warning(
                "read model %s is at version %d, this build folds version %d: serving "
                "version %d; run `sessions projections rebuild` (or serve --rebuild-on-start)",
                NAME, registration.live_version, code_version(NAME), registration.live_version,
            )

    @property
    def live_table(self) -> str:
        """The live table's name as the registry says it now (for logs and status)."""
        return self.registry.get(NAME).live_table

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        if self.projector is not None:
            self.projector.start()

    def stop(self) -> None:
        if self.projector is not None:
            self.projector.stop()
        if self.point is not None:
            self.point.close()

    # --- reading --------------------------------------------------------------------

    def get(self, session_id: str) -> ServedRow | None:
        if self.point is not None:
            return self.point.get(session_id)
        return self.live.get(session_id)

    def list_page(self, query: PageQuery) -> list[ListedRow]:
        return self.live.list_page(query)

    def page_token_key(self) -> bytes:
        return self.live.page_token_key()

    def due_to_stall(self, silent_since: int, limit: int) -> list[str]:
        return self.live.due_to_stall(silent_since, limit)

    def due_to_expire(self, now: int, limit: int) -> list[str]:
        return self.live.due_to_expire(now, limit)
