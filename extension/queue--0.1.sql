-- queue 0.1: durable work queues inside PostgreSQL.
--
-- Two schemas: "queue" holds the API users call; "queue_internal" holds the
-- catalog and every queue's tables, which are named from the queue's numeric
-- id (q<id> for messages, a<id> for the archive), never from its name.
-- Nobody but the extension's owner has any right on queue_internal: the C
-- functions check the caller's per-queue privileges, then act as the owner.

\echo Use "CREATE EXTENSION queue" to load this file. \quit

CREATE SCHEMA queue_internal;
REVOKE ALL ON SCHEMA queue_internal FROM PUBLIC;
COMMENT ON SCHEMA queue_internal IS
  'Internal storage of the queue extension: the catalog and each queue''s tables. Use the functions in schema queue instead.';

-- Message ids come from one sequence shared by all queues, so a message keeps
-- its id when it moves to a dead-letter queue or is redriven back.
CREATE SEQUENCE queue_internal.message_id_seq AS pg_catalog.int8;
CREATE SEQUENCE queue_internal.queue_id_seq AS pg_catalog.int8;

CREATE TABLE queue_internal.queue (
    id                  pg_catalog.int8 PRIMARY KEY
                        DEFAULT pg_catalog.nextval('queue_internal.queue_id_seq'::pg_catalog.regclass),
    name                pg_catalog.text NOT NULL UNIQUE,
    logged              pg_catalog.bool NOT NULL,
    visibility_timeout  pg_catalog.interval NOT NULL,
    max_attempts        pg_catalog.int4,
    dead_letter_queue   pg_catalog.int8,  -- a queue id; queue.drop keeps it valid
    retention           pg_catalog.interval,
    dedup_window        pg_catalog.interval NOT NULL DEFAULT '5 minutes',
    fifo                pg_catalog.bool NOT NULL DEFAULT false,
    fair                pg_catalog.bool NOT NULL DEFAULT false,
    owner               pg_catalog.oid NOT NULL,
    senders             pg_catalog.oid[] NOT NULL DEFAULT '{}',
    readers             pg_catalog.oid[] NOT NULL DEFAULT '{}',
    admins              pg_catalog.oid[] NOT NULL DEFAULT '{}',
    created_at          pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE queue_internal.queue IS
  'Catalog of queues; one row per queue. Change it only through queue.create, queue.alter, queue.drop, queue.grant and queue.revoke.';

-- Each queue's ring of segment tables (see segment.c): head is the
-- generation that takes new messages, tail the oldest still in use;
-- generation g lives in table s<id>_<g % 4>.
CREATE TABLE queue_internal.segment_ring (
    queue_id  pg_catalog.int8 PRIMARY KEY,
    head      pg_catalog.int8 NOT NULL,
    tail      pg_catalog.int8 NOT NULL
);
COMMENT ON TABLE queue_internal.segment_ring IS
  'Which segment tables of each queue are in use; changed only by the queue extension''s recycling.';

SELECT pg_catalog.pg_extension_config_dump('queue_internal.queue', '');
SELECT pg_catalog.pg_extension_config_dump('queue_internal.segment_ring', '');
SELECT pg_catalog.pg_extension_config_dump('queue_internal.message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('queue_internal.queue_id_seq', '');
ALTER SEQUENCE queue_internal.queue_id_seq OWNED BY queue_internal.queue.id;

-- Deduplication keys of queue.send, by queue; unlogged queues keep theirs in
-- an unlogged table, so that a crash forgets them with the messages.
CREATE TABLE queue_internal.dedup (
    queue_id    pg_catalog.int8 NOT NULL,
    key         pg_catalog.text NOT NULL,
    message_id  pg_catalog.int8 NOT NULL,
    expires_at  pg_catalog.timestamptz NOT NULL,
    PRIMARY KEY (queue_id, key)
);
CREATE INDEX ON queue_internal.dedup (queue_id, expires_at);
CREATE UNLOGGED TABLE queue_internal.dedup_unlogged (LIKE queue_internal.dedup INCLUDING ALL);
COMMENT ON TABLE queue_internal.dedup IS
  'Deduplication keys of durable queues: the id of the message each key was first sent with, until the key expires.';
COMMENT ON TABLE queue_internal.dedup_unlogged IS
  'Deduplication keys of unlogged queues, emptied by a crash like the queues themselves.';
SELECT pg_catalog.pg_extension_config_dump('queue_internal.dedup', '');

-- What queue.read and queue.pop return.
CREATE TYPE queue.message AS (
    id           pg_catalog.int8,
    payload      pg_catalog.jsonb,
    headers      pg_catalog.jsonb,
    group_key    pg_catalog.text,
    enqueued_at  pg_catalog.timestamptz,
    visible_at   pg_catalog.timestamptz,
    attempts     pg_catalog.int4,
    last_error   pg_catalog.text,
    receipt      pg_catalog.int8,
    priority     pg_catalog.int4
);
COMMENT ON TYPE queue.message IS
  'A message as delivered: receipt is the lease of this delivery, to pass back to ack, nack, set_visibility and archive.';

-- What queue.archived returns.
CREATE TYPE queue.archived_message AS (
    id           pg_catalog.int8,
    payload      pg_catalog.jsonb,
    headers      pg_catalog.jsonb,
    group_key    pg_catalog.text,
    enqueued_at  pg_catalog.timestamptz,
    archived_at  pg_catalog.timestamptz,
    attempts     pg_catalog.int4,
    last_error   pg_catalog.text
);
COMMENT ON TYPE queue.archived_message IS 'A message kept in a queue''s archive by queue.archive.';

-- Queues ------------------------------------------------------------------

CREATE FUNCTION queue.create(
    queue_name          pg_catalog.text,
    logged              pg_catalog.bool DEFAULT true,
    visibility_timeout  pg_catalog.interval DEFAULT '30 seconds',
    max_attempts        pg_catalog.int4 DEFAULT NULL,
    dead_letter_queue   pg_catalog.text DEFAULT NULL,
    retention           pg_catalog.interval DEFAULT NULL,
    dedup_window        pg_catalog.interval DEFAULT '5 minutes',
    fifo                pg_catalog.bool DEFAULT false,
    fair                pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.int8
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_create';
COMMENT ON FUNCTION queue.create(pg_catalog.text, pg_catalog.bool, pg_catalog.interval, pg_catalog.int4, pg_catalog.text, pg_catalog.interval, pg_catalog.interval, pg_catalog.bool, pg_catalog.bool) IS
  'Creates a queue (durable unless logged => false; fifo: one message of a group_key at a time, in order; fair: round-robin across group keys) and returns its id; the caller becomes its owner.';

CREATE FUNCTION queue.alter(
    queue_name          pg_catalog.text,
    visibility_timeout  pg_catalog.interval DEFAULT NULL,
    max_attempts        pg_catalog.int4 DEFAULT NULL,
    dead_letter_queue   pg_catalog.text DEFAULT NULL,
    retention           pg_catalog.interval DEFAULT NULL,
    rename_to           pg_catalog.text DEFAULT NULL,
    reset               pg_catalog.text[] DEFAULT NULL,
    logged              pg_catalog.bool DEFAULT NULL,
    dedup_window        pg_catalog.interval DEFAULT NULL)
RETURNS pg_catalog.void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_alter';
COMMENT ON FUNCTION queue.alter(pg_catalog.text, pg_catalog.interval, pg_catalog.int4, pg_catalog.text, pg_catalog.interval, pg_catalog.text, pg_catalog.text[], pg_catalog.bool, pg_catalog.interval) IS
  'Changes a queue''s settings; NULL leaves a setting as it is, reset names settings to return to their defaults; logged rewrites the queue''s tables.';

CREATE FUNCTION queue.drop(queue_name pg_catalog.text, if_exists pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_drop';
COMMENT ON FUNCTION queue.drop(pg_catalog.text, pg_catalog.bool) IS
  'Drops a queue with its messages and archive; returns false when if_exists is set and there was no such queue.';

CREATE FUNCTION queue.purge(queue_name pg_catalog.text)
RETURNS pg_catalog.int8
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_purge';
COMMENT ON FUNCTION queue.purge(pg_catalog.text) IS
  'Deletes every message of a queue (not its archive) and returns how many there were.';

CREATE FUNCTION queue.grant(queue_name pg_catalog.text, privilege pg_catalog.text, role pg_catalog.regrole)
RETURNS pg_catalog.void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_grant';
COMMENT ON FUNCTION queue.grant(pg_catalog.text, pg_catalog.text, pg_catalog.regrole) IS
  'Grants send, read, administer or all on a queue to a role.';

CREATE FUNCTION queue.revoke(queue_name pg_catalog.text, privilege pg_catalog.text, role pg_catalog.regrole)
RETURNS pg_catalog.void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_revoke';
COMMENT ON FUNCTION queue.revoke(pg_catalog.text, pg_catalog.text, pg_catalog.regrole) IS
  'Revokes send, read, administer or all on a queue from a role.';

-- Messages ----------------------------------------------------------------

CREATE FUNCTION queue.send(
    queue_name  pg_catalog.text,
    payload     pg_catalog.jsonb,
    delay       pg_catalog.interval DEFAULT '0',
    headers     pg_catalog.jsonb DEFAULT NULL,
    group_key   pg_catalog.text DEFAULT NULL,
    dedup_key   pg_catalog.text DEFAULT NULL,
    priority    pg_catalog.int4 DEFAULT 0)
RETURNS pg_catalog.int8
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_send';
COMMENT ON FUNCTION queue.send(pg_catalog.text, pg_catalog.jsonb, pg_catalog.interval, pg_catalog.jsonb, pg_catalog.text, pg_catalog.text, pg_catalog.int4) IS
  'Enqueues one message in the caller''s transaction and returns its id; with a dedup_key already sent within the queue''s dedup_window, returns that message''s id and enqueues nothing; higher priority (0 to 32767) is delivered first.';

CREATE FUNCTION queue.send_batch(
    queue_name  pg_catalog.text,
    payloads    pg_catalog.jsonb[],
    delay       pg_catalog.interval DEFAULT '0',
    headers     pg_catalog.jsonb DEFAULT NULL,
    group_key   pg_catalog.text DEFAULT NULL,
    dedup_keys  pg_catalog.text[] DEFAULT NULL,
    priority    pg_catalog.int4 DEFAULT 0)
RETURNS SETOF pg_catalog.int8
LANGUAGE c VOLATILE ROWS 100 AS 'MODULE_PATHNAME', 'queue_send_batch';
COMMENT ON FUNCTION queue.send_batch(pg_catalog.text, pg_catalog.jsonb[], pg_catalog.interval, pg_catalog.jsonb, pg_catalog.text, pg_catalog.text[], pg_catalog.int4) IS
  'Enqueues one message per array element, in order, and returns their ids in the same order; dedup_keys gives each element a deduplication key (or NULL), as in queue.send.';

CREATE FUNCTION queue.read(
    queue_name          pg_catalog.text,
    max_messages        pg_catalog.int4 DEFAULT 1,
    visibility_timeout  pg_catalog.interval DEFAULT NULL,
    wait                pg_catalog.interval DEFAULT '0',
    per_group           pg_catalog.int4 DEFAULT 1)
RETURNS SETOF queue.message
LANGUAGE c VOLATILE ROWS 10 AS 'MODULE_PATHNAME', 'queue_read';
COMMENT ON FUNCTION queue.read(pg_catalog.text, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval, pg_catalog.int4) IS
  'Leases up to max_messages visible messages, oldest first, hiding them for the visibility timeout; with wait, blocks until a send commits or the wait ends; in a FIFO queue, up to per_group consecutive messages of a group.';

CREATE FUNCTION queue.pop(
    queue_name      pg_catalog.text,
    max_messages    pg_catalog.int4 DEFAULT 1,
    per_group       pg_catalog.int4 DEFAULT 1)
RETURNS SETOF queue.message
LANGUAGE c VOLATILE ROWS 10 AS 'MODULE_PATHNAME', 'queue_pop';
COMMENT ON FUNCTION queue.pop(pg_catalog.text, pg_catalog.int4, pg_catalog.int4) IS
  'Reads and deletes up to max_messages visible messages in one step (at-most-once: a failure after the commit loses them); in a FIFO queue, up to per_group consecutive messages of a group.';

CREATE FUNCTION queue.ack(queue_name pg_catalog.text, id pg_catalog.int8, receipt pg_catalog.int8)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_ack';
COMMENT ON FUNCTION queue.ack(pg_catalog.text, pg_catalog.int8, pg_catalog.int8) IS
  'Deletes a message read with this receipt; false when the lease was lost (read again by another consumer) or the message is gone.';

CREATE FUNCTION queue.ack(queue_name pg_catalog.text, ids pg_catalog.int8[], receipts pg_catalog.int8[])
RETURNS SETOF pg_catalog.int8
LANGUAGE c VOLATILE ROWS 100 AS 'MODULE_PATHNAME', 'queue_ack_batch';
COMMENT ON FUNCTION queue.ack(pg_catalog.text, pg_catalog.int8[], pg_catalog.int8[]) IS
  'Deletes the messages whose (id, receipt) pairs still hold their lease; returns the ids deleted.';

CREATE FUNCTION queue.nack(
    queue_name  pg_catalog.text,
    id          pg_catalog.int8,
    receipt     pg_catalog.int8,
    delay       pg_catalog.interval DEFAULT '0',
    error       pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_nack';
COMMENT ON FUNCTION queue.nack(pg_catalog.text, pg_catalog.int8, pg_catalog.int8, pg_catalog.interval, pg_catalog.text) IS
  'Gives a leased message back: visible again after delay, with error recorded as its last_error; false when the lease was lost.';

CREATE FUNCTION queue.set_visibility(
    queue_name          pg_catalog.text,
    id                  pg_catalog.int8,
    receipt             pg_catalog.int8,
    visibility_timeout  pg_catalog.interval)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_set_visibility';
COMMENT ON FUNCTION queue.set_visibility(pg_catalog.text, pg_catalog.int8, pg_catalog.int8, pg_catalog.interval) IS
  'Hides a leased message until now + visibility_timeout (extends or shortens the lease); false when the lease was lost.';

CREATE FUNCTION queue.archive(queue_name pg_catalog.text, id pg_catalog.int8, receipt pg_catalog.int8)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_archive';
COMMENT ON FUNCTION queue.archive(pg_catalog.text, pg_catalog.int8, pg_catalog.int8) IS
  'Moves a leased message into the queue''s archive (kept for the queue''s retention); false when the lease was lost.';

CREATE FUNCTION queue.archived(queue_name pg_catalog.text)
RETURNS SETOF queue.archived_message
LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'queue_archived';
COMMENT ON FUNCTION queue.archived(pg_catalog.text) IS
  'Lists the messages in a queue''s archive, oldest first.';

CREATE FUNCTION queue.redrive(
    dead_letter_queue  pg_catalog.text,
    target             pg_catalog.text DEFAULT NULL,
    max_messages       pg_catalog.int8 DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_redrive';
COMMENT ON FUNCTION queue.redrive(pg_catalog.text, pg_catalog.text, pg_catalog.int8) IS
  'Moves dead letters back to the queue they came from (or to target), oldest first, at most max_messages; returns how many moved.';

CREATE FUNCTION queue.recycle(queue_name pg_catalog.text)
RETURNS pg_catalog.int4
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_recycle';
COMMENT ON FUNCTION queue.recycle(pg_catalog.text) IS
  'Recycles the queue''s oldest segment table when it is drained and free (its last messages move forward, the table is emptied by TRUNCATE), then starts a new segment if the current one holds anything; returns how many segments it recycled. Runs by itself too.';

-- The head test of a FIFO queue's claims (fifo_head.c): they call it, as
-- the extension's owner, for each candidate.  Its cost puts it after every
-- other condition of a claim; it tests a message's visibility itself, so
-- that a claim scanning in id order can show it the hidden ones too.
CREATE FUNCTION queue_internal.fifo_head(queue_id pg_catalog.int8, group_key pg_catalog.text,
                                         id pg_catalog.int8, visible_at pg_catalog.timestamptz,
                                         now pg_catalog.timestamptz)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE COST 1000 AS 'MODULE_PATHNAME', 'queue_fifo_head';
REVOKE ALL ON FUNCTION queue_internal.fifo_head(pg_catalog.int8, pg_catalog.text, pg_catalog.int8, pg_catalog.timestamptz, pg_catalog.timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION queue_internal.fifo_head(pg_catalog.int8, pg_catalog.text, pg_catalog.int8, pg_catalog.timestamptz, pg_catalog.timestamptz) IS
  'Takes the transaction-level lock of a FIFO queue''s message group if it is free at once, and keeps it when the message is visible and the head of its group (no earlier message left, no later one leased); for a message without a group key, whether it is visible. Runs only inside the claim statements.';

-- Consumers ---------------------------------------------------------------

CREATE SEQUENCE queue_internal.consumer_id_seq AS pg_catalog.int8;

CREATE TABLE queue_internal.consumer (
    id                 pg_catalog.int8 PRIMARY KEY
                       DEFAULT pg_catalog.nextval('queue_internal.consumer_id_seq'::pg_catalog.regclass),
    name               pg_catalog.text NOT NULL UNIQUE,
    queue_id           pg_catalog.int8 NOT NULL REFERENCES queue_internal.queue (id),
    handler            pg_catalog.regprocedure NOT NULL,
    owner              pg_catalog.oid NOT NULL,
    batch_size         pg_catalog.int4 NOT NULL,
    batch_window       pg_catalog.interval NOT NULL,
    max_concurrency    pg_catalog.int4 NOT NULL,
    rate_limit         pg_catalog.float8,
    max_attempts       pg_catalog.int4,
    retry_backoff      pg_catalog.interval NOT NULL,
    max_retry_backoff  pg_catalog.interval NOT NULL,
    handler_timeout    pg_catalog.interval NOT NULL,
    paused             pg_catalog.bool NOT NULL DEFAULT false,
    created_at         pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE queue_internal.consumer IS
  'Catalog of consumers; one row per consumer. Change it only through queue.subscribe, queue.alter_consumer, queue.pause, queue.resume and queue.unsubscribe.';
SELECT pg_catalog.pg_extension_config_dump('queue_internal.consumer', '');
SELECT pg_catalog.pg_extension_config_dump('queue_internal.consumer_id_seq', '');
ALTER SEQUENCE queue_internal.consumer_id_seq OWNED BY queue_internal.consumer.id;

-- A consumer's handler cannot be dropped from under it (DROP EXTENSION, which
-- drops the consumers too, can).  SECURITY DEFINER so that any role's DROP can
-- look at the consumer catalog; it reads nothing but the catalog.
CREATE FUNCTION queue_internal.refuse_dropping_handlers()
RETURNS pg_catalog.event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    consumer_name  text;
    handler_name   text;
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_dropped_objects()
               WHERE object_type = 'table' AND object_identity = 'queue_internal.consumer') THEN
        RETURN;
    END IF;
    SELECT c.name, d.object_identity INTO consumer_name, handler_name
      FROM queue_internal.consumer c
      JOIN pg_event_trigger_dropped_objects() d
        ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = c.handler::oid
     ORDER BY c.name LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot drop function % because consumer "%" uses it as its handler',
                        handler_name, consumer_name
          USING ERRCODE = '2BP01',
                HINT = 'Give the consumer another handler with queue.alter_consumer(), or drop it with queue.unsubscribe(), first.';
    END IF;
END
$$;
COMMENT ON FUNCTION queue_internal.refuse_dropping_handlers() IS
  'Event trigger function: refuses to drop a function that a consumer uses as its handler.';
-- An event trigger runs its function without checking EXECUTE, so nobody
-- needs it; a SECURITY DEFINER function is not left executable by PUBLIC.
REVOKE ALL ON FUNCTION queue_internal.refuse_dropping_handlers() FROM PUBLIC;
CREATE EVENT TRIGGER queue_refuse_dropping_handlers ON sql_drop
  EXECUTE FUNCTION queue_internal.refuse_dropping_handlers();
COMMENT ON EVENT TRIGGER queue_refuse_dropping_handlers IS
  'Keeps the handler functions of queue consumers from being dropped.';

CREATE FUNCTION queue.subscribe(
    consumer_name      pg_catalog.text,
    queue_name         pg_catalog.text,
    handler            pg_catalog.regprocedure,
    batch_size         pg_catalog.int4 DEFAULT 10,
    batch_window       pg_catalog.interval DEFAULT '0',
    max_concurrency    pg_catalog.int4 DEFAULT 1,
    rate_limit         pg_catalog.float8 DEFAULT NULL,
    max_attempts       pg_catalog.int4 DEFAULT NULL,
    retry_backoff      pg_catalog.interval DEFAULT '1 second',
    handler_timeout    pg_catalog.interval DEFAULT '30 seconds',
    max_retry_backoff  pg_catalog.interval DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_subscribe';
COMMENT ON FUNCTION queue.subscribe(pg_catalog.text, pg_catalog.text, pg_catalog.regprocedure, pg_catalog.int4, pg_catalog.interval, pg_catalog.int4, pg_catalog.float8, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval, pg_catalog.interval) IS
  'Binds a queue to a handler function that background workers call with batches of messages, as the calling role; returns the consumer''s id.';

CREATE FUNCTION queue.alter_consumer(
    consumer_name      pg_catalog.text,
    handler            pg_catalog.regprocedure DEFAULT NULL,
    batch_size         pg_catalog.int4 DEFAULT NULL,
    batch_window       pg_catalog.interval DEFAULT NULL,
    max_concurrency    pg_catalog.int4 DEFAULT NULL,
    rate_limit         pg_catalog.float8 DEFAULT NULL,
    max_attempts       pg_catalog.int4 DEFAULT NULL,
    retry_backoff      pg_catalog.interval DEFAULT NULL,
    handler_timeout    pg_catalog.interval DEFAULT NULL,
    max_retry_backoff  pg_catalog.interval DEFAULT NULL,
    reset              pg_catalog.text[] DEFAULT NULL)
RETURNS pg_catalog.void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_alter_consumer';
COMMENT ON FUNCTION queue.alter_consumer(pg_catalog.text, pg_catalog.regprocedure, pg_catalog.int4, pg_catalog.interval, pg_catalog.int4, pg_catalog.float8, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval, pg_catalog.interval, pg_catalog.text[]) IS
  'Changes a consumer''s settings; NULL leaves a setting as it is, reset names settings to return to their defaults. Takes effect at the next batch.';

CREATE FUNCTION queue.pause(consumer_name pg_catalog.text)
RETURNS pg_catalog.void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_pause';
COMMENT ON FUNCTION queue.pause(pg_catalog.text) IS
  'Stops a consumer''s workers after their current batch; messages wait in the queue until queue.resume.';

CREATE FUNCTION queue.resume(consumer_name pg_catalog.text)
RETURNS pg_catalog.void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_resume';
COMMENT ON FUNCTION queue.resume(pg_catalog.text) IS 'Lets a paused consumer drain its queue again.';

CREATE FUNCTION queue.unsubscribe(consumer_name pg_catalog.text, if_exists pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.bool
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_unsubscribe';
COMMENT ON FUNCTION queue.unsubscribe(pg_catalog.text, pg_catalog.bool) IS
  'Drops a consumer (its workers stop after their current batch; the queue keeps its messages); false when if_exists is set and there was no such consumer.';

-- Observability -------------------------------------------------------------

CREATE FUNCTION queue.queue_stats(
    OUT queue_name          pg_catalog.text,
    OUT id                  pg_catalog.int8,
    OUT logged              pg_catalog.bool,
    OUT visibility_timeout  pg_catalog.interval,
    OUT max_attempts        pg_catalog.int4,
    OUT dead_letter_queue   pg_catalog.text,
    OUT retention           pg_catalog.interval,
    OUT messages            pg_catalog.int8,
    OUT visible             pg_catalog.int8,
    OUT in_flight           pg_catalog.int8,
    OUT delayed             pg_catalog.int8,
    OUT oldest_visible_age  pg_catalog.interval,
    OUT dead_letters        pg_catalog.int8,
    OUT sent_total          pg_catalog.int8,
    OUT acked_total         pg_catalog.int8,
    OUT dead_lettered_total pg_catalog.int8,
    OUT created_at          pg_catalog.timestamptz,
    OUT dedup_window        pg_catalog.interval,
    OUT segments            pg_catalog.int4,
    OUT bytes               pg_catalog.int8,
    OUT fifo                pg_catalog.bool,
    OUT fair                pg_catalog.bool)
RETURNS SETOF record
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_stats';
COMMENT ON FUNCTION queue.queue_stats() IS 'The rows of the view queue.queues.';

CREATE FUNCTION queue.consumer_stats(
    OUT consumer_name      pg_catalog.text,
    OUT queue_name         pg_catalog.text,
    OUT handler            pg_catalog.regprocedure,
    OUT owner              pg_catalog.regrole,
    OUT state              pg_catalog.text,
    OUT batch_size         pg_catalog.int4,
    OUT batch_window       pg_catalog.interval,
    OUT max_concurrency    pg_catalog.int4,
    OUT rate_limit         pg_catalog.float8,
    OUT max_attempts       pg_catalog.int4,
    OUT retry_backoff      pg_catalog.interval,
    OUT max_retry_backoff  pg_catalog.interval,
    OUT handler_timeout    pg_catalog.interval,
    OUT active_workers     pg_catalog.int4,
    OUT batches            pg_catalog.int8,
    OUT messages           pg_catalog.int8,
    OUT failures           pg_catalog.int8,
    OUT last_error         pg_catalog.text,
    OUT last_error_at      pg_catalog.timestamptz,
    OUT observed_rate      pg_catalog.float8,
    OUT backlog            pg_catalog.int8,
    OUT paused             pg_catalog.bool)
RETURNS SETOF record
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_consumer_stats';
COMMENT ON FUNCTION queue.consumer_stats() IS 'The rows of the view queue.consumers.';

CREATE FUNCTION queue.worker_stats(
    OUT pid               pg_catalog.int4,
    OUT consumer_name     pg_catalog.text,
    OUT queue_name        pg_catalog.text,
    OUT state             pg_catalog.text,
    OUT started_at        pg_catalog.timestamptz,
    OUT batch_started_at  pg_catalog.timestamptz,
    OUT batch_messages    pg_catalog.int4,
    OUT batches           pg_catalog.int8,
    OUT messages          pg_catalog.int8)
RETURNS SETOF record
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'queue_worker_stats';
COMMENT ON FUNCTION queue.worker_stats() IS 'The rows of the view queue.workers.';

CREATE VIEW queue.queues AS SELECT * FROM queue.queue_stats();
COMMENT ON VIEW queue.queues IS
  'One row per queue the current role may use: settings, depth and counters (totals count since server start).';

-- Privileges: nothing reaches PUBLIC by default. The message and queue
-- functions are granted to PUBLIC on purpose because each checks the caller's
-- privilege on the queue it names before it does anything; creating queues
-- is left to roles the administrator grants EXECUTE on queue.create.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA queue FROM PUBLIC;
GRANT USAGE ON SCHEMA queue TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    queue.alter(pg_catalog.text, pg_catalog.interval, pg_catalog.int4, pg_catalog.text, pg_catalog.interval, pg_catalog.text, pg_catalog.text[], pg_catalog.bool, pg_catalog.interval),
    queue.drop(pg_catalog.text, pg_catalog.bool),
    queue.purge(pg_catalog.text),
    queue.grant(pg_catalog.text, pg_catalog.text, pg_catalog.regrole),
    queue.revoke(pg_catalog.text, pg_catalog.text, pg_catalog.regrole),
    queue.send(pg_catalog.text, pg_catalog.jsonb, pg_catalog.interval, pg_catalog.jsonb, pg_catalog.text, pg_catalog.text, pg_catalog.int4),
    queue.send_batch(pg_catalog.text, pg_catalog.jsonb[], pg_catalog.interval, pg_catalog.jsonb, pg_catalog.text, pg_catalog.text[], pg_catalog.int4),
    queue.read(pg_catalog.text, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval, pg_catalog.int4),
    queue.pop(pg_catalog.text, pg_catalog.int4, pg_catalog.int4),
    queue.ack(pg_catalog.text, pg_catalog.int8, pg_catalog.int8),
    queue.ack(pg_catalog.text, pg_catalog.int8[], pg_catalog.int8[]),
    queue.nack(pg_catalog.text, pg_catalog.int8, pg_catalog.int8, pg_catalog.interval, pg_catalog.text),
    queue.set_visibility(pg_catalog.text, pg_catalog.int8, pg_catalog.int8, pg_catalog.interval),
    queue.archive(pg_catalog.text, pg_catalog.int8, pg_catalog.int8),
    queue.archived(pg_catalog.text),
    queue.redrive(pg_catalog.text, pg_catalog.text, pg_catalog.int8),
    queue.recycle(pg_catalog.text),
    queue.queue_stats(),
    queue.subscribe(pg_catalog.text, pg_catalog.text, pg_catalog.regprocedure, pg_catalog.int4, pg_catalog.interval, pg_catalog.int4, pg_catalog.float8, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval, pg_catalog.interval),
    queue.alter_consumer(pg_catalog.text, pg_catalog.regprocedure, pg_catalog.int4, pg_catalog.interval, pg_catalog.int4, pg_catalog.float8, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval, pg_catalog.interval, pg_catalog.text[]),
    queue.pause(pg_catalog.text),
    queue.resume(pg_catalog.text),
    queue.unsubscribe(pg_catalog.text, pg_catalog.bool),
    queue.consumer_stats(),
    queue.worker_stats()
  TO PUBLIC;
CREATE VIEW queue.consumers AS SELECT * FROM queue.consumer_stats();
COMMENT ON VIEW queue.consumers IS
  'One row per consumer of a queue the current role may read (or owns): settings, state, workers and counters since server start; observed_rate is messages per second over the last ten seconds.';

CREATE VIEW queue.workers AS SELECT * FROM queue.worker_stats();
COMMENT ON VIEW queue.workers IS
  'One row per drain worker running in this database for a queue the current role may read, with its current batch.';

GRANT SELECT ON queue.queues TO PUBLIC;
GRANT SELECT ON queue.consumers, queue.workers TO PUBLIC;
