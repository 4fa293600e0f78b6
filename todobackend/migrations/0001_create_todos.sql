-- The todo list itself. AUTOINCREMENT so that an id is never reused after a
-- delete: a client holding the URL of a deleted todo must get 404, not
-- somebody else's todo.
CREATE TABLE todos (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    title     TEXT    NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0 CHECK (completed IN (0, 1)),
    "order"   INTEGER
);
