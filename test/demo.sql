-- A queue at work: the short tour `make demo` prints.
\set ON_ERROR_STOP on
\pset footer off
CREATE EXTENSION IF NOT EXISTS queue;

-- A durable queue for orders, whose messages go to a dead-letter queue
-- after two failed deliveries.
SELECT queue.create('orders_dead');
SELECT queue.create('orders', visibility_timeout => '30 seconds',
                    max_attempts => 2, dead_letter_queue => 'orders_dead');

-- Application code enqueues inside its own transaction: the messages
-- exist only if the transaction commits.
BEGIN;
SELECT queue.send('orders', '{"order": 1, "item": "apple"}');
SELECT queue.send_batch('orders', ARRAY['{"order": 2, "item": "pear"}',
                                        '{"order": 3, "item": "plum"}']::jsonb[]);
COMMIT;

-- A consumer leases a batch; each message carries its receipt (the lease).
CREATE TEMP TABLE batch AS SELECT * FROM queue.read('orders', max_messages => 2);
SELECT id, payload, attempts FROM batch ORDER BY id;

-- It handles the first message and acknowledges it ...
SELECT queue.ack('orders', id, receipt) FROM batch WHERE payload->>'order' = '1';
-- ... and fails the second, which comes back at once with the error noted.
SELECT queue.nack('orders', id, receipt, error => 'pear out of stock')
  FROM batch WHERE payload->>'order' = '2';

-- Order 2 fails again on its second delivery ...
DROP TABLE batch;
CREATE TEMP TABLE batch AS SELECT * FROM queue.read('orders', max_messages => 10);
SELECT id, payload, attempts, last_error FROM batch ORDER BY id;
SELECT queue.nack('orders', id, receipt, error => 'still out of stock')
  FROM batch WHERE payload->>'order' = '2';
SELECT queue.ack('orders', id, receipt) FROM batch WHERE payload->>'order' = '3';

-- ... so the next read moves it to the dead-letter queue instead of
-- delivering it a third time.
SELECT count(*) AS delivered FROM queue.read('orders', max_messages => 10);
SELECT id, payload, attempts, last_error FROM queue.read('orders_dead');

-- Counters and depth, from shared memory.
SELECT queue_name, messages, visible, in_flight, sent_total, acked_total,
       dead_lettered_total
  FROM queue.queues ORDER BY queue_name;

SELECT queue.drop('orders');
SELECT queue.drop('orders_dead');
