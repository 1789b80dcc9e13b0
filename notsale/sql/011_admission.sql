-- 011: the waiting room (NOTSALE_ADMISSION=queue). A checkout without an admission is
-- recorded as `admission_required`, one with a bad admission as `admission_invalid`. Each
-- sale's queue seed: committed to (its SHA-256 published) when the queue opens, published
-- at the sale's start; kept here so that every worker, and any restart, commits to the same.
ALTER TABLE checkout_attempts
    DROP CONSTRAINT checkout_attempts_outcome_check,
    ADD CONSTRAINT checkout_attempts_outcome_check CHECK (outcome IN ('ok', 'invalid_request',
        'item_not_found', 'item_sold', 'item_held', 'user_limit', 'cooldown', 'holds_max',
        'sale_closed', 'unavailable', 'unauthenticated', 'forbidden', 'admission_required',
        'admission_invalid'));

CREATE TABLE queue_seeds (
    sale_id bigint PRIMARY KEY,
    seed text NOT NULL CHECK (seed ~ '^[0-9a-f]{32,}$'),
    committed_at timestamptz NOT NULL DEFAULT now()
);
