-- additive
-- POST /todos with an Idempotency-Key header: the key, recorded in the
-- transaction that inserts the todo (the PRIMARY KEY lets one POST per key
-- store a todo), with that todo as it was created, which a repeated POST
-- answers again. No foreign key to todos: a key outlives a deleted todo (its
-- replay is the original answer), and `move-to-postgres` copies tables in
-- name order. Keys older than 24 h are deleted by the next keyed POST
-- (created_at: Unix seconds), through the index.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT    PRIMARY KEY,
    todo_id         INTEGER NOT NULL,
    title           TEXT    NOT NULL,
    completed       INTEGER NOT NULL CHECK (completed IN (0, 1)),
    "order"         INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
