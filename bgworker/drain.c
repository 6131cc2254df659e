/*
 * drain.c
 *    The dynamic background workers the launcher starts: drain workers,
 *    which run one consumer's batches through its handler, and maintenance
 *    workers, which copy one database's consumer catalog into the registry
 *    and do the housekeeping of its queues (maintain.c).
 *
 * A drain worker connects as the consumer's owner and loops: take tokens
 * from the consumer's rate limit, start a transaction, claim up to a batch
 * of messages (FOR UPDATE SKIP LOCKED, waiting up to batch_window to fill
 * it), call the handler, delete the messages it handled, return the failed
 * ones with their error and backoff (or dead-letter them), commit.  The
 * handler's writes and the deletions commit together, so inside the
 * database a message takes effect once; a worker that dies leaves its
 * transaction uncommitted and the messages are claimed again.
 *
 * The handler runs in a subtransaction.  When it raises an error the batch
 * is split in halves, each retried in its own subtransaction, down to the
 * single messages that fail (Lambda's BisectBatchOnFunctionError), so good
 * messages in a batch with a poison one still commit.  handler_timeout arms
 * the statement timeout around each call; a batch that times out fails as a
 * whole, since a hung handler cannot say which message hung it.
 *
 * With nothing to do the worker waits, outside any transaction, on the
 * queue's wakeup (a committed send wakes it at once), and exits after
 * queue.worker_idle_timeout without work.  It also exits when its consumer
 * is paused or dropped, or the extension is gone.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/regproc.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "queue.h"

PGDLLEXPORT void queue_worker_main(Datum main_arg);

#define MAX_ERROR_LEN	1000

/* One claimed batch and what became of each message. */
typedef struct Batch
{
	int			n;
	Datum	   *messages;		/* queue.message composite values */
	int64	   *ids;
	int32	   *attempts;		/* deliveries, this one included */
	char	  **errors;			/* NULL: handled */
	Oid			message_type;
	FmgrInfo	handler;
	bool		returns_ids;	/* bigint[], not void */
	int64		timeout_usecs;
	char	   *batch_error;	/* the first error, for queue.consumers */
	int			nfailed;
} Batch;

static WorkerSlot *me = NULL;

/* A worker's transaction, with the snapshot SPI needs around it. */
static void
begin_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
commit_xact(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* ---- maintenance --------------------------------------------------------- */

/* Copies this database's consumers into the registry, then maintains its queues. */
static void
maintain_database(void)
{
	Oid			consumer_catalog = InvalidOid;
	ConsumerSlot *fresh = NULL;
	int			n = 0;
	int			stored;

	begin_xact();
	if (OidIsValid(get_namespace_oid(QUEUE_INTERNAL_SCHEMA, true)) &&
		OidIsValid(consumer_catalog = consumer_catalog_relid()))
	{
		ConsumerConfig *configs;
		OwnerContext ctx;

		owner_context_enter(&ctx);
		n = consumer_catalog_load(0, &configs);
		owner_context_exit(&ctx);
		fresh = palloc0(sizeof(ConsumerSlot) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			fresh[i].consumer_id = configs[i].id;
			strlcpy(fresh[i].name, configs[i].name, NAMEDATALEN);
			fresh[i].queue = queue_slot_key(configs[i].queue_id);
			fresh[i].owner = configs[i].owner;
			fresh[i].max_concurrency = configs[i].max_concurrency;
			fresh[i].paused = configs[i].paused;
			fresh[i].rate_limit = configs[i].rate_limit;
			fresh[i].batch_size = configs[i].batch_size;
		}
	}
	stored = registry_replace_database(MyDatabaseId, consumer_catalog, n, fresh);
	registry_note_database(MyDatabaseId, OidIsValid(consumer_catalog));
	if (OidIsValid(consumer_catalog))
		queue_maintain_database();
	if (stored < n)
		ereport(WARNING,
				(errmsg("queue: %d consumers of database \"%s\" do not fit in shared memory and will not run",
						n - stored, get_database_name(MyDatabaseId)),
				 errhint("Raise queue.max_consumers (now %d) and restart the server.",
						 queue_max_consumers)));
	commit_xact();
}

/* ---- one batch ----------------------------------------------------------- */

static char *
error_text(ErrorData *edata)
{
	char	   *text = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode), edata->message);

	if (strlen(text) > MAX_ERROR_LEN)
		text[MAX_ERROR_LEN] = '\0';
	return text;
}

static void
fail_range(Batch *b, int lo, int hi, const char *error)
{
	for (int i = lo; i < hi; i++)
	{
		if (b->errors[i] == NULL)
		{
			b->errors[i] = pstrdup(error);
			b->nfailed++;
		}
	}
	if (b->batch_error == NULL)
		b->batch_error = pstrdup(error);
}

/* Marks the ids the handler returned as failed; ids not in [lo, hi) are ignored. */
static void
fail_returned(Batch *b, int lo, int hi, ArrayType *failed)
{
	Datum	   *ids;
	bool	   *nulls;
	int			n;
	int			strangers = 0;

	deconstruct_array(failed, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ids, &nulls, &n);
	for (int j = 0; j < n; j++)
	{
		bool		known = false;

		for (int i = lo; i < hi && !nulls[j]; i++)
		{
			if (b->ids[i] == DatumGetInt64(ids[j]))
			{
				fail_range(b, i, i + 1, "the handler reported the message as failed");
				known = true;
			}
		}
		strangers += !known;
	}
	if (strangers > 0)
		ereport(WARNING,
				(errmsg("queue handler %s returned %d ids that are not in its batch",
						format_procedure(b->handler.fn_oid), strangers),
				 errdetail("They were ignored.")));
}

/*
 * Calls the handler on messages [lo, hi) in a subtransaction.  On success
 * returns true (the subtransaction's writes stay) and marks the ids it
 * reported; on error rolls the subtransaction back and returns false with
 * the error in *edata.
 */
static bool
try_handler(Batch *b, int lo, int hi, ErrorData **edata)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;
	ArrayType  *array = construct_array(b->messages + lo, hi - lo, b->message_type,
										-1, false, TYPALIGN_DOUBLE);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo, 1);
		Datum		result;
		int			guc_level = NewGUCNestLevel();

		PushActiveSnapshot(GetTransactionSnapshot());
		enable_timeout_after(STATEMENT_TIMEOUT, (int) (b->timeout_usecs / 1000));
		InitFunctionCallInfoData(*fcinfo, &b->handler, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = PointerGetDatum(array);
		fcinfo->args[0].isnull = false;
		result = FunctionCallInvoke(fcinfo);
		disable_timeout(STATEMENT_TIMEOUT, false);
		/* a SET in the handler (even SET ROLE) must not outlive its batch */
		AtEOXact_GUC(false, guc_level);
		if (!fcinfo->isnull && b->returns_ids)
		{
			MemoryContextSwitchTo(cxt);
			fail_returned(b, lo, hi, DatumGetArrayTypePCopy(result));
		}
		PopActiveSnapshot();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(cxt);
		*edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Runs the handler on messages [lo, hi), bisecting on errors until the
 * failing messages stand alone.
 */
static void
run_handler(Batch *b, int lo, int hi)
{
	ErrorData  *edata = NULL;
	TimestampTz started = GetCurrentTimestamp();
	int			mid;

	if (try_handler(b, lo, hi, &edata))
		return;
	/*
	 * A cancel from outside (pg_cancel_backend) is not the handler's failure:
	 * the whole batch rolls back uncounted.  A timeout is.
	 */
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED &&
		GetCurrentTimestamp() - started < b->timeout_usecs)
		ReThrowError(edata);
	if (hi - lo == 1 || edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
	{
		fail_range(b, lo, hi, error_text(edata));
		return;
	}
	mid = lo + (hi - lo) / 2;
	run_handler(b, lo, mid);
	run_handler(b, mid, hi);
}

/* The delay before a failed message's next delivery: doubling, capped. */
static int64
retry_delay(const ConsumerConfig *cfg, int32 attempts)
{
	int64		delay = cfg->retry_backoff_usecs;

	for (int i = 1; i < attempts && delay < cfg->max_retry_backoff_usecs; i++)
		delay *= 2;
	return Min(delay, cfg->max_retry_backoff_usecs);
}

/* Deletes the handled messages and returns or dead-letters the failed ones. */
static void
settle_batch(Batch *b, const QueueMeta *meta, const ConsumerConfig *cfg)
{
	int64	   *done = palloc(sizeof(int64) * b->n);
	FailedMessage *failed = palloc(sizeof(FailedMessage) * b->n);
	int			ndone = 0;
	int			nfailed = 0;
	TimestampTz now = GetCurrentTimestamp();
	OwnerContext ctx;

	for (int i = 0; i < b->n; i++)
	{
		if (b->errors[i] == NULL)
		{
			done[ndone++] = b->ids[i];
			continue;
		}
		failed[nfailed].id = b->ids[i];
		failed[nfailed].attempts = b->attempts[i];
		failed[nfailed].error = b->errors[i];
		failed[nfailed].dead = meta->max_attempts > 0 && b->attempts[i] >= meta->max_attempts;
		failed[nfailed].visible_at = now + retry_delay(cfg, b->attempts[i]);
		nfailed++;
	}
	owner_context_enter(&ctx);
	settle_messages(meta, done, ndone, failed, nfailed);
	owner_context_exit(&ctx);
}

/*
 * Claims up to want messages into b, waiting up to the batch window for
 * more while the batch is not full.  Returns how many.
 */
static int
claim_batch(Batch *b, const QueueMeta *meta, const ConsumerConfig *cfg, int want)
{
	TupleDesc	desc = lookup_rowtype_tupdesc_copy(b->message_type, -1);
	Tuplestorestate *store = tuplestore_begin_heap(false, false, work_mem);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TimestampTz deadline = GetCurrentTimestamp() + cfg->batch_window_usecs;
	int64	   *held = palloc(sizeof(int64) * want);
	int			n = 0;
	SlotKey		key = queue_slot_key(meta->id);
	OwnerContext ctx;

	owner_context_enter(&ctx);
	for (;;)
	{
		uint64		seen = wakeup_sequence_key(&key);
		int			got = claim_messages(meta, want - n, held, n, store, desc);

		for (int i = 0; i < got; i++)
		{
			bool		isnull;

			if (!tuplestore_gettupleslot(store, true, false, slot))
				elog(ERROR, "queue claim lost a message");
			held[n + i] = DatumGetInt64(slot_getattr(slot, MSG_COL_ID, &isnull));
		}
		n += got;
		if (n >= want || n == 0 || GetCurrentTimestamp() >= deadline)
			break;
		if (got == 0)
			wakeup_wait_key(&key, seen, deadline);
		CHECK_FOR_INTERRUPTS();
	}
	owner_context_exit(&ctx);

	b->n = n;
	b->messages = palloc(sizeof(Datum) * Max(n, 1));
	b->ids = held;
	b->attempts = palloc(sizeof(int32) * Max(n, 1));
	b->errors = palloc0(sizeof(char *) * Max(n, 1));
	tuplestore_rescan(store);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		if (!tuplestore_gettupleslot(store, true, false, slot))
			elog(ERROR, "queue claim lost a message");
		b->attempts[i] = DatumGetInt32(slot_getattr(slot, MSG_COL_ATTEMPTS, &isnull));
		b->messages[i] = ExecFetchSlotHeapTupleDatum(slot);
	}
	ExecDropSingleTupleTableSlot(slot);
	return n;
}

/* What run_batch returns, besides how many messages it claimed. */
#define BATCH_PAUSED	(-1)		/* the consumer is paused */
#define BATCH_GONE		(-2)		/* the consumer, its queue or the extension is gone */
#define BATCH_FAILED	(-3)		/* an error outside the handler */

/*
 * Runs one batch in one transaction.  Returns how many messages it claimed
 * (0: none there), or a BATCH_ code when the worker should stop.
 */
static int
run_batch(ConsumerSlot *slot, int64 consumer_id, int tokens)
{
	ConsumerConfig *cfg;
	QueueMeta	meta;
	const QueueMeta *cached = NULL;
	Batch		b = {0};
	OwnerContext ctx;
	int			n;

	begin_xact();
	if (!OidIsValid(get_namespace_oid(QUEUE_INTERNAL_SCHEMA, true)))
	{
		commit_xact();
		return BATCH_GONE;
	}
	owner_context_enter(&ctx);
	n = consumer_catalog_load(consumer_id, &cfg);
	owner_context_exit(&ctx);
	if (n == 0 || (cached = queue_lookup_by_id(cfg->queue_id)) == NULL || cfg->paused)
	{
		commit_xact();
		return n > 0 && cached != NULL ? BATCH_PAUSED : BATCH_GONE;
	}
	meta = *cached;
	/* the queue's dead-letter queue takes the messages out of attempts */
	if (cfg->max_attempts > 0 && meta.dead_letter_id != 0)
		meta.max_attempts = cfg->max_attempts;
	if (!queue_has_privilege(&meta, QUEUE_PRIV_READ))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the owner of consumer \"%s\" may no longer read queue \"%s\"",
						cfg->name, meta.name)));
	b.message_type = message_type_oid();
	b.timeout_usecs = cfg->handler_timeout_usecs;
	consumer_check_handler(cfg->handler, cfg->owner);
	fmgr_info(cfg->handler, &b.handler);
	b.returns_ids = get_func_rettype(cfg->handler) == INT8ARRAYOID;

	worker_set_state(me, WORKER_CLAIMING, 0);
	pgstat_report_activity(STATE_RUNNING, "claiming a batch");
	n = claim_batch(&b, &meta, cfg, Min(tokens, cfg->batch_size));
	if (n == 0)
	{
		commit_xact();
		return 0;
	}

	worker_set_state(me, WORKER_HANDLING, n);
	pgstat_report_activity(STATE_RUNNING, "running the handler");
	run_handler(&b, 0, n);

	worker_set_state(me, WORKER_COMMITTING, n);
	settle_batch(&b, &meta, cfg);
	commit_xact();

	consumer_count_batch(slot, n - b.nfailed, b.nfailed, b.batch_error);
	SpinLockAcquire(&me->mutex);
	me->batches++;
	me->messages += n;
	SpinLockRelease(&me->mutex);
	return n;
}

/*
 * Runs a batch; an error outside the handler (the handler was dropped, the
 * queue's tables are gone, ...) ends the worker after it is logged and
 * shown in queue.consumers, and the launcher backs off before the next.
 */
static int
run_batch_guarded(ConsumerSlot *slot, int tokens)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int n = BATCH_FAILED;

	PG_TRY();
	{
		n = run_batch(slot, me->consumer_id, tokens);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		consumer_note_error(slot, error_text(edata));
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		me->failed = true;
		n = BATCH_FAILED;
	}
	PG_END_TRY();
	return n;
}

/* ---- the loop ------------------------------------------------------------ */

/* The consumer's slot, or NULL when it is gone or paused. */
static ConsumerSlot *
my_consumer(void)
{
	ConsumerSlot *c;

	registry_lock(false);
	c = registry_find_consumer(me->database, me->catalog, me->consumer_id);
	if (c != NULL && c->paused)
		c = NULL;
	registry_unlock();
	return c;
}

/* Asks the launcher for another worker when a full batch says there is more. */
static void
ask_for_help(ConsumerSlot *c)
{
	if (!c->want_more && registry_count_workers(c) < c->max_concurrency)
	{
		c->want_more = true;
		registry_poke_launcher();
	}
}

static void
drain(void)
{
	TimestampTz last_work = GetCurrentTimestamp();

	for (;;)
	{
		ConsumerSlot *c;
		int			tokens;
		int64		wait_usecs;
		uint64		seen;
		int			n;
		SlotKey		key;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if ((c = my_consumer()) == NULL)
			return;
		key = c->queue;
		tokens = consumer_take_tokens(c, c->batch_size, &wait_usecs);
		if (tokens == 0)
		{
			worker_set_state(me, WORKER_WAITING, 0);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(wait_usecs / 1000, 1), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		seen = wakeup_sequence_key(&key);
		n = run_batch_guarded(c, tokens);
		if (n < 0)
		{
			/*
			 * Tell the launcher at once, so that it starts no worker in the
			 * moment before maintenance brings the registry up to date.
			 */
			registry_lock(true);
			if (n == BATCH_PAUSED)
				c->paused = true;
			else if (n == BATCH_GONE)
				c->in_use = false;
			registry_unlock();
			registry_request_maintenance(MyDatabaseId);
			return;
		}
		if (n < tokens)
			consumer_return_tokens(c, tokens - n);
		if (n > 0)
		{
			last_work = GetCurrentTimestamp();
			if (n >= c->batch_size)
				ask_for_help(c);
			continue;
		}

		/* nothing there: wait for a commit, or go when idle too long */
		worker_set_state(me, WORKER_WAITING, 0);
		pgstat_report_activity(STATE_IDLE, "waiting for messages");
		if (GetCurrentTimestamp() >= last_work + (int64) queue_worker_idle_timeout * 1000)
		{
			registry_lock(true);
			c->idle_seq = seen;
			c->seen_idle = true;
			registry_unlock();
			return;
		}
		wakeup_wait_key(&key, seen, last_work + (int64) queue_worker_idle_timeout * 1000);
	}
}

/* Connects as the consumer's owner; refuses a superuser unless allowed. */
static bool
connect_as_owner(void)
{
	ConsumerSlot *c;
	Oid			owner = InvalidOid;
	char		name[NAMEDATALEN] = "";
	char	   *appname;

	registry_lock(false);
	c = registry_find_consumer(me->database, me->catalog, me->consumer_id);
	if (c != NULL)
	{
		owner = c->owner;
		strlcpy(name, c->name, NAMEDATALEN);
	}
	registry_unlock();
	if (c == NULL)
		return false;

	BackgroundWorkerInitializeConnectionByOid(me->database, owner, 0);
	appname = psprintf("queue consumer %s", name);
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(appname);

	begin_xact();
	if (superuser() && !queue_allow_superuser_consumers)
	{
		consumer_note_error(c, "the consumer's owner is a superuser; set queue.allow_superuser_consumers to run it");
		ereport(LOG,
				(errmsg("queue consumer \"%s\" not started: its owner is a superuser", name),
				 errhint("Set queue.allow_superuser_consumers = on, or subscribe as an ordinary role.")));
		commit_xact();
		return false;
	}
	commit_xact();
	return true;
}

void
queue_worker_main(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);
	uint32		generation;

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, StatementCancelHandler);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	me = registry_attach_worker(index, generation);
	if (me == NULL)
		proc_exit(0);

	if (me->maintenance)
	{
		worker_set_state(me, WORKER_MAINTAINING, 0);
		BackgroundWorkerInitializeConnectionByOid(me->database, InvalidOid, 0);
		pgstat_report_appname("queue maintenance");
		maintain_database();
		me->worked = true;
		proc_exit(0);
	}

	if (connect_as_owner())
	{
		me->worked = true;
		worker_set_state(me, WORKER_WAITING, 0);
		drain();
	}
	proc_exit(0);
}
