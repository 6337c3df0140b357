-- One row per session, ready to serve. {table} is the versioned table name.
-- Times are microseconds since the Unix epoch (UTC), the precision of the
-- events, so that comparisons and keyset pages are exact on both backends.
CREATE TABLE IF NOT EXISTS {table} (
    session_id           TEXT    PRIMARY KEY,
    subject_container_id TEXT    NOT NULL,
    session_type         INTEGER NOT NULL,
    status               INTEGER NOT NULL,
    sync_mode            INTEGER NOT NULL,
    agent_id             TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    closed_at            INTEGER,
    last_seen_at         INTEGER NOT NULL,
    version              INTEGER NOT NULL,  -- stream version folded so far
    state                BLOB    NOT NULL,  -- the fold's state, to resume from
    session              BLOB    NOT NULL   -- serialized SynchronizationSession
) WITHOUT ROWID;

-- ListSessions: one container, newest first, ties by session id.
CREATE INDEX IF NOT EXISTS {table}_by_container
    ON {table} (subject_container_id, created_at DESC, session_id DESC);

-- ListSessions filtered on status (FAILED, EXPIRED, ...): the same order
-- within one stored status, so such a page is a short ordered walk too
-- (one branch per stored status a match can have, merged).
CREATE INDEX IF NOT EXISTS {table}_by_container_status
    ON {table} (subject_container_id, status, created_at DESC, session_id DESC);

-- The key that signs ListSessions page tokens: one row, 32 random bytes,
-- written on first use by whichever process lists first, so that every API
-- process on this store accepts the tokens of the others, across restarts
-- and rebuilds ({name}: shared by every build of the read model).
CREATE TABLE IF NOT EXISTS {name}_page_token_key (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB    NOT NULL
);

-- Deadlines: the worker asks for OPENED sessions silent since before a time,
-- and for active sessions past expires_at. Partial indexes hold only active
-- sessions, so the cost follows the number of due sessions, not the total.
CREATE INDEX IF NOT EXISTS {table}_stall_due
    ON {table} (last_seen_at) WHERE status = 1;
CREATE INDEX IF NOT EXISTS {table}_expiry_due
    ON {table} (expires_at) WHERE status IN (1, 2);

-- Events the fold could not apply, parked with their error; the projector
-- goes on, and `sessions projections retry-parked` applies them later.
CREATE TABLE IF NOT EXISTS {table}_parked (
    position  INTEGER  PRIMARY KEY,
    stream    TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    topic     TEXT    NOT NULL,
    state     BLOB    NOT NULL,
    error     TEXT    NOT NULL,
    parked_at INTEGER  NOT NULL
);
