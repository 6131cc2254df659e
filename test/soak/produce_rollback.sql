-- A producer whose transaction rolls back: its sends and ledger rows vanish
-- together, so no message of it may ever turn up anywhere.
BEGIN;
INSERT INTO soak.sent (q, id)
VALUES ('soak_ext', queue.send('soak_ext', '{"rolled_back": true, "poison": false}'));
INSERT INTO soak.sent (q, id)
SELECT 'soak_drain', id
  FROM queue.send_batch('soak_drain', '{"{\"rolled_back\": true, \"poison\": false}"}') AS id;
ROLLBACK;
