"""A store that goes away while the projector saves a batch: the batch is
tried again later, its rows are not taken for rows the store refused."""

from __future__ import annotations

import logging

import pytest
from projection_support import Workload, make_app

from sessions.projection.projector import Projector
from sessions.projection.row_tables import open_rows
from sessions.store.health import StoreUnavailable


def test_an_unavailable_store_is_not_a_refused_row(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    app = make_app(f"sqlite://{tmp_path}/s.db")
    try:
        Workload(app).open("c")
        view = open_rows(app)
        projector = Projector(app, view)
        save = view.save
        calls = []

        def unavailable(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs)
            raise StoreUnavailable("the event store is unavailable")

        view.save = unavailable  # type: ignore[method-assign]
        caplog.set_level(logging.INFO, "sessions.projection.projector")
        with pytest.raises(StoreUnavailable):
            projector.run_batch()
        assert len(calls) == 1 and "refused" not in calls[0]  # not tried row by row
        assert not [r for r in caplog.records if "refused" in r.getMessage()]

        view.save = save  # type: ignore[method-assign]
        assert projector.catch_up() > 0
        assert view.parked() == []
    finally:
        app.close()
