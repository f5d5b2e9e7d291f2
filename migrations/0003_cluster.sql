-- Scale-out (docs/service.md §9): the nodes sharing this database, and which node runs each
-- pipeline. Plain SQL that SQLite and PostgreSQL both run, like 0001.

-- One row per node that ever joined: its API address (operator config, for forwarding), its
-- last heartbeat (epoch ms; a node is live while it is recent) and whether it is draining
-- (handing its pipelines over and taking no new ones).
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    address       TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    draining      BIGINT NOT NULL DEFAULT 0
);

-- Who runs a pipeline: a lease held by `node` until `expires_at` (epoch ms), renewed by it.
-- `generation` is the fencing token: it increases on every takeover, and every write a node
-- makes for the pipeline names the generation it holds, so a node that lost the pipeline
-- cannot write. The status columns are what the owner last published, for the other nodes.
CREATE TABLE ownership (
    pipeline_id  TEXT PRIMARY KEY REFERENCES pipelines (id) ON DELETE CASCADE,
    node         TEXT NOT NULL,
    generation   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'stopped',
    connected    BIGINT NOT NULL DEFAULT 0,
    restarts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    status_at    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX ownership_node ON ownership (node);
CREATE INDEX ownership_expires ON ownership (expires_at);
