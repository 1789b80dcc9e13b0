-- 003: PostgreSQL's own backstop on the per-user limit, and how a 503'd checkout ended.

-- A purchase's place among its user's purchases in its sale, as Redis counted them (1..limit).
-- Unique per user and sale: if Redis ever loses writes and counts a user short, the purchase
-- that would go past the limit collides here and is refused (429) instead of stored.
ALTER TABLE purchases ADD COLUMN user_seq integer;
UPDATE purchases p SET user_seq = r.n
FROM (SELECT sale_id, item_id,
             row_number() OVER (PARTITION BY sale_id, user_id ORDER BY purchased_at, item_id) AS n
      FROM purchases) r
WHERE p.sale_id = r.sale_id AND p.item_id = r.item_id;
ALTER TABLE purchases
    ALTER COLUMN user_seq SET NOT NULL,
    ADD CONSTRAINT purchases_user_seq_positive CHECK (user_seq >= 1),
    ADD CONSTRAINT purchases_user_seq UNIQUE (sale_id, user_id, user_seq);
-- The unique index above serves the (sale_id, user_id) reads this one served.
DROP INDEX purchases_user;

-- A checkout answered 503 (outcome `unavailable`: the client does not know what happened)
-- whose request Redis decided after all: what it decided (`ok` means a hold with `code` was
-- made, and the client's retry gets that code back). NULL when Redis never decided it.
ALTER TABLE checkout_attempts ADD COLUMN decided text;
