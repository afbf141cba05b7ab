-- Access policies set by operators through the API, the kill switch, and members' routing preference.
--
-- An override set through the API wins over the manifest: a per-service override first, then the
-- node-wide override, then the manifest's own policies. NULL means "no override".

ALTER TABLE providers ADD COLUMN accepting BIGINT NOT NULL DEFAULT 1;   -- 0: the kill switch is on; nothing is routed there
ALTER TABLE providers ADD COLUMN access_override TEXT;                   -- JSON access policy for the whole node, or NULL
ALTER TABLE providers ADD COLUMN service_access TEXT;                    -- JSON object: service name -> access policy, or NULL

ALTER TABLE users ADD COLUMN routing_preference TEXT NOT NULL DEFAULT 'any';  -- any | prefer_own | only_own
