-- 004: a sale stays open until sold out (or NOTSALE_SALE_OPEN_SECONDS after its start); a
-- checkout naming a sale that has closed is refused, and recorded, as `sale_closed`.
ALTER TABLE checkout_attempts
    DROP CONSTRAINT checkout_attempts_outcome_check,
    ADD CONSTRAINT checkout_attempts_outcome_check CHECK (outcome IN ('ok', 'invalid_request',
        'item_not_found', 'item_sold', 'item_held', 'user_limit', 'sale_closed', 'unavailable'));
