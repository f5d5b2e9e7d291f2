-- What the service reads of a pipeline without its definition: the analyzer (canonical URL)
-- and host_id shown in every list, the spool size its tenant's quota sums, and the modules it
-- names (so a module delete finds its users without reading every definition). Written with
-- the definition, from the same checked config.

ALTER TABLE pipelines ADD COLUMN analyzer TEXT NOT NULL DEFAULT '';
ALTER TABLE pipelines ADD COLUMN host_id TEXT NOT NULL DEFAULT '';
ALTER TABLE pipelines ADD COLUMN spool_bytes BIGINT NOT NULL DEFAULT 0;
-- A tenant's pipelines in list order, read from the index alone.
CREATE INDEX pipelines_tenant_list ON pipelines (tenant_id, created_at, id);

CREATE TABLE pipeline_modules (
    pipeline_id  TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    stage        TEXT NOT NULL CHECK (stage IN ('transform', 'mangle')),
    digest       TEXT NOT NULL,
    PRIMARY KEY (pipeline_id, stage)
);
CREATE INDEX pipeline_modules_digest ON pipeline_modules (tenant_id, digest);
