/*
 * drain.c
 *    The dynamic background workers the launcher starts: their common entry
 *    point, and drain workers, which run one consumer's batches through its
 *    handler.  (Maintenance workers are in maintenance.c.)
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
 * Careful mode: the claim only locks, so a delivery is counted only when
 * its batch commits, and a message that kills its worker (a FATAL, a
 * crash) would come back uncounted for ever.  So after a start (of the
 * server, or after a crash) and after a worker died in a batch, a
 * consumer's next batch_size messages run one at a time, each first
 * leased like a read in a transaction of its own (the lease counts the
 * delivery and hides the message for handler_timeout and a grace), then
 * handled and settled by its receipt in a second one.  A message that
 * kills its worker every time thus reaches max_attempts and the
 * dead-letter queue.
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
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
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
	int64		receipt;		/* careful mode: the lease of its one message */
	int32	   *attempts;		/* deliveries, this one included */
	char	  **errors;			/* NULL: handled */
	Oid			message_type;
	FmgrInfo	handler;
	bool		returns_ids;	/* bigint[], not void */
	int64		timeout_usecs;
	char	   *batch_error;	/* the first error, for queue.consumers */
	int			nfailed;
} Batch;

/* What a batch did, for the consumer's counters. */
typedef struct BatchResult
{
	int			failed;
	char		error[256];		/* the first error; empty: none */
} BatchResult;

static WorkerSlot *me = NULL;

/* careful mode: what outlives the transaction that leased the message */
static MemoryContext careful_cxt = NULL;

/* how long past handler_timeout a careful lease lasts */
#define CAREFUL_GRACE_USECS		(INT64CONST(10) * USECS_PER_SEC)

/* A worker's transaction, with the snapshot SPI needs around it. */
void
bgworker_begin_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
bgworker_commit_xact(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* ---- one batch ----------------------------------------------------------- */

static char *
error_text(ErrorData *edata)
{
	char	   *text = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode), edata->message);

	/* cut between characters, never inside one */
	text[pg_mbcliplen(text, strlen(text), MAX_ERROR_LEN)] = '\0';
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

	/* the handler runs in the subtransaction's memory, freed with it */
	BeginInternalSubTransaction(NULL);
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
		/* a timeout that fired as the handler returned must not cancel the settling */
		if (get_timeout_indicator(STATEMENT_TIMEOUT, true))
			QueryCancelPending = false;
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

/* The failure of message i, to record. */
static FailedMessage
failure_of(Batch *b, int i, const QueueMeta *meta, const ConsumerConfig *cfg)
{
	FailedMessage f;

	f.id = b->ids[i];
	f.attempts = b->attempts[i];
	f.error = b->errors[i];
	f.dead = meta->max_attempts > 0 && b->attempts[i] >= meta->max_attempts;
	f.visible_at = GetCurrentTimestamp() + retry_delay(cfg, b->attempts[i]);
	return f;
}

/* Careful mode: settles the one leased message by its receipt. */
static void
settle_careful(Batch *b, const QueueMeta *meta, const ConsumerConfig *cfg)
{
	FailedMessage f;
	bool		settled;

	if (b->errors[0] == NULL)
		settled = settle_leased(meta, b->ids[0], b->receipt, NULL);
	else
	{
		f = failure_of(b, 0, meta, cfg);
		settled = settle_leased(meta, b->ids[0], b->receipt, &f);
	}
	/* its lease ran out and another took it: the handler's work must not count */
	if (!settled)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("queue message %lld was leased again before its handler finished",
						(long long) b->ids[0])));
}

/* Deletes the handled messages and returns or dead-letters the failed ones. */
static void
settle_batch(Batch *b, const QueueMeta *meta, const ConsumerConfig *cfg)
{
	int64	   *done = palloc(sizeof(int64) * b->n);
	FailedMessage *failed = palloc(sizeof(FailedMessage) * b->n);
	int			ndone = 0;
	int			nfailed = 0;
	OwnerContext ctx;

	for (int i = 0; i < b->n; i++)
	{
		if (b->errors[i] == NULL)
			done[ndone++] = b->ids[i];
		else
			failed[nfailed++] = failure_of(b, i, meta, cfg);
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
claim_batch(Batch *b, const QueueMeta *meta, const ConsumerConfig *cfg, int want, bool careful)
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
		int			got = careful ?
			claim_leased(meta, 1, cfg->handler_timeout_usecs + CAREFUL_GRACE_USECS, store, desc) :
			claim_messages(meta, want - n, held, n, store, desc);

		for (int i = 0; i < got; i++)
		{
			bool		isnull;

			if (!tuplestore_gettupleslot(store, true, false, slot))
				elog(ERROR, "queue claim lost a message");
			held[n + i] = DatumGetInt64(slot_getattr(slot, MSG_COL_ID, &isnull));
		}
		n += got;
		if (careful || n >= want || n == 0 || GetCurrentTimestamp() >= deadline)
			break;
		if (got == 0)
			wakeup_wait_key(&key, seen, deadline);
		CHECK_FOR_INTERRUPTS();
	}
	/* after a restart: count once, so the launcher knows when delays end */
	if (n == 0 && !counters_hidden_known(meta->id))
		queue_count_once(meta);
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
		if (careful)
			b->receipt = DatumGetInt64(slot_getattr(slot, MSG_COL_RECEIPT, &isnull));
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
/*
 * The queue as this consumer sees it: its max_attempts, when the queue has
 * a dead-letter queue to take the messages out of attempts.  NULL when the
 * queue is gone.
 */
static bool
consumer_queue(const ConsumerConfig *cfg, QueueMeta *meta)
{
	const QueueMeta *cached = queue_lookup_by_id(cfg->queue_id);

	if (cached == NULL)
		return false;
	*meta = *cached;
	if (cfg->max_attempts > 0 && meta->dead_letter_id != 0)
		meta->max_attempts = cfg->max_attempts;
	return true;
}

static int
run_batch(int64 consumer_id, int tokens, bool careful, BatchResult *result)
{
	ConsumerConfig *loaded;
	ConsumerConfig config;
	ConsumerConfig *cfg = &config;
	QueueMeta	meta;
	Batch		b = {0};
	OwnerContext ctx;
	int			n;

	bgworker_begin_xact();
	if (!OidIsValid(get_namespace_oid(QUEUE_INTERNAL_SCHEMA, true)))
	{
		bgworker_commit_xact();
		return BATCH_GONE;
	}
	/* queue.allow_superuser_consumers may have been turned off since the start */
	if (superuser() && !queue_allow_superuser_consumers)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the consumer's owner is a superuser; set queue.allow_superuser_consumers to run it")));
	owner_context_enter(&ctx);
	n = consumer_catalog_load(consumer_id, &loaded);
	owner_context_exit(&ctx);
	if (n > 0)
		config = *loaded;
	if (n == 0 || !consumer_queue(cfg, &meta) || cfg->paused)
	{
		int			why = n > 0 && queue_lookup_by_id(cfg->queue_id) != NULL ?
			BATCH_PAUSED : BATCH_GONE;

		bgworker_commit_xact();
		return why;
	}
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
	if (careful)
	{
		/* the message must outlive the transaction that leases it */
		if (careful_cxt == NULL)
			careful_cxt = AllocSetContextCreate(TopMemoryContext, "queue careful batch",
												ALLOCSET_DEFAULT_SIZES);
		MemoryContextReset(careful_cxt);
		MemoryContextSwitchTo(careful_cxt);
	}
	n = claim_batch(&b, &meta, cfg, Min(tokens, cfg->batch_size), careful);
	MemoryContextSwitchTo(TopTransactionContext);
	if (n == 0)
	{
		bgworker_commit_xact();
		worker_set_state(me, WORKER_WAITING, 0);
		return 0;
	}
	if (careful)
	{
		/* commit the lease: the delivery counts before the handler runs */
		bgworker_commit_xact();
		bgworker_begin_xact();
		if (!consumer_queue(cfg, &meta))
		{
			bgworker_commit_xact();
			return BATCH_GONE;
		}
		fmgr_info(cfg->handler, &b.handler);
	}

	worker_set_state(me, WORKER_HANDLING, n);
	pgstat_report_activity(STATE_RUNNING, "running the handler");
	run_handler(&b, 0, n);

	worker_set_state(me, WORKER_COMMITTING, n);
	if (careful)
		settle_careful(&b, &meta, cfg);
	else
		settle_batch(&b, &meta, cfg);
	result->failed = b.nfailed;
	if (b.batch_error != NULL)
		copy_clipped(result->error, b.batch_error, sizeof(result->error));
	bgworker_commit_xact();
	/* advisory locks a handler took for the session end with its batch */
	LockReleaseAll(USER_LOCKMETHOD, true);
	worker_set_state(me, WORKER_WAITING, 0);
	SpinLockAcquire(&me->mutex);
	me->batches++;
	me->messages += n;
	SpinLockRelease(&me->mutex);
	return n;
}

/*
 * The worker's consumer slot, found again under the registry lock each time
 * it is used: between two uses the consumer may have been dropped and its
 * slot given to another.
 */
static ConsumerSlot *
find_my_consumer(void)
{
	return registry_find_consumer(me->database, me->catalog, me->consumer_id);
}

/* A copy of the consumer's slot; false when it is gone or paused. */
static bool
copy_my_consumer(ConsumerSlot *copy)
{
	ConsumerSlot *c;

	registry_lock(false);
	c = find_my_consumer();
	if (c != NULL)
		*copy = *c;
	registry_unlock();
	return c != NULL && !copy->paused;
}

static void
note_error(const char *error)
{
	ConsumerSlot *c;

	registry_lock(false);
	if ((c = find_my_consumer()) != NULL)
		consumer_note_error(c, error);
	registry_unlock();
}

/* Takes tokens from the consumer's rate limit: see consumer_take_tokens. */
static int
take_tokens(int want, int64 *wait_usecs)
{
	ConsumerSlot *c;
	int			granted = 0;

	*wait_usecs = 0;
	registry_lock(false);
	if ((c = find_my_consumer()) != NULL)
		granted = consumer_take_tokens(c, want, wait_usecs);
	registry_unlock();
	return granted;
}

/*
 * Counts a batch, gives back the tokens it did not use, and asks the
 * launcher for another worker when the batch was full.
 */
static void
report_batch(int tokens, int claimed, const BatchResult *r, bool full, bool careful)
{
	ConsumerSlot *c;
	bool		poke = false;

	registry_lock(false);
	if ((c = find_my_consumer()) != NULL)
	{
		if (claimed < tokens)
			consumer_return_tokens(c, tokens - claimed);
		if (claimed > 0)
			consumer_count_batch(c, claimed - r->failed, r->failed,
								 r->error[0] ? r->error : NULL);
		if (careful && claimed > 0 && c->careful > 0)
			c->careful--;
		if (full && !c->want_more && registry_count_workers(c) < c->max_concurrency)
			poke = c->want_more = true;
	}
	registry_unlock();
	if (poke)
		registry_poke_launcher();
}

/*
 * The worker leaves: its consumer is gone (the launcher must not start
 * another before maintenance catches up), or it was idle, having last
 * looked at wakeup sequence seen.
 */
static void
report_leaving(int why, uint64 seen)
{
	ConsumerSlot *c;

	registry_lock(true);
	if ((c = find_my_consumer()) != NULL)
	{
		if (why == BATCH_GONE)
			c->in_use = false;
		else if (why == 0)
		{
			c->idle_seq = seen;
			c->seen_idle = true;
		}
	}
	registry_unlock();
	if (why < 0)
		registry_request_maintenance(MyDatabaseId);
}

/*
 * Runs a batch; an error outside the handler (the handler was dropped, the
 * queue's tables are gone, ...) ends the worker after it is logged and
 * shown in queue.consumers, and the launcher backs off before the next.
 */
static int
run_batch_guarded(int tokens, bool careful, BatchResult *r)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int n = BATCH_FAILED;

	PG_TRY();
	{
		n = run_batch(me->consumer_id, tokens, careful, r);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		note_error(error_text(edata));
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

static void
drain(void)
{
	TimestampTz last_work = GetCurrentTimestamp();

	for (;;)
	{
		ConsumerSlot c;
		int			tokens;
		int64		wait_usecs;
		uint64		seen;
		int			n;
		BatchResult r = {0};

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!copy_my_consumer(&c) || registry_worker_is_surplus(me, &c))
			return;
		tokens = take_tokens(c.batch_size, &wait_usecs);
		if (tokens == 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(wait_usecs / 1000, 1), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		seen = wakeup_sequence_key(&c.queue);
		n = run_batch_guarded(tokens, c.careful > 0, &r);
		report_batch(tokens, Max(n, 0), &r, n >= c.batch_size, c.careful > 0);
		if (n < 0)
		{
			report_leaving(n, seen);
			return;
		}
		if (n > 0)
		{
			last_work = GetCurrentTimestamp();
			continue;
		}

		/* nothing there: wait for a commit, or go when idle too long */
		pgstat_report_activity(STATE_IDLE, "waiting for messages");
		if (GetCurrentTimestamp() >= last_work + (int64) queue_worker_idle_timeout * 1000)
		{
			report_leaving(0, seen);
			return;
		}
		wakeup_wait_key(&c.queue, seen, last_work + (int64) queue_worker_idle_timeout * 1000);
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
	me->worked = true;			/* connected: a failure from here on is ours to report */
	appname = psprintf("queue consumer %s", name);
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(appname);

	bgworker_begin_xact();
	if (superuser() && !queue_allow_superuser_consumers)
	{
		consumer_note_error(c, "the consumer's owner is a superuser; set queue.allow_superuser_consumers to run it");
		ereport(LOG,
				(errmsg("queue consumer \"%s\" not started: its owner is a superuser", name),
				 errhint("Set queue.allow_superuser_consumers = on, or subscribe as an ordinary role.")));
		bgworker_commit_xact();
		me->failed = true;
		return false;
	}
	bgworker_commit_xact();
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
		maintenance_worker_run(me);
		proc_exit(0);
	}

	if (connect_as_owner())
	{
		worker_set_state(me, WORKER_WAITING, 0);
		drain();
	}
	proc_exit(0);
}
