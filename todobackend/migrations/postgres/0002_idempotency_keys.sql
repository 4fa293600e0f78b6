-- additive
-- 0002_idempotency_keys.sql on PostgreSQL, with its types (BOOLEAN and
-- BIGINT as in todos); the rules are in that file.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT    PRIMARY KEY,
    todo_id         BIGINT  NOT NULL,
    title           TEXT    NOT NULL,
    completed       BOOLEAN NOT NULL,
    "order"         BIGINT,
    created_at      BIGINT  NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
