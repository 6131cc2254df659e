-- A producer that retries: sends with a deduplication key drawn from a small
-- range, so that keys repeat within the dedup window.  A repeated key returns
-- the first message's id and must enqueue nothing; the ledger keeps one row
-- per id.
\set key random(1, 5000)
INSERT INTO soak.sent (q, id)
VALUES ('soak_drain', queue.send('soak_drain', jsonb_build_object('key', :key::int, 'poison', false),
                                 dedup_key => 'key-' || :key::int))
ON CONFLICT (q, id) DO NOTHING;
