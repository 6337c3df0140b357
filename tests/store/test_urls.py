"""Store URLs -> infrastructure settings (parse_store_url)."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from sessions.store.urls import StoreURLError, default_store_url, parse_store_url

# --- sqlite ------------------------------------------------------------------------


def test_sqlite_absolute_path_creates_the_folder(tmp_path):
    file = tmp_path / "a" / "b" / "s.db"
    url = f"sqlite://{file}"
    assert url.startswith("sqlite:///")
    settings = parse_store_url(url)
    assert settings.backend == "sqlite"
    assert settings.env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert settings.env["SQLITE_DBNAME"] == str(file)
    assert settings.env["ORIGINATOR_ID_TYPE"] == "text"
    assert int(settings.env["SQLITE_LOCK_TIMEOUT"]) > 0
    assert str(file) in settings.description
    assert file.parent.is_dir()
    assert not file.exists()  # the folder is made; the file is the store's business


def test_sqlite_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = parse_store_url("sqlite:///./data/rel.db")
    assert settings.env["SQLITE_DBNAME"] == str(Path("data") / "rel.db")
    assert not Path(settings.env["SQLITE_DBNAME"]).is_absolute()
    assert (tmp_path / "data").is_dir()
    assert settings.description.endswith("data/rel.db")


def test_sqlite_parent_relative_path(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    settings = parse_store_url("sqlite:///../up/rel.db")
    assert settings.env["SQLITE_DBNAME"] == str(Path("..") / "up" / "rel.db")
    assert (tmp_path / "up").is_dir()


def test_sqlite_path_is_percent_decoded(tmp_path):
    settings = parse_store_url(f"sqlite://{tmp_path}/my%20dir/s.db")
    assert settings.env["SQLITE_DBNAME"] == str(tmp_path / "my dir" / "s.db")
    assert (tmp_path / "my dir").is_dir()


@pytest.mark.parametrize(
    "spelled",
    ["absolute", "relative"],
)
def test_sqlite_description_names_the_same_file(tmp_path, monkeypatch, spelled):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite://{tmp_path}/s.db" if spelled == "absolute" else "sqlite:///./sub/s.db"
    settings = parse_store_url(url)
    again = parse_store_url(settings.description)
    assert again.env["SQLITE_DBNAME"] == settings.env["SQLITE_DBNAME"]
    if spelled == "absolute":
        assert settings.description == url


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_sqlite_without_a_file_is_refused(url):
    with pytest.raises(StoreURLError, match="names no file"):
        parse_store_url(url)


def test_sqlite_folder_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreURLError, match="cannot create"):
        parse_store_url(f"sqlite://{blocker}/sub/s.db")


def test_default_store_url_is_an_sqlite_file_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = default_store_url()
    settings = parse_store_url(url)
    assert settings.backend == "sqlite"
    assert Path(settings.env["SQLITE_DBNAME"]) == tmp_path / ".sessions" / "sessions.db"


# --- memory ------------------------------------------------------------------------


def test_memory_is_a_private_in_memory_sqlite_database():
    a = parse_store_url("memory://")
    b = parse_store_url("memory://")
    assert a.backend == "sqlite"
    assert a.env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert "mode=memory" in a.env["SQLITE_DBNAME"]
    assert a.env["SQLITE_DBNAME"] != b.env["SQLITE_DBNAME"]  # each its own database
    assert a.description.startswith("memory://")


# --- postgresql ----------------------------------------------------------------------


def test_postgresql_url_with_everything():
    settings = parse_store_url(
        "postgresql://sync:s3cret@db.example.com:6432/sessions?pool_size=3&max_overflow=4"
    )
    assert settings.backend == "postgresql"
    env = settings.env
    assert env["PERSISTENCE_MODULE"] == "sessions.store.postgres:SessionsPostgresFactory"
    assert env["POSTGRES_DBNAME"] == "sessions"
    assert env["POSTGRES_HOST"] == "db.example.com"
    assert env["POSTGRES_PORT"] == "6432"
    assert env["POSTGRES_USER"] == "sync"
    assert env["POSTGRES_PASSWORD"] == "s3cret"
    assert env["POSTGRES_POOL_SIZE"] == "3"
    assert env["POSTGRES_MAX_OVERFLOW"] == "4"
    assert env["ORIGINATOR_ID_TYPE"] == "text"


def test_postgresql_password_is_redacted_in_the_description():
    settings = parse_store_url("postgresql://sync:s3cret@db.example.com:6432/sessions?pool_size=2")
    assert "s3cret" not in settings.description
    assert settings.description == "postgresql://sync:***@db.example.com:6432/sessions?pool_size=2"
    assert "s3cret" not in repr(settings)  # env is kept out of the repr


def test_postgresql_percent_encoded_password_is_decoded_and_redacted():
    settings = parse_store_url("postgresql://sync:p%40ss%3Aw0rd@host/db")
    assert settings.env["POSTGRES_PASSWORD"] == "p@ss:w0rd"
    assert "p%40ss" not in settings.description
    assert "p@ss" not in settings.description
    assert ":***@" in settings.description


def test_postgresql_defaults():
    settings = parse_store_url("postgresql://localhost/sessions")
    env = settings.env
    assert env["POSTGRES_HOST"] == "localhost"
    assert env["POSTGRES_PORT"] == "5432"
    assert env["POSTGRES_USER"] == getpass.getuser()
    assert env["POSTGRES_PASSWORD"] == ""
    assert "POSTGRES_SCHEMA" not in env
    assert settings.description == "postgresql://localhost/sessions"


def test_postgresql_without_a_host_uses_the_local_socket():
    settings = parse_store_url("postgresql:///sessions")
    assert settings.env["POSTGRES_HOST"] == "/var/run/postgresql"
    assert settings.env["POSTGRES_DBNAME"] == "sessions"


def test_postgres_scheme_alias():
    settings = parse_store_url("postgres://u:pw@h:5433/db")
    assert settings.backend == "postgresql"
    assert settings.env["POSTGRES_PORT"] == "5433"
    assert "pw@" not in settings.description


@pytest.mark.parametrize("url", ["postgresql://host", "postgresql://u:pw@host:5432/"])
def test_postgresql_without_a_database_is_refused(url):
    with pytest.raises(StoreURLError, match="names no database"):
        parse_store_url(url)


# --- everything else --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["", "mysql://u@h/db", "/var/lib/sessions.db", "sqlite:relative.db", "file:///x.db", "MEMORY"],
)
def test_unsupported_urls_are_refused(url):
    with pytest.raises(StoreURLError, match="unsupported store URL"):
        parse_store_url(url)


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@h:notaport/db", "postgresql://u@h:99999/db", "postgresql://u@[::1/db"],
)
def test_malformed_postgresql_urls_are_refused_as_store_url_errors(url):
    with pytest.raises(StoreURLError):
        parse_store_url(url)


def test_a_password_given_as_a_query_parameter_is_used_and_never_shown():
    settings = parse_store_url("postgresql://u@h/db?password=hunter2&sslpassword=keypass")
    assert settings.env["POSTGRES_PASSWORD"] == "hunter2"
    assert settings.libpq == {"sslpassword": "keypass"}
    assert "hunter2" not in settings.description and "keypass" not in settings.description
    assert settings.description == "postgresql://u@h/db?password=***&sslpassword=***"


def test_libpq_parameters_pass_through_unchanged():
    settings = parse_store_url(
        "postgresql://u@db.example.com/db?sslmode=verify-full&sslrootcert=/etc/ca%20s.pem"
        "&connect_timeout=3&application_name=sessions-a&target_session_attrs=read-write"
        "&options=-c%20statement_timeout%3D5s&keepalives=1&keepalives_idle=30&pool_size=2"
    )
    assert settings.libpq == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca s.pem",
        "connect_timeout": "3",
        "application_name": "sessions-a",
        "target_session_attrs": "read-write",
        "options": "-c statement_timeout=5s",
        "keepalives": "1",
        "keepalives_idle": "30",
    }
    assert settings.env["POSTGRES_POOL_SIZE"] == "2"  # the pool's own: not libpq's


def test_the_query_may_name_the_host_as_libpq_allows():
    settings = parse_store_url("postgresql:///sessions?host=/run/pg&port=6543&user=svc")
    assert settings.env["POSTGRES_HOST"] == "/run/pg"
    assert settings.env["POSTGRES_PORT"] == "6543"
    assert settings.env["POSTGRES_USER"] == "svc"
    assert settings.libpq == {}


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sslmod=require", "sslmod not supported: neither a libpq connection parameter"),
        ("pool_size=many", "pool_size='many' is not a whole number"),
        ("pool_size=0", "pool_size='0' is not a whole number of at least 1"),
        ("max_overflow=-1", "max_overflow='-1' is not a whole number"),
    ],
)
def test_unknown_parameters_and_bad_pool_sizes_are_refused(query, says):
    with pytest.raises(StoreURLError, match=says):
        parse_store_url(f"postgresql://u@h/db?{query}")
