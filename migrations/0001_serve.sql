-- sluice serve: tenants, tokens, pipelines, host_id leases, wasm modules, per-pipeline account.
--
-- Plain SQL that PostgreSQL also runs: TEXT ids, BIGINT epoch milliseconds, no AUTOINCREMENT,
-- no SQLite-only types. Foreign keys cascade from a tenant to everything it owns.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- API tokens: only the SHA-256 of the token is kept (tokens are 256-bit random values).
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant_id);

-- A pipeline's definition is the upstream YAML text (a JSON body is stored converted to YAML).
CREATE TABLE pipelines (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    definition     TEXT NOT NULL,
    desired_state  TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX pipelines_tenant ON pipelines (tenant_id);

-- host_id leases (design §3): one holder per (analyzer URL, host_id). The primary key is what
-- makes taking a lease atomic; `node` and `expires_at` let nodes sharing one database reclaim
-- the leases of a node that died.
CREATE TABLE leases (
    analyzer     TEXT NOT NULL,
    host_id      TEXT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    pipeline_id  TEXT NOT NULL UNIQUE REFERENCES pipelines (id) ON DELETE CASCADE,
    node         TEXT NOT NULL,
    acquired_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (analyzer, host_id)
);

-- Compiled wasm components uploaded by tenants (design §6); id = sha256 of the bytes.
CREATE TABLE modules (
    digest      TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    size        BIGINT NOT NULL,
    world       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, digest)
);

-- The account stage's counters per pipeline, saved periodically and at stop, so they survive
-- restarts. `dropped` is a JSON object {reason: count}.
CREATE TABLE account (
    pipeline_id      TEXT PRIMARY KEY REFERENCES pipelines (id) ON DELETE CASCADE,
    flows_received   BIGINT NOT NULL DEFAULT 0,
    records_written  BIGINT NOT NULL DEFAULT 0,
    objects_written  BIGINT NOT NULL DEFAULT 0,
    bytes_written    BIGINT NOT NULL DEFAULT 0,
    write_errors     BIGINT NOT NULL DEFAULT 0,
    dropped          TEXT NOT NULL DEFAULT '{}',
    updated_at       BIGINT NOT NULL
);
