-- 009: the client's network of each checkout attempt (the /24 of IPv4, the /64 of IPv6;
-- notsale/network.py), NULL when unknown (attempts stored before this migration included).
ALTER TABLE checkout_attempts ADD COLUMN network cidr;
