-- A producer's transaction around single sends, as application code does it:
-- two sends (one delayed, with headers and a group key) and their ledger rows
-- commit together.
\set k random(1, 100)
BEGIN;
INSERT INTO soak.sent (q, id)
VALUES ('soak_ext', queue.send('soak_ext', jsonb_build_object('k', :k::int, 'poison', false),
                               headers => '{"via": "single"}', group_key => 'g' || :k::int % 7));
INSERT INTO soak.sent (q, id)
VALUES ('soak_drain', queue.send('soak_drain', jsonb_build_object('k', :k::int, 'poison', false),
                                 delay => make_interval(secs => (:k::int % 3) * 0.5)));
COMMIT;
