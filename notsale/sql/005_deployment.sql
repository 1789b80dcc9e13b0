-- 005: when this deployment first ran (this migration's time): a sale that started before
-- its first sale never ran here, and every route answers for it as for one not started.
CREATE TABLE deployment (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    first_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO deployment DEFAULT VALUES;
