"""Store URLs -> eventsourcing infrastructure settings.

  sqlite:///path/file.db              an SQLite file (created with its folder;
                                      sqlite:///./rel.db is relative)
  postgresql://user:pw@host:port/db   PostgreSQL (libpq URL; ?pool_size=N)
  memory://                           a throwaway in-memory SQLite database
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def default_store_url() -> str:
    """An SQLite file in the working directory's .sessions/ folder."""
    return f"sqlite://{(Path.cwd() / '.sessions' / 'sessions.db').as_posix()}"


class StoreURLError(ValueError):
    pass


@dataclass(frozen=True)
class StoreSettings:
    backend: str  # "sqlite" or "postgresql"
    env: dict[str, str] = field(repr=False)
    description: str  # safe to log: no password

    def connect_postgres(self, **options: Any) -> Any:
        """A connection of its own (outside the pool) to the PostgreSQL store,
        for advisory locks and LISTEN."""
        import psycopg

        env = self.env
        return psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
            **options,
        )


_sqlite = {
    "PERSISTENCE_MODULE": "eventsourcing.sqlite",
    # The library's recorders with group commit (see store.recorders).
    "APPLICATION_RECORDER_TOPIC": "sessions.store.recorders:SQLiteSessionsRecorder",
}


def parse_store_url(url: str) -> StoreSettings:
    # Aggregates stay cached between commands, and a load does not ask the
    # store for newer events first: commands rely on optimistic concurrency
    # to notice other processes' writes (see store.application).
    # Commands decide on copies of the cached aggregates: a save that fails
    # leaves the cached one as it was.
    common = {
        "ORIGINATOR_ID_TYPE": "text",
        "AGGREGATE_CACHE_MAXSIZE": "10000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "y",
    }
    if url == "memory://" or url.startswith("memory://"):
        # Shared cache, so that every connection of the pool sees one database.
        name = f"file:sessions-{uuid.uuid4().hex}?mode=memory&cache=shared"
        return StoreSettings(
            "sqlite",
            {**common, **_sqlite, "SQLITE_DBNAME": name},
            "memory:// (in-memory SQLite, discarded on exit)",
        )
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path.startswith("/./") or path.startswith("/../"):
            path = path[1:]
        if not path or path == "/":
            raise StoreURLError(f"store URL {url!r} names no file: use sqlite:///path/file.db")
        file = Path(unquote(path))
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreURLError(f"cannot create the folder of {file}: {e}") from e
        return StoreSettings(
            "sqlite",
            {
                **common,
                **_sqlite,
                "SQLITE_DBNAME": str(file),
                "SQLITE_LOCK_TIMEOUT": "10",
            },
            f"sqlite://{file}" if file.is_absolute() else f"sqlite:///./{file}",
        )
    if url.startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise StoreURLError(f"store URL {redact_url(url)!r} is malformed: {e}") from None
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise StoreURLError(f"store URL {redact_url(url)!r} names no database")
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"pool_size", "max_overflow"})
        if unknown:
            raise StoreURLError(
                f"store URL parameter(s) {', '.join(unknown)} not supported "
                "(only pool_size and max_overflow; put the password before the @)"
            )
        env = {
            **common,
            # The library's factory, with a pool that rides out an outage.
            "PERSISTENCE_MODULE": "sessions.store.postgres:SessionsPostgresFactory",
            "APPLICATION_RECORDER_TOPIC": "sessions.store.recorders:PostgresSessionsRecorder",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": unquote(parts.hostname or "") or "/var/run/postgresql",
            "POSTGRES_PORT": str(port or 5432),
            "POSTGRES_USER": unquote(parts.username or "") or getpass.getuser(),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_POOL_SIZE": query.get("pool_size", ["8"])[0],
            "POSTGRES_MAX_OVERFLOW": query.get("max_overflow", ["16"])[0],
            # The library's insert through a database function skips the
            # recorder step that writes the read model's rows with the events.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
        return StoreSettings("postgresql", env, redact_url(url))
    raise StoreURLError(
        f"unsupported store URL {redact_url(url)!r}: expected sqlite:///path/file.db, "
        "postgresql://user@host:port/dbname or memory://"
    )


# Why a setting may not come from the environment, where "the store URL
# decides it" is not reason enough.
_PINNED_BECAUSE = {
    "POSTGRES_ENABLE_DB_FUNCTIONS": "inserting events through a database function skips "
    "writing the read model's rows with them",
    "APPLICATION_RECORDER_TOPIC": "another recorder would not write the read model's rows "
    "with the events",
    "PERSISTENCE_MODULE": "another persistence module would not write the read model's rows "
    "with the events (nor ride out an outage of the store)",
}


def pin_settings(
    library_env: MutableMapping[str, str],
    settings: StoreSettings,
    app_name: str,
    environ: Mapping[str, str],
) -> list[str]:
    """Make every setting of ``settings.env`` the one the library reads.

    The library merges the process environment (``environ``) into its
    settings and looks each one up under the application's name first
    (SESSIONS_POSTGRES_HOST before POSTGRES_HOST), so a variable could
    otherwise change what the store URL decided: where the store is, or the
    write path (POSTGRES_ENABLE_DB_FUNCTIONS=y inserts events without the
    read model's rows). Returns one line per variable overridden (values of
    passwords hidden)."""
    prefixed = f"{app_name.upper()}_"
    ignored = []
    for key, value in settings.env.items():
        for variable in (prefixed + key, key):
            given = environ.get(variable)
            if given is None or _same_setting(given, value):
                continue
            shown = "***" if "PASSWORD" in key else given
            because = _PINNED_BECAUSE.get(key, "the store URL decides it")
            ignored.append(f"{variable}={shown} from the environment is overridden with "
                           f"{key}={'***' if 'PASSWORD' in key else value}: {because}")
        library_env.pop(prefixed + key, None)
        library_env[key] = value
    return ignored


def _same_setting(given: str, value: str) -> bool:
    if given == value:
        return True
    from eventsourcing.utils import strtobool

    try:
        return strtobool(given) == strtobool(value)
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to log."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    return f"{scheme}{sep}{netloc}{slash}{tail}"
