-- Inside schema, PostgreSQL. Times are microseconds since the Unix epoch (BIGINT),
-- ids are UUID strings: the same SQL then runs on SQLite through one code path.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE token_families (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX token_families_user ON token_families(user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES token_families(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE relationships (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE relationship_members (
    relationship_id TEXT NOT NULL REFERENCES relationships(id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    user_id TEXT REFERENCES users(id),
    consent TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (relationship_id, email)
);
CREATE INDEX relationship_members_user ON relationship_members(user_id, relationship_id);
CREATE INDEX relationship_members_email_unattached ON relationship_members(email) WHERE user_id IS NULL;

CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    relationship_id TEXT NOT NULL REFERENCES relationships(id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    invited_by TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX invitations_relationship ON invitations(relationship_id);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    relationship_id TEXT NOT NULL REFERENCES relationships(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    finalized_at BIGINT
);
CREATE INDEX sessions_relationship_newest ON sessions(relationship_id, created_at DESC, id DESC);

CREATE TABLE pokes (
    id TEXT PRIMARY KEY,
    relationship_id TEXT NOT NULL REFERENCES relationships(id) ON DELETE CASCADE,
    from_user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    message TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX pokes_relationship_newest ON pokes(relationship_id, created_at DESC, id DESC);

CREATE TABLE session_events (
    id BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    user_id TEXT,
    kind TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX session_events_session ON session_events(session_id, id);

CREATE TABLE reports (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    body TEXT NOT NULL,
    generated_at BIGINT NOT NULL
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    run_after BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (kind, session_id)
);
CREATE INDEX jobs_ready ON jobs(status, run_after);

CREATE TABLE voiceprints (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    embedding BYTEA NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    quality DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
