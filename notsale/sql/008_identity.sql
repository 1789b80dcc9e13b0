-- 008: with NOTSALE_IDENTITY=jwt, a checkout without a valid bearer token is recorded as
-- `unauthenticated`, and one naming another user than the token's subject as `forbidden`.
ALTER TABLE checkout_attempts
    DROP CONSTRAINT checkout_attempts_outcome_check,
    ADD CONSTRAINT checkout_attempts_outcome_check CHECK (outcome IN ('ok', 'invalid_request',
        'item_not_found', 'item_sold', 'item_held', 'user_limit', 'cooldown', 'holds_max',
        'sale_closed', 'unavailable', 'unauthenticated', 'forbidden'));
