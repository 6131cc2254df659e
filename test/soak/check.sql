-- test/soak/check.sql: where every message ended, run by test/soak.sh after
-- the load and the final drain.  Prints "name value" lines.
--
-- A message is in exactly one place: processed (acknowledged, with a ledger
-- row), the archive of soak_ext, the dead-letter queue, or still in a queue.
-- Message ids come from one sequence for all queues, and dead letters keep
-- theirs, so an id names a message everywhere.
--   lost        sent (committed), found nowhere: must be 0
--   duplicated  ids with more than one ledger row: must be 0 (every ledger
--               write commits with its ack or the drain's deletion)
--   misplaced   ids found in more than one place: must be 0
--   phantom     ids found somewhere but never sent (a rolled-back send): 0
--   anomaly     an ack that failed after its lease was extended: 0
--   counter_off queues whose messages counter (queue.queues, shared memory)
--               differs from the rows they hold: 0
CREATE TEMP TABLE place AS
    SELECT id, 'processed' AS place FROM soak.processed
    UNION ALL SELECT id, 'archive' FROM queue.archived('soak_ext')
    UNION ALL SELECT id, 'dead_letter' FROM soak.queue_ids('soak_dlq') AS x(id)
    UNION ALL SELECT id, 'queue' FROM soak.queue_ids('soak_ext') AS x(id)
    UNION ALL SELECT id, 'queue' FROM soak.queue_ids('soak_drain') AS x(id);
CREATE INDEX ON place (id);
ANALYZE place;

SELECT name, value FROM (VALUES
  (1, 'sent', (SELECT count(*) FROM soak.sent)),
  (2, 'processed', (SELECT count(DISTINCT id) FROM soak.processed)),
  (3, 'processed_drain', (SELECT count(DISTINCT id) FROM soak.processed WHERE q = 'soak_drain')),
  (4, 'processed_external', (SELECT count(DISTINCT id) FROM soak.processed WHERE q = 'soak_ext')),
  (5, 'redelivered', (SELECT count(*) FROM soak.processed WHERE deliveries > 1)),
  (6, 'archived', (SELECT count(*) FROM place WHERE place = 'archive')),
  (7, 'dead_lettered', (SELECT count(*) FROM place WHERE place = 'dead_letter')),
  (8, 'in_queue', (SELECT count(*) FROM place WHERE place = 'queue')),
  (9, 'lost', (SELECT count(*) FROM soak.sent s WHERE NOT EXISTS (SELECT FROM place p WHERE p.id = s.id))),
  (10, 'duplicated', (SELECT count(*) FROM (SELECT id FROM soak.processed GROUP BY id HAVING count(*) > 1) d)),
  (11, 'misplaced', (SELECT count(*) FROM (SELECT id FROM place GROUP BY id HAVING count(*) > 1) m)),
  (12, 'phantom', (SELECT count(DISTINCT id) FROM place p WHERE NOT EXISTS (SELECT FROM soak.sent s WHERE s.id = p.id))),
  (13, 'counter_off', (SELECT count(*) FROM queue.queues q
                        WHERE q.messages IS DISTINCT FROM (SELECT count(*) FROM soak.queue_ids(q.queue_name)))),
  (15, 'anomaly', (SELECT count(*) FROM soak.anomaly)),
  (14, 'processed_by_load_end', (SELECT count(DISTINCT id) FROM soak.processed
                                  WHERE processed_at <= :'load_end'::timestamptz))
) AS v(n, name, value) ORDER BY n;
