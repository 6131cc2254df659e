-- test/soak/setup.sql: the soak's database objects, run once by test/soak.sh
-- as a superuser in a fresh database.
--
-- Queues: soak_ext (drained by external consumers, pgbench clients) and
-- soak_drain (drained by a consumer's background workers), both with
-- max_attempts 3 into soak_dlq, which nobody reads.
-- Ledger: soak.sent gets a row in the transaction of each send that commits;
-- soak.processed gets a row in the transaction that acknowledges a message
-- (the external consumer's ack, or the drain's handler, which commits with
-- the deletion of its messages), with the delivery count the message had.
-- Neither has a unique constraint on processed ids: duplicates are counted
-- by test/soak/check.sql, not prevented.

CREATE EXTENSION queue;
CREATE SCHEMA soak;

CREATE TABLE soak.sent (
    q        text NOT NULL,
    id       bigint NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (q, id)     -- a send deduplicated by its key returns an id again
);

CREATE TABLE soak.processed (
    q             text NOT NULL,
    id            bigint NOT NULL,
    deliveries    int NOT NULL,
    how           text NOT NULL,      -- ack, ack_tx, late_ack, extended_ack, drain, finish
    processed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON soak.processed (q, id);

-- What should not happen and did, with the evidence (test/soak/consume_extend.sql).
CREATE TABLE soak.anomaly (
    id           bigint,
    receipt      bigint,
    what         text,
    extended_at  timestamptz,
    seen_at      timestamptz DEFAULT clock_timestamp(),
    now_row      jsonb
);

SELECT queue.create('soak_dlq');
SELECT queue.create('soak_ext', visibility_timeout => '5 seconds',
                    max_attempts => 3, dead_letter_queue => 'soak_dlq');
SELECT queue.create('soak_drain', max_attempts => 3, dead_letter_queue => 'soak_dlq');

-- The drain's handler: ledgers every good message of the batch, reports the
-- poison ones as failed (retried, dead-lettered after 3 deliveries), and
-- raises when the batch holds a "raise" message, so that the worker bisects
-- the batch and commits the good ones around it.
CREATE FUNCTION soak.handler(messages queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    failed bigint[];
BEGIN
    IF EXISTS (SELECT FROM unnest(messages) m WHERE (m.payload->>'raise')::boolean) THEN
        RAISE EXCEPTION 'soak: a raising message in a batch of %', cardinality(messages);
    END IF;
    INSERT INTO soak.processed (q, id, deliveries, how)
    SELECT 'soak_drain', m.id, m.attempts, 'drain'
      FROM unnest(messages) m
     WHERE NOT (m.payload->>'poison')::boolean;
    SELECT array_agg(m.id) INTO failed
      FROM unnest(messages) m WHERE (m.payload->>'poison')::boolean;
    RETURN failed;
END $$;

-- Every id a queue holds (visible, in flight or delayed).  No API lists
-- in-flight messages, so this reads the queue's table (and, with segments,
-- its children) directly, as the superuser that runs the checks.
CREATE FUNCTION soak.queue_ids(queue_name text) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT id FROM queue_internal.%I',
        'q' || (SELECT id FROM queue.queues WHERE queues.queue_name = $1));
END $$;

-- Where a message is now, for the record of an anomaly: its row in the
-- queue (or its dead-letter queue), its ledger rows.
CREATE FUNCTION soak.queue_row(queue_name text, msg bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    d jsonb;
BEGIN
    EXECUTE format('SELECT to_jsonb(m) - ''payload'' FROM queue_internal.%I m WHERE id = $1',
        'q' || (SELECT id FROM queue.queues WHERE queues.queue_name = $1)) INTO r USING msg;
    EXECUTE format('SELECT to_jsonb(m) - ''payload'' FROM queue_internal.%I m WHERE id = $1',
        'q' || (SELECT id FROM queue.queues WHERE queues.queue_name = 'soak_dlq')) INTO d USING msg;
    RETURN jsonb_build_object('queue', r, 'dead_letter', d,
        'ledger', (SELECT jsonb_agg(to_jsonb(p)) FROM soak.processed p WHERE p.id = msg));
END $$;

-- The drain consumer runs as an ordinary role (superusers may not own one).
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'soak_app') THEN
        CREATE ROLE soak_app LOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA soak TO soak_app;
GRANT INSERT ON soak.processed TO soak_app;
ALTER FUNCTION soak.handler(queue.message[]) OWNER TO soak_app;
SELECT queue.grant('soak_drain', 'all', 'soak_app');
SELECT queue.grant('soak_dlq', 'send', 'soak_app');
SET ROLE soak_app;
SELECT queue.subscribe('soak_drainer', 'soak_drain', 'soak.handler(queue.message[])',
                       batch_size => 20, max_concurrency => 2, max_attempts => 3,
                       retry_backoff => '10 milliseconds',
                       max_retry_backoff => '100 milliseconds');
RESET ROLE;
