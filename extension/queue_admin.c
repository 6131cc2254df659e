/*
 * queue_admin.c
 *    The queue API: create, alter, drop, purge, grant, revoke, redrive and
 *    the rows of the view queue.queues.
 *
 * None of these is on a hot path.  Each validates every argument before it
 * changes anything, checks the caller's privilege, then changes the catalog
 * and the queue's tables as the extension's owner and tells every backend
 * that the catalog changed (catalog_changed).
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "queue.h"

#define DEFAULT_VISIBILITY_USECS	(30 * USECS_PER_SEC)

PG_FUNCTION_INFO_V1(queue_create);
PG_FUNCTION_INFO_V1(queue_alter);
PG_FUNCTION_INFO_V1(queue_drop);
PG_FUNCTION_INFO_V1(queue_purge);
PG_FUNCTION_INFO_V1(queue_grant);
PG_FUNCTION_INFO_V1(queue_revoke);
PG_FUNCTION_INFO_V1(queue_redrive);
PG_FUNCTION_INFO_V1(queue_stats);
PG_FUNCTION_INFO_V1(queue_recycle);

/* A queue's settings as create and alter assemble them. */
typedef struct QueueSettings
{
	int64		visibility_usecs;
	int32		max_attempts;	/* 0: none */
	const QueueMeta *dead_letter;	/* NULL: none */
	int64		retention_usecs;	/* -1: none */
	int64		dedup_window_usecs;
} QueueSettings;

/* The dead-letter queue named by an argument: it must exist and take sends from the caller. */
static const QueueMeta *
dead_letter_arg(FunctionCallInfo fcinfo, int argno, const char *own_name)
{
	char	   *name = queue_name_arg(fcinfo, argno, "dead_letter_queue");

	if (own_name != NULL && strcmp(name, own_name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a queue cannot be its own dead-letter queue")));
	/* locked, so that a concurrent drop either waits or is seen */
	return queue_open(fcinfo, argno, "dead_letter_queue", QUEUE_PRIV_SEND);
}

static void
check_settings(const QueueSettings *s)
{
	if (s->max_attempts > 0 && s->dead_letter == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts needs a dead_letter_queue"),
				 errdetail("A message read more than max_attempts times moves to the dead-letter queue; without one it would have nowhere to go."),
				 errhint("Create a queue for dead letters and pass it as dead_letter_queue.")));
}

/*
 * Fills parameters $3 to $6 of the catalog statements of create and alter
 * with the settings: visibility_timeout, max_attempts, dead_letter_queue,
 * retention, and $8 with dedup_window.
 */
static void
settings_params(const QueueSettings *s, Datum *values, char *nulls)
{
	values[2] = usecs_interval(s->visibility_usecs);
	values[3] = Int32GetDatum(s->max_attempts);
	nulls[3] = s->max_attempts > 0 ? ' ' : 'n';
	values[4] = Int64GetDatum(s->dead_letter ? s->dead_letter->id : 0);
	nulls[4] = s->dead_letter ? ' ' : 'n';
	values[5] = usecs_interval(s->retention_usecs);
	nulls[5] = s->retention_usecs >= 0 ? ' ' : 'n';
	values[7] = usecs_interval(s->dedup_window_usecs);
}

static int64
dedup_window_arg(FunctionCallInfo fcinfo, int argno)
{
	return interval_arg_usecs(fcinfo, argno, "dedup_window", QUEUE_MIN_DEDUP_WINDOW_USECS,
							  QUEUE_MAX_DELAY_USECS, -1);
}

static void
refuse_duplicate(const char *name)
{
	if (queue_lookup(name, true) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("queue \"%s\" already exists", name)));
}

/*
 * queue.create(queue_name, logged, visibility_timeout, max_attempts,
 *				dead_letter_queue, retention, dedup_window, fifo, fair)
 */
Datum
queue_create(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		logged;
	QueueSettings s = {0};
	Oid			owner = GetUserId();
	bool		fifo;
	bool		fair;
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[10] = {TEXTOID, BOOLOID, INTERVALOID, INT4OID, INT8OID, INTERVALOID, OIDOID,
	INTERVALOID, BOOLOID, BOOLOID};
	bool		isnull;
	int64		id;
	OwnerContext ctx;

	require_writable(fcinfo);
	require_preloaded();
	name = queue_name_arg(fcinfo, 0, "queue_name");
	require_not_null(fcinfo, 1, "logged");
	logged = PG_GETARG_BOOL(1);
	s.visibility_usecs = interval_arg_usecs(fcinfo, 2, "visibility_timeout", 0,
											QUEUE_MAX_VISIBILITY_USECS, -1);
	s.max_attempts = PG_ARGISNULL(3) ? 0 : max_attempts_arg(fcinfo, 3);
	s.dead_letter = PG_ARGISNULL(4) ? NULL : dead_letter_arg(fcinfo, 4, name);
	s.retention_usecs = PG_ARGISNULL(5) ? -1 :
		interval_arg_usecs(fcinfo, 5, "retention", 0, QUEUE_MAX_RETENTION_USECS, -1);
	s.dedup_window_usecs = PG_ARGISNULL(6) ? QUEUE_DEFAULT_DEDUP_WINDOW_USECS :
		dedup_window_arg(fcinfo, 6);
	require_not_null(fcinfo, 7, "fifo");
	fifo = PG_GETARG_BOOL(7);
	require_not_null(fcinfo, 8, "fair");
	fair = PG_GETARG_BOOL(8);
	check_settings(&s);
	/* concurrent creates of one name wait here, then see each other */
	LockRelationOid(catalog_relid(), ShareRowExclusiveLock);
	refuse_duplicate(name);

	values[0] = CStringGetTextDatum(name);
	values[1] = BoolGetDatum(logged);
	settings_params(&s, values, nulls);
	values[6] = ObjectIdGetDatum(owner);
	values[8] = BoolGetDatum(fifo);
	values[9] = BoolGetDatum(fair);

	owner_context_enter(&ctx);
	run_sql("INSERT INTO queue_internal.queue"
			" (name, logged, visibility_timeout, max_attempts, dead_letter_queue, retention, owner,"
			" dedup_window, fifo, fair) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
			10, types, values, nulls);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	storage_create_tables(id, logged, fifo, fair);
	catalog_changed();
	owner_context_exit(&ctx);
	pending_created(id);
	PG_RETURN_INT64(id);
}

/* Applies one name of alter's reset array to the settings. */
static void
reset_setting(QueueSettings *s, const char *setting)
{
	if (strcmp(setting, "visibility_timeout") == 0)
		s->visibility_usecs = DEFAULT_VISIBILITY_USECS;
	else if (strcmp(setting, "max_attempts") == 0)
		s->max_attempts = 0;
	else if (strcmp(setting, "dead_letter_queue") == 0)
		s->dead_letter = NULL;
	else if (strcmp(setting, "retention") == 0)
		s->retention_usecs = -1;
	else if (strcmp(setting, "dedup_window") == 0)
		s->dedup_window_usecs = QUEUE_DEFAULT_DEDUP_WINDOW_USECS;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot reset unknown setting \"%s\"", setting),
				 errhint("Settings that can be reset are visibility_timeout, max_attempts, dead_letter_queue, retention and dedup_window.")));
}

/*
 * Refuses (2BP01) when the query, given the queue's id, finds the name of
 * something that depends on the queue; message has a %s for the queue's
 * name, then one for that name.  The caller is in the owner context.
 */
static void
refuse_if_depended_on(const QueueMeta *meta, const char *query, const char *message,
					  const char *hint)
{
	Oid			type = INT8OID;
	Datum		id = Int64GetDatum(meta->id);

	run_sql(query, 1, &type, &id, NULL);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg(message, meta->name,
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("%s", hint)));
}

/* A consumer with its own max_attempts needs the queue's dead-letter queue. */
static void
refuse_if_consumer_dead_letters(const QueueMeta *meta)
{
	OwnerContext ctx;

	owner_context_enter(&ctx);
	refuse_if_depended_on(meta, "SELECT name FROM queue_internal.consumer WHERE queue_id = $1"
						  " AND max_attempts IS NOT NULL ORDER BY name LIMIT 1",
						  "cannot remove the dead-letter queue of queue \"%s\" because consumer \"%s\" has max_attempts",
						  "Reset the consumer's max_attempts with queue.alter_consumer() first.");
	owner_context_exit(&ctx);
}

/*
 * queue.alter(queue_name, visibility_timeout, max_attempts, dead_letter_queue,
 *			   retention, rename_to, reset, logged, dedup_window)
 */
Datum
queue_alter(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_ADMIN);
	QueueSettings s;
	const char *new_name = meta->name;
	bool		logged = PG_ARGISNULL(7) ? meta->logged : PG_GETARG_BOOL(7);
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[8] = {INT8OID, TEXTOID, INTERVALOID, INT4OID, INT8OID, INTERVALOID, BOOLOID,
	INTERVALOID};
	OwnerContext ctx;

	require_writable(fcinfo);
	s.visibility_usecs = meta->visibility_usecs;
	s.max_attempts = meta->max_attempts;
	s.dead_letter = meta->dead_letter_id ? queue_lookup_by_id(meta->dead_letter_id) : NULL;
	s.retention_usecs = meta->retention_usecs;
	s.dedup_window_usecs = meta->dedup_window_usecs;

	if (!PG_ARGISNULL(6))
	{
		int			n;
		char	  **names = reset_names_arg(fcinfo, 6, &n);

		for (int i = 0; i < n; i++)
			reset_setting(&s, names[i]);
	}
	if (!PG_ARGISNULL(1))
		s.visibility_usecs = interval_arg_usecs(fcinfo, 1, "visibility_timeout", 0,
												QUEUE_MAX_VISIBILITY_USECS, -1);
	if (!PG_ARGISNULL(2))
		s.max_attempts = max_attempts_arg(fcinfo, 2);
	if (!PG_ARGISNULL(3))
		s.dead_letter = dead_letter_arg(fcinfo, 3, meta->name);
	if (!PG_ARGISNULL(4))
		s.retention_usecs = interval_arg_usecs(fcinfo, 4, "retention", 0,
											   QUEUE_MAX_RETENTION_USECS, -1);
	if (!PG_ARGISNULL(5))
	{
		new_name = queue_name_arg(fcinfo, 5, "rename_to");
		if (strcmp(new_name, meta->name) != 0)
		{
			/* as in create: concurrent claims of one name wait, then see each other */
			LockRelationOid(catalog_relid(), ShareRowExclusiveLock);
			refuse_duplicate(new_name);
		}
	}
	if (!PG_ARGISNULL(8))
		s.dedup_window_usecs = dedup_window_arg(fcinfo, 8);
	check_settings(&s);
	if (s.dead_letter == NULL && meta->dead_letter_id != 0)
		refuse_if_consumer_dead_letters(meta);

	values[0] = Int64GetDatum(meta->id);
	values[1] = CStringGetTextDatum(new_name);
	settings_params(&s, values, nulls);
	values[6] = BoolGetDatum(logged);

	owner_context_enter(&ctx);
	if (logged != meta->logged)
	{
		storage_set_logged(meta->id, logged);
		dedup_set_logged(meta->id, logged);
	}
	run_sql("UPDATE queue_internal.queue SET name = $2, visibility_timeout = $3,"
			" max_attempts = $4, dead_letter_queue = $5, retention = $6, logged = $7,"
			" dedup_window = $8"
			" WHERE id = $1",
			8, types, values, nulls);
	catalog_changed();
	owner_context_exit(&ctx);
	PG_RETURN_VOID();
}

/* Refuses to drop a queue that another queue uses as its dead-letter queue. */
static void
refuse_if_dead_letter_target(const QueueMeta *meta)
{
	refuse_if_depended_on(meta, "SELECT name FROM queue_internal.queue"
						  " WHERE dead_letter_queue = $1 ORDER BY name LIMIT 1",
						  "cannot drop queue \"%s\" because queue \"%s\" uses it as its dead-letter queue",
						  "Change that queue's dead_letter_queue with queue.alter() first.");
}

/* A queue a consumer drains stays until the consumer is gone. */
static void
refuse_if_consumed(const QueueMeta *meta)
{
	refuse_if_depended_on(meta, "SELECT name FROM queue_internal.consumer"
						  " WHERE queue_id = $1 ORDER BY name LIMIT 1",
						  "cannot drop queue \"%s\" because consumer \"%s\" drains it",
						  "Drop the consumer with queue.unsubscribe() first.");
}

/* queue.drop(queue_name, if_exists) returns boolean */
Datum
queue_drop(PG_FUNCTION_ARGS)
{
	char	   *name;
	const QueueMeta *meta;
	bool		if_exists = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	Oid			type = INT8OID;
	Datum		id;
	OwnerContext ctx;

	require_writable(fcinfo);
	require_preloaded();
	name = queue_name_arg(fcinfo, 0, "queue_name");
	meta = queue_lookup(name, if_exists);
	/* waits for the queue's users; a concurrent drop that won leaves nothing */
	if (meta != NULL)
		meta = queue_lock(meta, AccessExclusiveLock);
	if (meta == NULL && !if_exists)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", name)));
	if (meta == NULL)
	{
		ereport(NOTICE,
				(errmsg("queue \"%s\" does not exist, skipping", name)));
		PG_RETURN_BOOL(false);
	}
	queue_require_privilege(meta, QUEUE_PRIV_ADMIN);
	id = Int64GetDatum(meta->id);

	owner_context_enter(&ctx);
	refuse_if_dead_letter_target(meta);
	refuse_if_consumed(meta);
	storage_drop_tables(meta->id);
	dedup_forget(meta->id, meta->logged);
	run_sql("DELETE FROM queue_internal.queue WHERE id = $1", 1, &type, &id, NULL);
	catalog_changed();
	owner_context_exit(&ctx);
	pending_dropped(meta->id);
	PG_RETURN_BOOL(true);
}

/* queue.purge(queue_name) returns bigint */
Datum
queue_purge(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_ADMIN);
	int64		purged;
	OwnerContext ctx;

	require_writable(fcinfo);
	owner_context_enter(&ctx);
	purged = storage_truncate(meta->id);
	owner_context_exit(&ctx);
	pending_purged(meta->id);
	PG_RETURN_INT64(purged);
}

/* The privilege mask an argument of grant or revoke names. */
static int
privilege_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *priv;

	require_not_null(fcinfo, argno, "privilege");
	priv = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(priv, "send") == 0)
		return QUEUE_PRIV_SEND;
	if (strcmp(priv, "read") == 0)
		return QUEUE_PRIV_READ;
	if (strcmp(priv, "administer") == 0)
		return QUEUE_PRIV_ADMIN;
	if (strcmp(priv, "all") == 0)
		return QUEUE_PRIV_SEND | QUEUE_PRIV_READ | QUEUE_PRIV_ADMIN;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown queue privilege \"%s\"", priv),
			 errhint("Use send, read, administer or all.")));
	return 0;					/* keep the compiler quiet */
}

/* Adds a role to, or removes it from, the grant lists the mask names. */
static void
change_grants(FunctionCallInfo fcinfo, bool grant)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_ADMIN);
	int			privs = privilege_arg(fcinfo, 1);
	Datum		values[5];
	Oid			types[5] = {INT8OID, OIDOID, BOOLOID, BOOLOID, BOOLOID};
	OwnerContext ctx;

	require_not_null(fcinfo, 2, "role");
	values[0] = Int64GetDatum(meta->id);
	values[1] = PG_GETARG_DATUM(2);
	values[2] = BoolGetDatum((privs & QUEUE_PRIV_SEND) != 0);
	values[3] = BoolGetDatum((privs & QUEUE_PRIV_READ) != 0);
	values[4] = BoolGetDatum((privs & QUEUE_PRIV_ADMIN) != 0);

	owner_context_enter(&ctx);
	if (grant)
		run_sql("UPDATE queue_internal.queue SET"
				" senders = CASE WHEN $3 THEN array_append(array_remove(senders, $2), $2) ELSE senders END,"
				" readers = CASE WHEN $4 THEN array_append(array_remove(readers, $2), $2) ELSE readers END,"
				" admins = CASE WHEN $5 THEN array_append(array_remove(admins, $2), $2) ELSE admins END"
				" WHERE id = $1", 5, types, values, NULL);
	else
		run_sql("UPDATE queue_internal.queue SET"
				" senders = CASE WHEN $3 THEN array_remove(senders, $2) ELSE senders END,"
				" readers = CASE WHEN $4 THEN array_remove(readers, $2) ELSE readers END,"
				" admins = CASE WHEN $5 THEN array_remove(admins, $2) ELSE admins END"
				" WHERE id = $1", 5, types, values, NULL);
	catalog_changed();
	owner_context_exit(&ctx);
}

/* queue.grant(queue_name, privilege, role) */
Datum
queue_grant(PG_FUNCTION_ARGS)
{
	require_writable(fcinfo);
	change_grants(fcinfo, true);
	PG_RETURN_VOID();
}

/* queue.revoke(queue_name, privilege, role) */
Datum
queue_revoke(PG_FUNCTION_ARGS)
{
	require_writable(fcinfo);
	change_grants(fcinfo, false);
	PG_RETURN_VOID();
}

/* Moves up to limit dead letters from dlq to target; any_origin or only target's own. */
static int64
redrive_to(const QueueMeta *dlq, const QueueMeta *target, bool any_origin, int64 limit)
{
	Datum		args[3];
	int64		moved;
	OwnerContext ctx;

	queue_require_privilege(target, QUEUE_PRIV_SEND);
	args[0] = BoolGetDatum(any_origin);
	args[1] = Int64GetDatum(limit);
	args[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	owner_context_enter(&ctx);
	moved = (int64) storage_move(STMT_REDRIVE, dlq->id, target->id, args, NULL);
	owner_context_exit(&ctx);
	if (moved > 0)
		pending_moved(dlq->id, target->id, moved);
	return moved;
}

/* The distinct origins of the dead letters in a queue, oldest first. */
static List *
dead_letter_origins(const QueueMeta *dlq)
{
	List	   *origins = NIL;
	MemoryContext caller = CurrentMemoryContext;
	OwnerContext ctx;

	owner_context_enter(&ctx);
	run_sql(psprintf("SELECT origin FROM queue_internal.q%lld WHERE origin IS NOT NULL"
					 " GROUP BY origin ORDER BY min(id)", (long long) dlq->id),
			0, NULL, NULL, NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		origin = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContext spi = MemoryContextSwitchTo(caller);
		int64	   *p = palloc(sizeof(int64));

		*p = origin;
		origins = lappend(origins, p);
		MemoryContextSwitchTo(spi);
	}
	owner_context_exit(&ctx);
	return origins;
}

/* queue.redrive(dead_letter_queue, target, max_messages) returns bigint */
Datum
queue_redrive(PG_FUNCTION_ARGS)
{
	const QueueMeta *dlq = queue_open(fcinfo, 0, "dead_letter_queue", QUEUE_PRIV_ADMIN);
	int64		limit = PG_INT64_MAX;
	int64		moved = 0;
	ListCell   *lc;

	require_writable(fcinfo);
	if (!PG_ARGISNULL(2))
	{
		limit = PG_GETARG_INT64(2);
		if (limit < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_messages must be at least 1"),
					 errdetail("The value given was " INT64_FORMAT ".", limit)));
	}
	if (!PG_ARGISNULL(1))
	{
		const QueueMeta *target = queue_open(fcinfo, 1, "target", QUEUE_PRIV_SEND);

		if (target->id == dlq->id)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot redrive a queue into itself")));
		PG_RETURN_INT64(redrive_to(dlq, target, true, limit));
	}

	foreach(lc, dead_letter_origins(dlq))
	{
		const QueueMeta *origin = queue_lookup_by_id(*(int64 *) lfirst(lc));

		if (moved >= limit)
			break;
		/* locked against a drop, like every queue a call writes to */
		if (origin != NULL)
			origin = queue_lock(origin, AccessShareLock);
		if (origin == NULL)
		{
			ereport(NOTICE,
					(errmsg("some dead letters stay in \"%s\": the queue they came from was dropped", dlq->name),
					 errhint("Move them with queue.redrive('%s', target => ...).", dlq->name)));
			continue;
		}
		moved += redrive_to(dlq, origin, false, limit - moved);
	}
	PG_RETURN_INT64(moved);
}

/*
 * Takes (lock: only when every one can be had at once) or releases a SHARE
 * lock on each of a queue's segment tables: writers lock the segment they
 * write, not the parent.
 */
static bool
lock_segments(int64 queue_id, bool lock)
{
	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
	{
		Oid			relid = segment_relid(queue_id, seg);

		if (!lock)
			UnlockRelationOid(relid, ShareLock);
		else if (!ConditionalLockRelationOid(relid, ShareLock))
		{
			while (--seg >= 0)
				UnlockRelationOid(segment_relid(queue_id, seg), ShareLock);
			return false;
		}
	}
	return true;
}

/*
 * Counts a queue's messages, and its hidden ones by second, once per server
 * start (a queue created since starts counted), under a lock that keeps writers out (see counters_set_initial).
 * The lock is only tried: when a writer holds the queue, the count waits for
 * a later call, and the view shows NULL meanwhile.  A transaction snapshot
 * older than the lock would miss commits, so REPEATABLE READ and
 * SERIALIZABLE callers never count.
 */
void
queue_count_once(const QueueMeta *meta)
{
	Oid			relid;
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	int64		messages;
	int			nseconds;
	int64	   *seconds;
	int32	   *in_flight;
	int32	   *delayed;

	/* a standby cannot take the lock, and replay does not move the counters */
	if (IsolationUsesXactSnapshot() || pending_touches(meta->id) || RecoveryInProgress())
		return;
	relid = storage_relid(meta->id);
	if (!OidIsValid(relid) || !lock_segments(meta->id, true))
		return;
	messages = storage_count(meta->id);
	SPI_execute_plan(storage_plan(STMT_COUNT_HIDDEN, meta->id, 0), &now, NULL, false, 0);
	nseconds = (int) SPI_processed;
	seconds = palloc(sizeof(int64) * Max(nseconds, 1));
	in_flight = palloc(sizeof(int32) * Max(nseconds, 1));
	delayed = palloc(sizeof(int32) * Max(nseconds, 1));
	for (int i = 0; i < nseconds; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		unix_second = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));

		seconds[i] = unix_second - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
		in_flight[i] = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		delayed[i] = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
	}
	counters_set_initial(meta->id, messages, nseconds, seconds, in_flight, delayed);
	(void) lock_segments(meta->id, false);
}

/* Appends one row of queue.queues; every figure but the oldest age is a counter. */
static void
stats_row(ReturnSetInfo *rsinfo, const QueueMeta *meta, HeapTuple cat, TupleDesc catdesc)
{
	Datum		values[22];
	bool		nulls[22] = {0};
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz oldest;
	QueueCounters c;
	int32		segments;

	/* settings, as the catalog row has them: name, id, logged, ..., created_at */
	for (int i = 0; i < 7; i++)
		values[i] = SPI_getbinval(cat, catdesc, i + 1, &nulls[i]);
	values[16] = SPI_getbinval(cat, catdesc, 8, &nulls[16]);
	values[17] = usecs_interval(meta->dedup_window_usecs);

	c = counters_read(meta->id);
	values[7] = Int64GetDatum(c.messages);
	nulls[7] = !c.messages_known;
	values[8] = Int64GetDatum(c.messages - c.in_flight - c.delayed);
	nulls[8] = !(c.messages_known && c.hidden_known);
	values[9] = Int64GetDatum(c.in_flight);
	values[10] = Int64GetDatum(c.delayed);
	nulls[9] = nulls[10] = !c.hidden_known;

	nulls[11] = !storage_first_visible(meta->id, now, &oldest);
	if (!nulls[11])
		values[11] = DirectFunctionCall2(timestamp_mi, TimestampTzGetDatum(now),
										 TimestampTzGetDatum(oldest));

	/* dead letters: what waits in the queue's dead-letter queue */
	nulls[12] = true;
	if (meta->dead_letter_id != 0)
	{
		QueueCounters dead = counters_read(meta->dead_letter_id);

		values[12] = Int64GetDatum(dead.messages);
		nulls[12] = !dead.messages_known;
	}

	values[13] = Int64GetDatum(c.sent);
	values[14] = Int64GetDatum(c.acked);
	values[15] = Int64GetDatum(c.dead);
	nulls[13] = nulls[14] = nulls[15] = !c.tracked;

	/* storage: live segments (from shared memory) and bytes on disk */
	nulls[18] = !segment_count(meta->id, &segments);
	values[18] = Int32GetDatum(segments);
	values[19] = Int64GetDatum(storage_bytes(meta->id));
	values[20] = BoolGetDatum(meta->fifo);
	values[21] = BoolGetDatum(meta->fair);

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * The rows of queue.queues, for the queues the caller holds any privilege
 * on, in name order (so a dead-letter queue is often counted after the
 * queues that use it: its dead_letters figure may show NULL until then).
 */
Datum
queue_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPITupleTable *catalog;
	const QueueMeta **shown;
	Oid			owner;
	int			owner_sec_context;
	OwnerContext ctx;

	require_preloaded();
	InitMaterializedSRF(fcinfo, 0);

	owner_context_enter(&ctx);
	run_sql("SELECT q.name, q.id, q.logged, q.visibility_timeout, q.max_attempts, d.name,"
			" q.retention, q.created_at"
			" FROM queue_internal.queue q LEFT JOIN queue_internal.queue d ON d.id = q.dead_letter_queue"
			" ORDER BY q.name", 0, NULL, NULL, NULL);
	catalog = SPI_tuptable;
	SPI_tuptable = NULL;		/* keep it past the next statements */

	/*
	 * The queues the caller may see: the privilege check must see the
	 * caller, not the owner.  Only those are counted (under a brief lock) and
	 * shown; all are counted before any row is built, so that a row can show
	 * its dead-letter queue's depth even when that queue's row comes later.
	 */
	shown = palloc0(sizeof(QueueMeta *) * Max(catalog->numvals, 1));
	GetUserIdAndSecContext(&owner, &owner_sec_context);
	SetUserIdAndSecContext(ctx.saved_userid, ctx.saved_sec_context);
	for (uint64 i = 0; i < catalog->numvals; i++)
	{
		const QueueMeta *meta = queue_lookup(SPI_getvalue(catalog->vals[i], catalog->tupdesc, 1), true);

		/* a queue dropped since the catalog was read is not shown */
		if (meta != NULL)
			meta = queue_lock(meta, AccessShareLock);
		if (meta != NULL && (queue_has_privilege(meta, QUEUE_PRIV_SEND) ||
							 queue_has_privilege(meta, QUEUE_PRIV_READ)))
			shown[i] = meta;
	}
	SetUserIdAndSecContext(owner, owner_sec_context);

	for (uint64 i = 0; i < catalog->numvals; i++)
	{
		QueueCounters c;

		if (shown[i] == NULL)
			continue;
		c = counters_read(shown[i]->id);
		if (c.tracked && !(c.messages_known && c.hidden_known))
			queue_count_once(shown[i]);
	}
	for (uint64 i = 0; i < catalog->numvals; i++)
	{
		if (shown[i] != NULL)
			stats_row(rsinfo, shown[i], catalog->vals[i], catalog->tupdesc);
	}
	owner_context_exit(&ctx);
	PG_RETURN_NULL();
}

/*
 * queue.recycle(queue_name) returns integer: recycles the queue's oldest
 * segment when it is drained and its lock can be had at once, then starts a
 * new segment when the current one holds anything.  Returns how many
 * segments it recycled (0 or 1).  Copying a segment's rows forward must see
 * every commit made before its lock, so a transaction snapshot is refused.
 */
Datum
queue_recycle(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_ADMIN);
	int			recycled;
	OwnerContext ctx;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot recycle a queue in a %s transaction",
						XactIsoLevel == XACT_SERIALIZABLE ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("Recycling copies a segment's last messages with a snapshot taken after its lock."),
				 errhint("Call queue.recycle in a READ COMMITTED transaction.")));
	require_writable(fcinfo);
	owner_context_enter(&ctx);
	recycled = storage_maintain(meta->id, true);
	owner_context_exit(&ctx);
	PG_RETURN_INT32(recycled);
}
