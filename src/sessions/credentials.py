"""The credentials file: principals, their roles, and hashes of their tokens.

Format (JSON, one object; written by `sessions auth`, readable by hand)::

    {
      "format": "sessions-credentials/1",
      "credentials": [
        {
          "name": "ad-connector-1",          # unique among live credentials
          "role": "agent",                   # agent | reader | auditor | admin
          "agent_ids": ["agent-1"],          # agents only: the ids it acts for
          "token_id": "3f9c2a7b1d04e5a6",    # public part of the token: the lookup key
          "token_sha256": "<64 hex>",        # SHA-256 of the whole token
          "created_at": "2025-01-01T00:00:00Z",
          "revoked_at": null                 # a time once revoked; kept for the record
        }
      ]
    }

A token is ``sst_<token_id>_<secret>``: 8 random bytes of id (16 hex) and 32
random bytes of secret (43 base64url characters). Only its SHA-256 is stored:
with 256 bits of entropy a fast hash is as good as a slow one, and a lookup is
one dictionary access by ``token_id`` plus one constant-time comparison of
digests (``hmac.compare_digest``). The token itself is printed once, when it is
made, and is never written or logged anywhere.

Writes take an exclusive lock on ``<file>.lock``, write a temporary file in the
same folder (mode 0600), fsync it and rename it over the old one, so a reader
(a server reloading on SIGHUP) sees the old file or the new one, never half.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

FORMAT = "sessions-credentials/1"
TOKEN_PREFIX = "sst_"
ROLES = ("agent", "reader", "auditor", "admin")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
AGENT_ID_MAX = 50  # the API's own limit on agent_id
_TOKEN_PATTERN = re.compile(r"^sst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_DUMMY_DIGEST = hashlib.sha256(b"no such credential").hexdigest()


class CredentialsError(ValueError):
    """The credentials file is missing, unreadable or invalid, or a change to
    it is refused (duplicate name, bad role, ...)."""


@dataclass(frozen=True)
class Credential:
    name: str
    role: str
    agent_ids: tuple[str, ...]
    token_id: str
    token_sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def principal(self) -> str:
        """What every event and operation records for this caller."""
        return f"{self.role}:{self.name}"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "agent_ids": list(self.agent_ids),
            "token_id": self.token_id,
            "token_sha256": self.token_sha256,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }

    @classmethod
    def from_json(cls, raw: object, where: str) -> Credential:
        if not isinstance(raw, dict):
            raise CredentialsError(f"{where}: expected an object")
        try:
            credential = cls(
                name=_str(raw, "name", where),
                role=_str(raw, "role", where),
                agent_ids=tuple(_str_list(raw.get("agent_ids", []), f"{where}.agent_ids")),
                token_id=_str(raw, "token_id", where),
                token_sha256=_str(raw, "token_sha256", where),
                created_at=_str(raw, "created_at", where),
                revoked_at=raw.get("revoked_at"),
            )
        except KeyError as e:
            raise CredentialsError(f"{where}: missing {e.args[0]!r}") from None
        credential.check(where)
        return credential

    def check(self, where: str) -> None:
        if not NAME_PATTERN.match(self.name):
            raise CredentialsError(
                f"{where}: name {self.name!r} must be 1-64 of letters, digits, '.', '_', '@', '-'"
            )
        if self.role not in ROLES:
            raise CredentialsError(f"{where}: role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.role == "agent" and not self.agent_ids:
            raise CredentialsError(f"{where}: an agent credential needs at least one agent id")
        if self.role != "agent" and self.agent_ids:
            raise CredentialsError(f"{where}: only agent credentials are bound to agent ids")
        for agent_id in self.agent_ids:
            if not agent_id or len(agent_id) > AGENT_ID_MAX:
                raise CredentialsError(f"{where}: agent id {agent_id!r} must be 1-{AGENT_ID_MAX} characters")
        if not re.fullmatch(r"[0-9a-f]{16}", self.token_id):
            raise CredentialsError(f"{where}: token_id must be 16 hex digits")
        if not re.fullmatch(r"[0-9a-f]{64}", self.token_sha256):
            raise CredentialsError(f"{where}: token_sha256 must be 64 hex digits")
        if self.revoked_at is not None and not isinstance(self.revoked_at, str):
            raise CredentialsError(f"{where}: revoked_at must be a time or null")


def _str(raw: dict, key: str, where: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise CredentialsError(f"{where}.{key}: expected a string")
    return value


def _str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CredentialsError(f"{where}: expected a list of strings")
    return value


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and its id."""
    token_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{TOKEN_PREFIX}{token_id}_{secret}", token_id


@dataclass(frozen=True)
class Lookup:
    """The result of checking a presented token: the credential, or why not."""

    credential: Credential | None
    reason: str


class CredentialSet:
    """The credentials as loaded from one version of the file (immutable)."""

    def __init__(self, credentials: Sequence[Credential], source: str = ""):
        self.credentials = tuple(credentials)
        self.source = source
        self._by_token_id = {c.token_id: c for c in self.credentials}

    @property
    def live(self) -> list[Credential]:
        return [c for c in self.credentials if not c.revoked]

    def authenticate(self, token: str) -> Lookup:
        """Find the credential of a presented token. The digest comparison is
        constant-time, and runs (against a dummy) also for unknown ids."""
        match = _TOKEN_PATTERN.match(token)
        candidate = self._by_token_id.get(match.group(1)) if match else None
        expected = candidate.token_sha256 if candidate else _DUMMY_DIGEST
        equal = hmac.compare_digest(token_digest(token), expected)
        if candidate is None or not equal:
            return Lookup(None, "unknown token")
        if candidate.revoked:
            return Lookup(None, f"revoked credential {candidate.principal!r}")
        return Lookup(candidate, "")

    def describe(self) -> str:
        revoked = len(self.credentials) - len(self.live)
        return f"{len(self.live)} live credential(s), {revoked} revoked"


def load(path: str | os.PathLike[str]) -> CredentialSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(
            f"credentials file {path} does not exist; create it with "
            f"`sessions auth add-token --auth-file {path} --role admin --name NAME`"
        ) from None
    except OSError as e:
        raise CredentialsError(f"cannot read credentials file {path}: {e.strerror}") from None
    return CredentialSet(parse(text, str(path)), str(path))


def parse(text: str, where: str = "credentials") -> list[Credential]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise CredentialsError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CredentialsError(f"{where}: not a credentials file (expected \"format\": \"{FORMAT}\")")
    entries = raw.get("credentials", [])
    if not isinstance(entries, list):
        raise CredentialsError(f"{where}: \"credentials\" must be a list")
    credentials = [Credential.from_json(e, f"{where}: credentials[{i}]") for i, e in enumerate(entries)]
    seen_ids: set[str] = set()
    live_names: set[str] = set()
    for c in credentials:
        if c.token_id in seen_ids:
            raise CredentialsError(f"{where}: token_id {c.token_id} appears twice")
        seen_ids.add(c.token_id)
        if not c.revoked:
            if c.name in live_names:
                raise CredentialsError(f"{where}: two live credentials are named {c.name!r}")
            live_names.add(c.name)
    return credentials


def render(credentials: Sequence[Credential]) -> str:
    body = {"format": FORMAT, "credentials": [c.to_json() for c in credentials]}
    return json.dumps(body, indent=2) + "\n"


# --- changes (the `sessions auth` commands) ------------------------------------------


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@contextmanager
def _locked(path: Path) -> Iterator[list[Credential]]:
    """Read the file under an exclusive lock; the caller changes the list and
    it is written back atomically when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        credentials = load(path).credentials if path.exists() else ()
        changed = list(credentials)
        yield changed
        if changed != list(credentials):
            write_atomically(path, render(changed))


def write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def add_token(
    path: str | os.PathLike[str], role: str, agent_ids: Sequence[str] = (), name: str | None = None
) -> tuple[str, Credential]:
    """Make a token, store its hash; return (token, credential). The token is
    not kept anywhere: the caller shows it once."""
    path = Path(path)
    agent_ids = tuple(dict.fromkeys(agent_ids))  # de-duplicated, order kept
    token, token_id = new_token()
    with _locked(path) as credentials:
        live_names = {c.name for c in credentials if not c.revoked}
        if name is None:
            first_agent = agent_ids[0] if role == "agent" and agent_ids else None
            name = first_agent if first_agent and first_agent not in live_names else f"{role}-{token_id[:8]}"
        if name in live_names:
            raise CredentialsError(f"a live credential is already named {name!r}; revoke it first or pick another name")
        credential = Credential(
            name=name,
            role=role,
            agent_ids=agent_ids,
            token_id=token_id,
            token_sha256=token_digest(token),
            created_at=_now(),
        )
        credential.check("new credential")
        credentials.append(credential)
    return token, credential


def revoke(path: str | os.PathLike[str], name: str) -> Credential:
    """Mark the live credential of that name revoked (kept, for the record)."""
    path = Path(path)
    if not path.exists():
        raise CredentialsError(f"credentials file {path} does not exist")
    with _locked(path) as credentials:
        for i, c in enumerate(credentials):
            if c.name == name and not c.revoked:
                credentials[i] = replace(c, revoked_at=_now())
                return credentials[i]
        raise CredentialsError(f"no live credential is named {name!r}")
