"""Store URLs -> eventsourcing infrastructure settings.

  sqlite:///path/file.db              an SQLite file (created with its folder;
                                      sqlite:///./rel.db is relative)
  postgresql://user:pw@host:port/db   PostgreSQL (libpq URL: every libpq connection
                                      parameter passes through, e.g. ?sslmode=verify-full;
                                      ?pool_size=N&max_overflow=N are the pool's)
  memory://                           a throwaway in-memory SQLite database
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit


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
    # libpq connection parameters from the URL's query (sslmode, ...), given
    # to every connection as they are.
    libpq: dict[str, str] = field(default_factory=dict, repr=False)

    def connect_postgres(self, **options: Any) -> Any:
        """A connection of its own (outside the pool) to the PostgreSQL store,
        for advisory locks and LISTEN."""
        import psycopg

        env = self.env
        parameters: dict[str, Any] = {
            "dbname": env["POSTGRES_DBNAME"],
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"] or None,
            "connect_timeout": int(env["POSTGRES_CONNECT_TIMEOUT"]),
            **options,
            **self.libpq,  # the URL's own choice wins (connect_timeout, application_name)
        }
        return psycopg.connect(**parameters)


# The connection pool's own parameters; every other one must be libpq's.
POOL_PARAMETERS = {"pool_size": "POSTGRES_POOL_SIZE", "max_overflow": "POSTGRES_MAX_OVERFLOW"}
# libpq parameters that the URL's other parts give too: the query's wins, as in libpq.
_URL_PARTS = ("host", "port", "user", "password", "dbname")
# Query parameters whose values are never shown.
SECRET_PARAMETERS = ("password", "sslpassword")
# The library's setting that carries the libpq parameters to the factory's pool
# (see store.postgres), as a libpq conninfo string.
LIBPQ_SETTING = "POSTGRES_LIBPQ_PARAMETERS"


def libpq_keywords() -> frozenset[str]:
    """Every connection parameter the installed libpq knows."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _postgres_query(query: str) -> tuple[dict[str, str], dict[str, str]]:
    """(pool parameters, libpq parameters) of a URL's query."""
    given = dict(parse_qsl(query, keep_blank_values=True))  # a repeated one: the last, as libpq
    unknown = sorted(set(given) - set(POOL_PARAMETERS) - libpq_keywords())
    if unknown:
        raise StoreURLError(
            f"store URL parameter(s) {', '.join(unknown)} not supported: neither a libpq "
            f"connection parameter nor the pool's ({', '.join(POOL_PARAMETERS)})"
        )
    pool = {name: given.pop(name) for name in POOL_PARAMETERS if name in given}
    for name, value in pool.items():
        if not value.isdigit() or (name == "pool_size" and int(value) < 1):
            raise StoreURLError(f"store URL parameter {name}={value!r} is not a whole number"
                                + (" of at least 1" if name == "pool_size" else ""))
    return pool, given


_sqlite = {
    "PERSISTENCE_MODULE": "eventsourcing.sqlite",
    # The library's recorders with group commit (see store.recorders).
    "APPLICATION_RECORDER_TOPIC": "sessions.store.recorders:SQLiteSessionsRecorder",
}


# Aggregates stay cached between commands, and a load does not ask the
# store for newer events first: commands rely on optimistic concurrency to
# notice other processes' writes (see store.application). Commands decide on
# copies of the cached aggregates: a save that fails leaves the cached one as
# it was.
_COMMON = {
    "ORIGINATOR_ID_TYPE": "text",
    "AGGREGATE_CACHE_MAXSIZE": "10000",
    "AGGREGATE_CACHE_FASTFORWARD": "n",
    "DEEPCOPY_FROM_AGGREGATE_CACHE": "y",
    # Events are stored as plain JSON: the fold, the history and the chain
    # check read that text as the codec wrote it (store.codec).
    "CIPHER_TOPIC": "",
    "COMPRESSOR_TOPIC": "",
}


def parse_store_url(url: str) -> StoreSettings:
    if url.startswith("memory://"):
        return _memory()
    if url.startswith("sqlite://"):
        return _sqlite_file(url)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres(url)
    raise StoreURLError(
        f"unsupported store URL {redact_url(url)!r}: expected sqlite:///path/file.db, "
        "postgresql://user@host:port/dbname or memory://"
    )


def _memory() -> StoreSettings:
    # Shared cache, so that every connection of the pool sees one database.
    name = f"file:sessions-{uuid.uuid4().hex}?mode=memory&cache=shared"
    return StoreSettings(
        "sqlite",
        {**_COMMON, **_sqlite, "SQLITE_DBNAME": name},
        "memory:// (in-memory SQLite, discarded on exit)",
    )


def _sqlite_file(url: str) -> StoreSettings:
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
        {**_COMMON, **_sqlite, "SQLITE_DBNAME": str(file), "SQLITE_LOCK_TIMEOUT": "10"},
        f"sqlite://{file}" if file.is_absolute() else f"sqlite:///./{file}",
    )


def _postgres(url: str) -> StoreSettings:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise StoreURLError(f"store URL {redact_url(url)!r} is malformed: {e}") from None
    pool, libpq = _postgres_query(parts.query)
    given = {name: libpq.pop(name) for name in _URL_PARTS if name in libpq}
    dbname = given.get("dbname") or unquote(parts.path.lstrip("/"))
    if not dbname:
        raise StoreURLError(f"store URL {redact_url(url)!r} names no database")
    env = {
        **_COMMON,
        # The library's factory, with a pool that rides out an outage.
        "PERSISTENCE_MODULE": "sessions.store.postgres:SessionsPostgresFactory",
        "APPLICATION_RECORDER_TOPIC": "sessions.store.recorders:PostgresSessionsRecorder",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": given.get("host") or unquote(parts.hostname or "") or "/var/run/postgresql",
        "POSTGRES_PORT": given.get("port") or str(port or 5432),
        "POSTGRES_USER": given.get("user") or unquote(parts.username or "") or getpass.getuser(),
        "POSTGRES_PASSWORD": given.get("password", unquote(parts.password or "")),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": pool.get("pool_size", "8"),
        "POSTGRES_MAX_OVERFLOW": pool.get("max_overflow", "16"),
        LIBPQ_SETTING: _conninfo(libpq),
        # The library's insert through a database function skips the
        # recorder step that writes the read model's rows with the events.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }
    return StoreSettings("postgresql", env, redact_url(url), libpq)


# Why a setting may not come from the environment, where "the store URL
# decides it" is not reason enough.
_PINNED_BECAUSE = {
    "POSTGRES_ENABLE_DB_FUNCTIONS": "inserting events through a database function skips "
    "writing the read model's rows with them",
    "APPLICATION_RECORDER_TOPIC": "another recorder would not write the read model's rows "
    "with the events",
    "PERSISTENCE_MODULE": "another persistence module would not write the read model's rows "
    "with the events (nor ride out an outage of the store)",
    "CIPHER_TOPIC": "events are stored as plain JSON, which the projector and the audit read as such",
    "COMPRESSOR_TOPIC": "events are stored as plain JSON, which the projector and the audit read as such",
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
            hidden = "PASSWORD" in key or key == LIBPQ_SETTING  # (libpq parameters may hold sslpassword)
            shown = "***" if hidden else given
            because = _PINNED_BECAUSE.get(key, "the store URL decides it")
            ignored.append(f"{variable}={shown} from the environment is overridden with "
                           f"{key}={'***' if hidden else value}: {because}")
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


def _conninfo(parameters: Mapping[str, str]) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo("", **parameters) if parameters else ""


def redact_url(url: str) -> str:
    """The URL with any password (before the @, or a query's password or
    sslpassword) replaced by ***, safe to log."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    path, question, query = tail.partition("?")
    if query:
        query = "&".join(
            f"{quote(name)}=***" if name in SECRET_PARAMETERS else f"{quote(name)}={quote(value)}"
            for name, value in parse_qsl(query, keep_blank_values=True)
        )
    return f"{scheme}{sep}{netloc}{slash}{path}{question}{query}"
