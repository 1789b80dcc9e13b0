-- 005: when this deployment first ran. A sale that started before its first sale never ran
-- here, and every route answers for it as for one not started. A deployment upgraded to
-- this migration first ran with its oldest row; a new one, now.
CREATE TABLE deployment (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    first_at    timestamptz NOT NULL
);
INSERT INTO deployment (first_at)
SELECT least(now(),
             (SELECT min(attempted_at) FROM checkout_attempts),
             (SELECT min(purchased_at) FROM purchases));
