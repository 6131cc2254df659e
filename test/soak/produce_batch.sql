-- A producer's batch: 1 to 20 messages to each queue with send_batch, the ids
-- written into the ledger by the same statement (one transaction).  About 2%
-- are poison (always fail: dead-lettered after 3 deliveries) and, on the
-- drain queue, 0.5% raise in the handler (the batch is bisected).
\set n random(1, 20)
INSERT INTO soak.sent (q, id)
SELECT 'soak_ext', id
  FROM queue.send_batch('soak_ext',
         array(SELECT jsonb_build_object('n', g, 'poison', random() < 0.02)
                 FROM generate_series(1, :n::int) g)) AS id;
INSERT INTO soak.sent (q, id)
SELECT 'soak_drain', id
  FROM queue.send_batch('soak_drain',
         array(SELECT jsonb_build_object('n', g, 'poison', random() < 0.02,
                                         'raise', random() < 0.005)
                 FROM generate_series(1, :n::int) g)) AS id;
