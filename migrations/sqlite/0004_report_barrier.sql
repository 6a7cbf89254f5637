-- The report's barrier at finalize. Each WebSocket a gateway holds has a row from its join to
-- its end, with the frames and audio segments the gateway published for it; each stored event
-- row says how many frames and segment marks it packs. The report job waits until every socket
-- of the session is closed and, per member, what was recorded reaches what was published.
CREATE TABLE session_sockets (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    frames BIGINT NOT NULL DEFAULT 0,
    segments BIGINT NOT NULL DEFAULT 0,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT
);
CREATE INDEX session_sockets_session ON session_sockets(session_id);

ALTER TABLE session_events ADD COLUMN frames INTEGER NOT NULL DEFAULT 0;
ALTER TABLE session_events ADD COLUMN segments INTEGER NOT NULL DEFAULT 0;

-- A report job that failed after its retries leaves the session `failed`, saying why.
ALTER TABLE sessions ADD COLUMN failure_reason TEXT;

-- The database job queue's runner of a running job and its last sign of life: a job whose
-- runner stopped beating is taken back at once instead of after the lease.
ALTER TABLE jobs ADD COLUMN runner_id TEXT;
ALTER TABLE jobs ADD COLUMN heartbeat_at BIGINT;
