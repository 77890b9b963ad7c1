-- Burst corrections (issue 12 point 4), as migrations/0015_quota_corrections.sql.
CREATE TABLE quota_corrections (
    bucket           TEXT NOT NULL PRIMARY KEY,
    configured_burst DOUBLE PRECISION NOT NULL,
    burst            DOUBLE PRECISION NOT NULL,
    corrections      BIGINT NOT NULL,
    first_at         BIGINT NOT NULL,
    last_at          BIGINT NOT NULL,
    detail           TEXT
);
