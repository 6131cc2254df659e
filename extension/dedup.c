/*
 * dedup.c
 *    Deduplication keys: send(..., dedup_key) within a queue's dedup_window
 *    returns the id of the first message sent with that key instead of
 *    enqueuing again.
 *
 * Keys live in two tables shared by all queues, queue_internal.dedup for
 * durable queues and queue_internal.dedup_unlogged for unlogged ones (whose
 * keys must vanish in a crash together with their messages), keyed by
 * (queue_id, key).  A send reserves its key with INSERT ... ON CONFLICT:
 * the unique index makes a concurrent send of the same key wait for the
 * first one's transaction; if that commits, the second finds the key taken
 * and returns the first one's id; if it rolls back, the second goes ahead.
 * An expired key is taken over by the next send.  Maintenance deletes the
 * expired keys (maintain.c).
 *
 * The statements take the queue id as a parameter, so a few plans kept by
 * this file serve every queue.  Callers are in the owner context.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue.h"

typedef enum DedupStatement
{
	DEDUP_RESERVE,				/* $1 queue, $2 key, $3 expires_at, $4 now */
	DEDUP_LOOKUP,				/* $1 queue, $2 key */
	DEDUP_PRUNE,				/* $1 queue, $2 now */
	DEDUP_FORGET,				/* $1 queue */
	DEDUP__COUNT
} DedupStatement;

static const char *const dedup_sql[DEDUP__COUNT] = {
	[DEDUP_RESERVE] =
	"INSERT INTO queue_internal.%s AS d (queue_id, key, message_id, expires_at)"
	" VALUES ($1, $2, nextval('queue_internal.message_id_seq'), $3)"
	" ON CONFLICT (queue_id, key) DO UPDATE"
	" SET message_id = excluded.message_id, expires_at = excluded.expires_at"
	" WHERE d.expires_at <= $4 RETURNING message_id",
	[DEDUP_LOOKUP] =
	"SELECT message_id FROM queue_internal.%s WHERE queue_id = $1 AND key = $2",
	[DEDUP_PRUNE] =
	"DELETE FROM queue_internal.%s WHERE queue_id = $1 AND expires_at <= $2",
	[DEDUP_FORGET] =
	"DELETE FROM queue_internal.%s WHERE queue_id = $1",
};

static const Oid dedup_types[DEDUP__COUNT][4] = {
	[DEDUP_RESERVE] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	[DEDUP_LOOKUP] = {INT8OID, TEXTOID},
	[DEDUP_PRUNE] = {INT8OID, TIMESTAMPTZOID},
	[DEDUP_FORGET] = {INT8OID},
};

static const int dedup_nargs[DEDUP__COUNT] = {4, 2, 2, 1};

static SPIPlanPtr plans[2][DEDUP__COUNT];	/* [logged][statement] */

static uint64
run(bool logged, DedupStatement stmt, Datum *args)
{
	SPIPlanPtr *plan = &plans[logged ? 1 : 0][stmt];
	int			rc;

	if (*plan == NULL)
		*plan = keep_plan(psprintf(dedup_sql[stmt], logged ? "dedup" : "dedup_unlogged"),
						  dedup_nargs[stmt], (Oid *) dedup_types[stmt]);
	rc = SPI_execute_plan(*plan, args, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "dedup statement failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

static int64
first_int8(void)
{
	bool		isnull;

	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Reserves a key for a new message.  Returns true with the new message's id
 * in *id, or false with the id of the message already sent with the key
 * within the window.
 */
bool
dedup_reserve(const QueueMeta *meta, Datum key, TimestampTz now, int64 *id)
{
	Datum		args[4];

	args[0] = Int64GetDatum(meta->id);
	args[1] = key;
	args[2] = TimestampTzGetDatum(now + meta->dedup_window_usecs);
	args[3] = TimestampTzGetDatum(now);
	if (run(meta->logged, DEDUP_RESERVE, args) > 0)
	{
		*id = first_int8();
		return true;
	}
	/* the key is taken and not expired; its holder has committed */
	if (run(meta->logged, DEDUP_LOOKUP, args) == 0)
		elog(ERROR, "dedup key of queue \"%s\" vanished", meta->name);
	*id = first_int8();
	return false;
}

/* Deletes a queue's expired keys. */
void
dedup_prune(int64 queue_id, bool logged)
{
	Datum		args[2];

	args[0] = Int64GetDatum(queue_id);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	run(logged, DEDUP_PRUNE, args);
}

/* Deletes all of a queue's keys (queue.drop). */
void
dedup_forget(int64 queue_id, bool logged)
{
	Datum		arg = Int64GetDatum(queue_id);

	run(logged, DEDUP_FORGET, &arg);
}

/* Moves a queue's keys along when the queue becomes logged or unlogged. */
void
dedup_set_logged(int64 queue_id, bool logged)
{
	Datum		arg = Int64GetDatum(queue_id);
	Oid			type = INT8OID;
	char	   *sql = psprintf("WITH moved AS (DELETE FROM queue_internal.%s WHERE queue_id = $1"
							   " RETURNING queue_id, key, message_id, expires_at)"
							   " INSERT INTO queue_internal.%s SELECT * FROM moved",
							   logged ? "dedup_unlogged" : "dedup",
							   logged ? "dedup" : "dedup_unlogged");

	if (SPI_execute_with_args(sql, 1, &type, &arg, NULL, false, 0) < 0)
		elog(ERROR, "could not move the dedup keys of queue %lld", (long long) queue_id);
}
