"""While PostgreSQL cannot be reached, a scrape still answers: the store is
down (sessions_store_up 0) and the figures read from it are left out."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.metrics.metrics_support import Scrape
from tests.metrics.test_serve import Served
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until

FROM_THE_STORE = (
    "sessions_log_head_position",
    "sessions_projection_position",
    "sessions_projection_lag_events",
    "sessions_projection_lag_seconds",
    "sessions_parked_events",
)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_scrape_during_an_outage_says_the_store_is_down(postgres_url: str) -> None:
    direct = urlsplit(postgres_url)
    proxy = TcpProxy((direct.hostname or "127.0.0.1", direct.port or 5432))
    proxy.up()
    served = Served(f"postgresql://{direct.username}@127.0.0.1:{proxy.port}{direct.path}")
    try:
        up = served.caught_up()
        assert up.value("sessions_store_up") == 1

        seen: list[Scrape] = []

        def store_up(expected: float) -> bool:
            seen[:] = [served.scrape()]
            return seen[0].value("sessions_store_up") == expected

        proxy.down()
        assert wait_until(lambda: store_up(0), 30, 0.1)
        down = seen[0]
        assert not any(down.has(name) for name in FROM_THE_STORE)
        assert down.value("sessions_build_info") == 1  # the rest is still served

        proxy.up()
        assert wait_until(lambda: store_up(1), 30, 0.1)
        assert all(seen[0].has(name) for name in FROM_THE_STORE)
    finally:
        served.close()
        proxy.close()
