-- 007: a checkout refused because its user already holds NOTSALE_HOLDS_MAX items across all
-- open sales is recorded as `holds_max`.
ALTER TABLE checkout_attempts
    DROP CONSTRAINT checkout_attempts_outcome_check,
    ADD CONSTRAINT checkout_attempts_outcome_check CHECK (outcome IN ('ok', 'invalid_request',
        'item_not_found', 'item_sold', 'item_held', 'user_limit', 'cooldown', 'holds_max',
        'sale_closed', 'unavailable'));
