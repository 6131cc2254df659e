/*
 * consumer.c
 *    Consumers: the SQL API that binds a queue to a handler function
 *    (subscribe, alter_consumer, pause, resume, unsubscribe) and the consumer
 *    catalog queue_internal.consumer as the workers read it (the views are
 *    in consumer_views.c).
 *
 * A consumer runs as the role that subscribed it (its owner), so
 * subscribing needs the read privilege on the queue and EXECUTE on the
 * handler, and the owner must be able to log in (drain workers connect as
 * it).  A superuser owner is refused unless queue.allow_superuser_consumers
 * is on: a handler run as superuser can do anything.  The owner, the
 * superuser and the queue's administrators may pause, resume, change and
 * unsubscribe a consumer; only the owner (or the superuser) may give it
 * another handler, which will run as the owner.
 *
 * A change takes effect when it commits: the transaction then asks the
 * launcher for a survey of this database (registry.c), and the consumer's
 * workers re-read their row before every batch.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/regproc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "queue.h"

PG_FUNCTION_INFO_V1(queue_subscribe);
PG_FUNCTION_INFO_V1(queue_alter_consumer);
PG_FUNCTION_INFO_V1(queue_pause);
PG_FUNCTION_INFO_V1(queue_resume);
PG_FUNCTION_INFO_V1(queue_unsubscribe);

#define DEFAULT_BATCH_SIZE			10
#define DEFAULT_MAX_CONCURRENCY		1
#define DEFAULT_RETRY_BACKOFF		(INT64CONST(1) * USECS_PER_SEC)
#define DEFAULT_MAX_RETRY_BACKOFF	(INT64CONST(5) * USECS_PER_MINUTE)
#define DEFAULT_HANDLER_TIMEOUT		(INT64CONST(30) * USECS_PER_SEC)
#define MAX_BATCH_WINDOW			(INT64CONST(5) * USECS_PER_MINUTE)
#define MAX_CONCURRENCY				1000
#define MAX_RATE_LIMIT				1000000.0
/* a failing message retried at once would keep a worker spinning */
#define MIN_RETRY_BACKOFF			(INT64CONST(10) * 1000)

#define CONSUMER_COLUMNS "id, name, queue_id, handler, owner, batch_size, batch_window," \
	" max_concurrency, rate_limit, max_attempts, retry_backoff, max_retry_backoff," \
	" handler_timeout, paused, created_at"

static bool maintain_at_commit = false;
static bool xact_callback_registered = false;

static void
consumer_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (!maintain_at_commit)
		return;
	/* at PREPARE too: COMMIT PREPARED runs no callback of ours */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
		registry_request_maintenance(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		maintain_at_commit = false;
}

/* The launcher re-reads this database's consumers when the change commits. */
static void
consumers_changed(int64 queue_id)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(consumer_xact_callback, NULL);
		xact_callback_registered = true;
	}
	maintain_at_commit = true;
	/* idle workers of the queue wake up and re-read their settings */
	pending_wake(queue_id);
}

Oid
consumer_catalog_relid(void)
{
	Oid			nsp = get_namespace_oid(QUEUE_INTERNAL_SCHEMA, false);

	return get_relname_relid("consumer", nsp);
}

static int64
interval_column(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? 0 : interval_usecs(DatumGetIntervalP(d), "interval");
}

static void
config_from_tuple(HeapTuple tup, TupleDesc desc, ConsumerConfig *c)
{
	bool		isnull;
	Datum		d;

	memset(c, 0, sizeof(*c));
	c->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	strlcpy(c->name, TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)), NAMEDATALEN);
	c->queue_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	c->handler = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	c->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	c->batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	c->batch_window_usecs = interval_column(tup, desc, 7);
	c->max_concurrency = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	d = SPI_getbinval(tup, desc, 9, &isnull);
	c->rate_limit = isnull ? 0 : DatumGetFloat8(d);
	d = SPI_getbinval(tup, desc, 10, &isnull);
	c->max_attempts = isnull ? 0 : DatumGetInt32(d);
	c->retry_backoff_usecs = interval_column(tup, desc, 11);
	c->max_retry_backoff_usecs = interval_column(tup, desc, 12);
	c->handler_timeout_usecs = interval_column(tup, desc, 13);
	c->paused = DatumGetBool(SPI_getbinval(tup, desc, 14, &isnull));
	c->created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 15, &isnull));
}

/*
 * Loads the consumer with id only_id, or (only_id = 0) every consumer, into
 * *configs (allocated in the memory context that was current when SPI was
 * connected); returns how many.  The caller is in the owner context.
 */
int
consumer_catalog_load(int64 only_id, ConsumerConfig **configs)
{
	static SPIPlanPtr by_id = NULL;
	Datum		arg = Int64GetDatum(only_id);
	Oid			type = INT8OID;
	int			n;

	if (only_id == 0)
		run_sql("SELECT " CONSUMER_COLUMNS " FROM queue_internal.consumer ORDER BY id",
				0, NULL, NULL, NULL);
	else
	{
		/* a drain worker reads its consumer before every batch: keep the plan */
		if (by_id == NULL)
			by_id = keep_plan("SELECT " CONSUMER_COLUMNS
							  " FROM queue_internal.consumer WHERE id = $1", 1, &type);
		if (SPI_execute_plan(by_id, &arg, NULL, false, 1) < 0)
			elog(ERROR, "queue consumer statement failed");
	}
	n = (int) SPI_processed;
	*configs = SPI_palloc(sizeof(ConsumerConfig) * Max(n, 1));
	for (int i = 0; i < n; i++)
		config_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &(*configs)[i]);
	return n;
}

/*
 * The consumer named by an argument, or NULL with missing_ok; its row is
 * locked, so that concurrent changes of one consumer do not overwrite each
 * other.
 */
static ConsumerConfig *
consumer_by_name(const char *name, bool missing_ok)
{
	OwnerContext ctx;
	Datum		arg = CStringGetTextDatum(name);
	Oid			type = TEXTOID;
	ConsumerConfig *c = palloc(sizeof(ConsumerConfig));
	bool		found;

	owner_context_enter(&ctx);
	run_sql("SELECT " CONSUMER_COLUMNS " FROM queue_internal.consumer WHERE name = $1 FOR UPDATE",
			1, &type, &arg, NULL);
	found = SPI_processed > 0;
	if (found)
		config_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, c);
	owner_context_exit(&ctx);
	if (!found)
		c = NULL;
	if (c == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("consumer \"%s\" does not exist", name)));
	return c;
}

/* The type queue.message. */
Oid
message_type_oid(void)
{
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("message"),
						   ObjectIdGetDatum(get_namespace_oid("queue", false)));
}

/*
 * Checks that a function can be a handler and that the role may run it:
 * one argument of type queue.message[], returning bigint[] or void, not a
 * procedure, not returning a set.
 */
void
consumer_check_handler(Oid handler, Oid role)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	Form_pg_proc proc;
	Oid			message_array;
	bool		ok;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("handler function %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	message_array = get_array_type(message_type_oid());
	ok = proc->prokind == PROKIND_FUNCTION && !proc->proretset && proc->pronargs == 1 &&
		proc->proargtypes.values[0] == message_array &&
		(proc->prorettype == INT8ARRAYOID || proc->prorettype == VOIDOID);
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a queue handler", format_procedure(handler)),
				 errdetail("A handler is a function that takes queue.message[] and returns bigint[] (the ids that failed) or void."),
				 errhint("Declare it as FUNCTION handler(messages queue.message[]) RETURNS bigint[].")));
	if (queue_proc_aclcheck(handler, role, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute handler %s",
						GetUserNameFromId(role, false), format_procedure(handler)),
				 errdetail("Drain workers run the handler as the consumer's owner.")));
}

/*
 * The name of a consumer of this database that the role owns, or NULL (also
 * when the extension is not installed here).
 */
char *
consumer_owned_by(Oid role)
{
	OwnerContext ctx;
	Datum		arg = ObjectIdGetDatum(role);
	Oid			type = OIDOID;
	char	   *name = NULL;
	MemoryContext caller = CurrentMemoryContext;

	if (!OidIsValid(get_namespace_oid(QUEUE_INTERNAL_SCHEMA, true)))
		return NULL;
	owner_context_enter(&ctx);
	run_sql("SELECT name FROM queue_internal.consumer WHERE owner = $1 ORDER BY name LIMIT 1",
			1, &type, &arg, NULL);
	if (SPI_processed > 0)
		name = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1));
	owner_context_exit(&ctx);
	return name;
}

/* The owner of a new consumer: the caller, who must be able to log in. */
static void
check_owner(Oid role)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	bool		canlogin;
	bool		super;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "role %u does not exist", role);
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	super = ((Form_pg_authid) GETSTRUCT(tup))->rolsuper;
	ReleaseSysCache(tup);
	if (queue_database_aclcheck(MyDatabaseId, role, ACL_CONNECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" cannot own a consumer because it may not connect to this database",
						GetUserNameFromId(role, false)),
				 errdetail("Drain workers connect as the consumer's owner; its connection limits apply to them too.")));
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" cannot own a consumer because it cannot log in",
						GetUserNameFromId(role, false)),
				 errdetail("Drain workers connect as the consumer's owner."),
				 errhint("Subscribe as a role with LOGIN.")));
	if (super && !queue_allow_superuser_consumers)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("a superuser cannot own a consumer"),
				 errdetail("Drain workers run the handler as the consumer's owner, and a handler run as superuser could do anything."),
				 errhint("Subscribe as an ordinary role, or set queue.allow_superuser_consumers = on.")));
}

/* May the caller pause, resume, change or drop the consumer? */
static void
require_consumer_admin(const ConsumerConfig *c)
{
	const QueueMeta *meta = queue_lookup_by_id(c->queue_id);

	if (superuser() || has_privs_of_role(GetUserId(), c->owner) ||
		(meta != NULL && queue_has_privilege(meta, QUEUE_PRIV_ADMIN)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for consumer \"%s\"", c->name),
			 errdetail("Only its owner and the administrators of its queue may change it.")));
}

static int32
int_arg(FunctionCallInfo fcinfo, int argno, const char *argname, int32 min, int32 max)
{
	int32		n = PG_GETARG_INT32(argno);

	if (n < min || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between %d and %d", argname, min, max),
				 errdetail("The value given was %d.", n)));
	return n;
}

static double
rate_limit_arg(FunctionCallInfo fcinfo, int argno)
{
	double		r = PG_GETARG_FLOAT8(argno);

	if (!(r > 0 && r <= MAX_RATE_LIMIT))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate_limit must be greater than 0 and at most %.0f messages per second",
						MAX_RATE_LIMIT),
				 errhint("Pass NULL for no limit.")));
	return r;
}

/*
 * Reads the settings arguments shared by subscribe and alter_consumer,
 * starting at argument "first" (batch_size), into c; NULL leaves a setting
 * as it is.
 */
static void
settings_args(FunctionCallInfo fcinfo, int first, ConsumerConfig *c)
{
	if (!PG_ARGISNULL(first))
		c->batch_size = batch_size_arg(fcinfo, first, "batch_size");
	if (!PG_ARGISNULL(first + 1))
		c->batch_window_usecs = interval_arg_usecs(fcinfo, first + 1, "batch_window",
												   0, MAX_BATCH_WINDOW, -1);
	if (!PG_ARGISNULL(first + 2))
		c->max_concurrency = int_arg(fcinfo, first + 2, "max_concurrency", 1, MAX_CONCURRENCY);
	if (!PG_ARGISNULL(first + 3))
		c->rate_limit = rate_limit_arg(fcinfo, first + 3);
	if (!PG_ARGISNULL(first + 4))
		c->max_attempts = max_attempts_arg(fcinfo, first + 4);
	if (!PG_ARGISNULL(first + 5))
		c->retry_backoff_usecs = interval_arg_usecs(fcinfo, first + 5, "retry_backoff",
													MIN_RETRY_BACKOFF, QUEUE_MAX_DELAY_USECS, -1);
	if (!PG_ARGISNULL(first + 6))
		c->handler_timeout_usecs = interval_arg_usecs(fcinfo, first + 6, "handler_timeout",
													  USECS_PER_SEC / 1000,
													  QUEUE_MAX_VISIBILITY_USECS, -1);
	if (!PG_ARGISNULL(first + 7))
		c->max_retry_backoff_usecs = interval_arg_usecs(fcinfo, first + 7, "max_retry_backoff",
														0, QUEUE_MAX_DELAY_USECS, -1);
}

static void
check_settings(const ConsumerConfig *c, const QueueMeta *meta)
{
	if (c->max_retry_backoff_usecs < c->retry_backoff_usecs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_retry_backoff must not be less than retry_backoff")));
	if (c->max_attempts > 0 && meta->dead_letter_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts needs a dead-letter queue on queue \"%s\"", meta->name),
				 errdetail("A message that fails max_attempts times moves to the queue's dead-letter queue."),
				 errhint("Set one with queue.alter(queue_name, dead_letter_queue => ...).")));
}

/* Parameters $1..$12 of the catalog statements: the settings of c. */
static void
config_params(const ConsumerConfig *c, Datum *values, char *nulls)
{
	memset(nulls, ' ', 12);
	values[0] = CStringGetTextDatum(c->name);
	values[1] = ObjectIdGetDatum(c->handler);
	values[2] = Int32GetDatum(c->batch_size);
	values[3] = usecs_interval(c->batch_window_usecs);
	values[4] = Int32GetDatum(c->max_concurrency);
	values[5] = Float8GetDatum(c->rate_limit);
	nulls[5] = c->rate_limit > 0 ? ' ' : 'n';
	values[6] = Int32GetDatum(c->max_attempts);
	nulls[6] = c->max_attempts > 0 ? ' ' : 'n';
	values[7] = usecs_interval(c->retry_backoff_usecs);
	values[8] = usecs_interval(c->max_retry_backoff_usecs);
	values[9] = usecs_interval(c->handler_timeout_usecs);
	values[10] = BoolGetDatum(c->paused);
	values[11] = Int64GetDatum(c->id);
}

static Oid	config_types[12] = {TEXTOID, REGPROCEDUREOID, INT4OID, INTERVALOID, INT4OID,
	FLOAT8OID, INT4OID, INTERVALOID, INTERVALOID, INTERVALOID, BOOLOID, INT8OID};

/*
 * queue.subscribe(consumer_name, queue_name, handler, batch_size,
 *   batch_window, max_concurrency, rate_limit, max_attempts, retry_backoff,
 *   handler_timeout, max_retry_backoff) returns bigint
 */
Datum
queue_subscribe(PG_FUNCTION_ARGS)
{
	char	   *name = queue_name_arg(fcinfo, 0, "consumer_name");
	const QueueMeta *meta = queue_open(fcinfo, 1, "queue_name", QUEUE_PRIV_READ);
	ConsumerConfig c = {0};
	Datum		values[13];
	char		nulls[13];
	Oid			types[13];
	bool		isnull;
	OwnerContext ctx;

	require_writable(fcinfo);
	require_not_null(fcinfo, 2, "handler");
	/* NULL means "unchanged" to alter_consumer; here a setting must be given */
	require_not_null(fcinfo, 3, "batch_size");
	require_not_null(fcinfo, 4, "batch_window");
	require_not_null(fcinfo, 5, "max_concurrency");
	require_not_null(fcinfo, 8, "retry_backoff");
	require_not_null(fcinfo, 9, "handler_timeout");
	strlcpy(c.name, name, NAMEDATALEN);
	c.queue_id = meta->id;
	c.handler = PG_GETARG_OID(2);
	c.owner = GetUserId();
	c.batch_size = DEFAULT_BATCH_SIZE;
	c.max_concurrency = DEFAULT_MAX_CONCURRENCY;
	c.retry_backoff_usecs = DEFAULT_RETRY_BACKOFF;
	c.max_retry_backoff_usecs = DEFAULT_MAX_RETRY_BACKOFF;
	c.handler_timeout_usecs = DEFAULT_HANDLER_TIMEOUT;
	settings_args(fcinfo, 3, &c);
	/* without a cap of its own, the first delay sets it */
	if (PG_ARGISNULL(10))
		c.max_retry_backoff_usecs = Max(c.max_retry_backoff_usecs, c.retry_backoff_usecs);
	check_settings(&c, meta);
	check_owner(c.owner);
	consumer_check_handler(c.handler, c.owner);
	/* concurrent subscribes of one name wait here, then see each other */
	LockRelationOid(consumer_catalog_relid(), ShareRowExclusiveLock);
	if (consumer_by_name(name, true) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("consumer \"%s\" already exists", name)));

	config_params(&c, values, nulls);
	memcpy(types, config_types, sizeof(config_types));
	/* $12 is the id in updates; here it is the queue, and $13 the owner */
	values[11] = Int64GetDatum(c.queue_id);
	values[12] = ObjectIdGetDatum(c.owner);
	types[12] = OIDOID;
	nulls[12] = ' ';
	owner_context_enter(&ctx);
	run_sql("INSERT INTO queue_internal.consumer (name, handler, batch_size, batch_window,"
			" max_concurrency, rate_limit, max_attempts, retry_backoff, max_retry_backoff,"
			" handler_timeout, paused, queue_id, owner)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
			13, types, values, nulls);
	c.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	owner_context_exit(&ctx);
	consumers_changed(c.queue_id);
	PG_RETURN_INT64(c.id);
}

static void
update_consumer(const ConsumerConfig *c)
{
	Datum		values[12];
	char		nulls[12];
	OwnerContext ctx;

	config_params(c, values, nulls);
	owner_context_enter(&ctx);
	run_sql("UPDATE queue_internal.consumer SET name = $1, handler = $2, batch_size = $3,"
			" batch_window = $4, max_concurrency = $5, rate_limit = $6, max_attempts = $7,"
			" retry_backoff = $8, max_retry_backoff = $9, handler_timeout = $10, paused = $11"
			" WHERE id = $12", 12, config_types, values, nulls);
	owner_context_exit(&ctx);
	consumers_changed(c->queue_id);
}

static void
reset_setting(ConsumerConfig *c, const char *setting)
{
	if (strcmp(setting, "batch_size") == 0)
		c->batch_size = DEFAULT_BATCH_SIZE;
	else if (strcmp(setting, "batch_window") == 0)
		c->batch_window_usecs = 0;
	else if (strcmp(setting, "max_concurrency") == 0)
		c->max_concurrency = DEFAULT_MAX_CONCURRENCY;
	else if (strcmp(setting, "rate_limit") == 0)
		c->rate_limit = 0;
	else if (strcmp(setting, "max_attempts") == 0)
		c->max_attempts = 0;
	else if (strcmp(setting, "retry_backoff") == 0)
		c->retry_backoff_usecs = DEFAULT_RETRY_BACKOFF;
	else if (strcmp(setting, "max_retry_backoff") == 0)
		c->max_retry_backoff_usecs = DEFAULT_MAX_RETRY_BACKOFF;
	else if (strcmp(setting, "handler_timeout") == 0)
		c->handler_timeout_usecs = DEFAULT_HANDLER_TIMEOUT;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot reset unknown setting \"%s\"", setting),
				 errhint("Settings that can be reset are batch_size, batch_window, max_concurrency, rate_limit, max_attempts, retry_backoff, max_retry_backoff and handler_timeout.")));
}

/*
 * queue.alter_consumer(consumer_name, handler, batch_size, batch_window,
 *   max_concurrency, rate_limit, max_attempts, retry_backoff,
 *   handler_timeout, max_retry_backoff, reset)
 */
Datum
queue_alter_consumer(PG_FUNCTION_ARGS)
{
	ConsumerConfig *c;
	const QueueMeta *meta;

	require_writable(fcinfo);
	c = consumer_by_name(queue_name_arg(fcinfo, 0, "consumer_name"), false);
	require_consumer_admin(c);
	meta = queue_lookup_by_id(c->queue_id);
	if (!PG_ARGISNULL(10))
	{
		int			n;
		char	  **names = reset_names_arg(fcinfo, 10, &n);

		for (int i = 0; i < n; i++)
			reset_setting(c, names[i]);
	}
	settings_args(fcinfo, 2, c);
	if (!PG_ARGISNULL(1))
	{
		if (!superuser() && !has_privs_of_role(GetUserId(), c->owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("only the owner of consumer \"%s\" may change its handler", c->name),
					 errdetail("The handler runs as the consumer's owner.")));
		c->handler = PG_GETARG_OID(1);
		consumer_check_handler(c->handler, c->owner);
	}
	check_settings(c, meta);
	update_consumer(c);
	PG_RETURN_VOID();
}

static void
set_paused(FunctionCallInfo fcinfo, bool paused)
{
	ConsumerConfig *c = consumer_by_name(queue_name_arg(fcinfo, 0, "consumer_name"), false);

	require_consumer_admin(c);
	c->paused = paused;
	update_consumer(c);
}

/* queue.pause(consumer_name) */
Datum
queue_pause(PG_FUNCTION_ARGS)
{
	require_writable(fcinfo);
	set_paused(fcinfo, true);
	PG_RETURN_VOID();
}

/* queue.resume(consumer_name) */
Datum
queue_resume(PG_FUNCTION_ARGS)
{
	require_writable(fcinfo);
	set_paused(fcinfo, false);
	PG_RETURN_VOID();
}

/* queue.unsubscribe(consumer_name, if_exists) returns boolean */
Datum
queue_unsubscribe(PG_FUNCTION_ARGS)
{
	bool		if_exists = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	ConsumerConfig *c;
	Datum		arg;
	Oid			type = INT8OID;
	OwnerContext ctx;

	require_writable(fcinfo);
	c = consumer_by_name(queue_name_arg(fcinfo, 0, "consumer_name"), if_exists);
	if (c == NULL)
	{
		ereport(NOTICE,
				(errmsg("consumer \"%s\" does not exist, skipping",
						text_to_cstring(PG_GETARG_TEXT_PP(0)))));
		PG_RETURN_BOOL(false);
	}
	require_consumer_admin(c);
	arg = Int64GetDatum(c->id);
	owner_context_enter(&ctx);
	run_sql("DELETE FROM queue_internal.consumer WHERE id = $1", 1, &type, &arg, NULL);
	owner_context_exit(&ctx);
	consumers_changed(c->queue_id);
	PG_RETURN_BOOL(true);
}
