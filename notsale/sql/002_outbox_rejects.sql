-- 002: outbox entries the flusher could not store as rows (an entry that does not decode,
-- or a row PostgreSQL refuses), kept verbatim for a human instead of blocking the outbox.

CREATE TABLE outbox_rejects (
    stream      text        NOT NULL,   -- the outbox stream key, e.g. {sale:498750}:outbox
    entry_id    text        NOT NULL,   -- the stream entry id
    payload     text        NOT NULL,   -- the entry's fields, as JSON
    error       text        NOT NULL,   -- why it was refused
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_id)
);
