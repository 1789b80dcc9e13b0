-- 001: the two things PostgreSQL remembers: every checkout attempt and every purchase.

CREATE TABLE checkout_attempts (
    -- "<sale_id>:<outbox stream entry id>" for attempts logged through Redis, or
    -- "direct:<uuid>" for those written straight here while Redis was unreachable; writing the
    -- same attempt twice (a replayed stream entry) hits this key and is dropped.
    id           text PRIMARY KEY,
    sale_id      bigint      NOT NULL,
    user_id      text        NOT NULL,   -- as sent, cut to a bounded length when malformed
    item_id      bigint,                 -- NULL when the request carried no integer id
    code         text,                   -- the code issued, for outcome ok
    outcome      text        NOT NULL CHECK (outcome IN ('ok', 'invalid_request',
                     'item_not_found', 'item_sold', 'item_held', 'user_limit', 'unavailable')),
    raw_query    text,                   -- the query string of a malformed request, cut
    attempted_at timestamptz NOT NULL
);
CREATE INDEX checkout_attempts_sale ON checkout_attempts (sale_id, attempted_at);
-- A purchase of a code whose Redis keys are gone asks here whether the code ever existed.
CREATE INDEX checkout_attempts_code ON checkout_attempts (code) WHERE code IS NOT NULL;

CREATE TABLE purchases (
    sale_id      bigint      NOT NULL,
    item_id      integer     NOT NULL,
    user_id      text        NOT NULL,
    code         text        NOT NULL UNIQUE,
    purchased_at timestamptz NOT NULL,
    -- Even a bug upstream cannot store one item sold twice.
    PRIMARY KEY (sale_id, item_id)
);
CREATE INDEX purchases_user ON purchases (sale_id, user_id);
