-- 006: a checkout refused because its user let their hold on the item expire a moment ago
-- (NOTSALE_COOLDOWN_SECONDS) is recorded as `cooldown`.
ALTER TABLE checkout_attempts
    DROP CONSTRAINT checkout_attempts_outcome_check,
    ADD CONSTRAINT checkout_attempts_outcome_check CHECK (outcome IN ('ok', 'invalid_request',
        'item_not_found', 'item_sold', 'item_held', 'user_limit', 'cooldown', 'sale_closed',
        'unavailable'));
