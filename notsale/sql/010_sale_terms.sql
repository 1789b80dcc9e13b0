-- 010: each sale's terms, fixed when it starts (notsale/store/terms.py). A sale started
-- before this migration gets the settings of the first worker that uses it afterwards.
CREATE TABLE sale_terms (
    sale_id           bigint      PRIMARY KEY,
    sale_size         integer     NOT NULL CHECK (sale_size >= 1),
    user_limit        integer     NOT NULL CHECK (user_limit >= 1),
    hold_seconds      integer     NOT NULL CHECK (hold_seconds >= 1),
    sale_open_seconds bigint      NOT NULL CHECK (sale_open_seconds >= 1),
    fixed_at          timestamptz NOT NULL DEFAULT now()
);
