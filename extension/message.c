/*
 * message.c
 *    The message API: send, send_batch, read (with its wait), pop, ack,
 *    nack, set_visibility, archive and archived.
 *
 * Each function checks its arguments and the caller's privilege on the
 * queue first (catalog.c, validate.c), then runs one or two cached
 * statements (storage.c) as the extension's owner, then records what it did
 * for the commit-time counters and wakeups (shmem.c).
 *
 * Leases: every read stamps the messages it hands out with a new random
 * receipt (written to the rows when the transaction commits, see lease.c).  ack, nack, set_visibility and archive act only when the receipt
 * passed back still matches, so a consumer whose visibility timeout ran out
 * and whose message was read again by someone else cannot touch it any more
 * (the same rule as SQS's receipt handles).  Until another read happens, an
 * expired lease still works, as in SQS.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "queue.h"

#define GROUP_KEY_MAXLEN	256

PG_FUNCTION_INFO_V1(queue_send);
PG_FUNCTION_INFO_V1(queue_send_batch);
PG_FUNCTION_INFO_V1(queue_read);
PG_FUNCTION_INFO_V1(queue_pop);
PG_FUNCTION_INFO_V1(queue_ack);
PG_FUNCTION_INFO_V1(queue_ack_batch);
PG_FUNCTION_INFO_V1(queue_nack);
PG_FUNCTION_INFO_V1(queue_set_visibility);
PG_FUNCTION_INFO_V1(queue_archive);
PG_FUNCTION_INFO_V1(queue_archived);

/* Runs a cached statement and fails loudly on anything but success. */
static uint64
run_plan(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "queue statement failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* The lowest of some ids: statements on them try its segment first. */
static int64
lowest(const int64 *ids, int n)
{
	int64		min = PG_INT64_MAX;

	for (int i = 0; i < n; i++)
		min = Min(min, ids[i]);
	return min;
}

/* The lowest id of a bigint[] (nulls ignored). */
static int64
lowest_in_array(ArrayType *ids)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int64		min = PG_INT64_MAX;

	deconstruct_array(ids, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (!nulls[i])
			min = Min(min, DatumGetInt64(elems[i]));
	}
	return min;
}

/* The lowest id of a drain worker's failed messages. */
static int64
lowest_failed(const FailedMessage *failed, int n)
{
	int64		min = PG_INT64_MAX;

	for (int i = 0; i < n; i++)
		min = Min(min, failed[i].id);
	return min;
}

static Datum
optional_headers(FunctionCallInfo fcinfo, int argno, bool *isnull)
{
	Jsonb	   *headers;

	*isnull = PG_ARGISNULL(argno);
	if (*isnull)
		return (Datum) 0;
	headers = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object"),
				 errhint("Pass headers such as '{\"trace_id\": \"abc\"}', or NULL.")));
	return JsonbPGetDatum(headers);
}

static Datum
optional_group_key(FunctionCallInfo fcinfo, int argno, bool *isnull)
{
	text	   *key;

	*isnull = PG_ARGISNULL(argno);
	if (*isnull)
		return (Datum) 0;
	key = PG_GETARG_TEXT_PP(argno);
	if (VARSIZE_ANY_EXHDR(key) == 0 || VARSIZE_ANY_EXHDR(key) > GROUP_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("group_key must hold between 1 and %d bytes", GROUP_KEY_MAXLEN)));
	return PointerGetDatum(key);
}

/* The priority argument: 0 (the default, lowest) to QUEUE_MAX_PRIORITY. */
static Datum
priority_arg(FunctionCallInfo fcinfo, int argno)
{
	int32		priority;

	require_not_null(fcinfo, argno, "priority");
	priority = PG_GETARG_INT32(argno);
	if (priority < 0 || priority > QUEUE_MAX_PRIORITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority must be between 0 and %d", QUEUE_MAX_PRIORITY),
				 errdetail("The priority given was %d.", priority)));
	return Int32GetDatum(priority);
}

/*
 * Counts messages acknowledged (deleted) by this transaction.  In a FIFO
 * queue that frees their groups' next messages: readers waiting for
 * messages are woken at commit, as by a send.
 */
static void
messages_removed(const QueueMeta *meta, int64 n)
{
	pending_removed(meta->id, n, true);
	if (meta->fifo && n > 0)
		pending_wake(meta->id);
}

/* A dedup_key: between 1 and GROUP_KEY_MAXLEN bytes, like a group key. */
static void
check_dedup_key(Datum key)
{
	text	   *t = DatumGetTextPP(key);

	if (VARSIZE_ANY_EXHDR(t) == 0 || VARSIZE_ANY_EXHDR(t) > GROUP_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dedup_key must hold between 1 and %d bytes", GROUP_KEY_MAXLEN)));
}

/*
 * Inserts one message (values as storage_send takes them, the payload in
 * values[4]), under a deduplication key unless key is NULL.  Returns its
 * id and whether it was sent; with a key already used within the window,
 * the first message's id and false.  With a key, the caller is in the
 * owner context (the key's reservation is SQL); storage_send needs none.
 */
static int64
send_one(const QueueMeta *meta, Datum *values, char *nulls, TimestampTz now, Datum key,
		 bool *sent)
{
	int64		id = 0;

	*sent = true;
	if (key != (Datum) 0 && !dedup_reserve(meta, key, now, &id))
	{
		*sent = false;
		return id;
	}
	storage_send(meta->id, values, nulls, &values[4], 1, &id);
	return id;
}

/*
 * queue.send(queue_name, payload, delay, headers, group_key, dedup_key,
 *			  priority) returns bigint
 */
Datum
queue_send(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_SEND);
	int64		delay = interval_arg_usecs(fcinfo, 2, "delay", 0, QUEUE_MAX_DELAY_USECS, 0);
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	bool		sent;
	int64		id;
	OwnerContext ctx;

	require_writable(fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must not be null"),
				 errhint("Send the JSON value 'null' if the message carries nothing.")));
	values[0] = TimestampTzGetDatum(now + delay);
	values[1] = TimestampTzGetDatum(now);
	values[2] = optional_group_key(fcinfo, 4, &isnull);
	nulls[2] = isnull ? 'n' : ' ';
	values[3] = optional_headers(fcinfo, 3, &isnull);
	nulls[3] = isnull ? 'n' : ' ';
	values[4] = PG_GETARG_DATUM(1);
	check_payload_size(values[4], values[3], nulls[3] == 'n');
	values[5] = priority_arg(fcinfo, 6);
	if (!PG_ARGISNULL(5))
		check_dedup_key(PG_GETARG_DATUM(5));

	if (PG_ARGISNULL(5))
		id = send_one(meta, values, nulls, now, (Datum) 0, &sent);
	else
	{
		owner_context_enter(&ctx);
		id = send_one(meta, values, nulls, now, PG_GETARG_DATUM(5), &sent);
		owner_context_exit(&ctx);
	}

	if (!sent)
		PG_RETURN_INT64(id);
	pending_sent(meta->id, 1);
	if (delay > 0)
		pending_hidden(meta->id, now + delay, 0, 1);
	PG_RETURN_INT64(id);
}

/*
 * send_batch with dedup_keys: one message at a time, each under its key
 * (or none); returns how many were sent anew.
 */
static uint64
send_each(const QueueMeta *meta, Datum *values, char *nulls, TimestampTz now,
		  const Datum *payloads, int npayloads, const Datum *keys, const bool *key_nulls,
		  ReturnSetInfo *rsinfo)
{
	uint64		sent = 0;

	for (int i = 0; i < npayloads; i++)
	{
		bool		new_message;
		Datum		id;
		bool		isnull = false;

		values[4] = payloads[i];
		id = Int64GetDatum(send_one(meta, values, nulls, now,
									key_nulls[i] ? (Datum) 0 : keys[i], &new_message));
		sent += new_message;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
	}
	return sent;
}

/* The dedup_keys argument: one key or NULL per payload. */
static void
dedup_keys_arg(FunctionCallInfo fcinfo, int argno, int npayloads, Datum **keys, bool **nulls)
{
	int			nkeys;

	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, -1, false, TYPALIGN_INT,
					  keys, nulls, &nkeys);
	if (nkeys != npayloads)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dedup_keys must hold one element per payload"),
				 errdetail("There are %d payloads and %d keys.", npayloads, nkeys),
				 errhint("Use NULL elements for messages without a key.")));
	for (int i = 0; i < nkeys; i++)
	{
		if (!(*nulls)[i])
			check_dedup_key((*keys)[i]);
	}
}

/*
 * queue.send_batch(queue_name, payloads, delay, headers, group_key,
 *					dedup_keys, priority) returns setof bigint
 */
Datum
queue_send_batch(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_SEND);
	int64		delay = interval_arg_usecs(fcinfo, 2, "delay", 0, QUEUE_MAX_DELAY_USECS, 0);
	TimestampTz now = GetCurrentTimestamp();
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	Datum	   *payloads;
	bool	   *payload_nulls;
	int			npayloads;
	Datum	   *keys = NULL;
	bool	   *key_nulls = NULL;
	uint64		sent;
	OwnerContext ctx;

	require_writable(fcinfo);
	require_not_null(fcinfo, 1, "payloads");
	values[2] = optional_group_key(fcinfo, 4, &isnull);
	nulls[2] = isnull ? 'n' : ' ';
	values[3] = optional_headers(fcinfo, 3, &isnull);
	nulls[3] = isnull ? 'n' : ' ';
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), JSONBOID, -1, false, TYPALIGN_INT,
					  &payloads, &payload_nulls, &npayloads);
	if (npayloads > QUEUE_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payloads must hold at most %d messages", QUEUE_MAX_BATCH),
				 errdetail("The array holds %d.", npayloads)));
	for (int i = 0; i < npayloads; i++)
	{
		if (payload_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("payloads must not contain nulls"),
					 errdetail("Element %d is null.", i + 1)));
		check_payload_size(payloads[i], values[3], nulls[3] == 'n');
	}
	if (!PG_ARGISNULL(5))
		dedup_keys_arg(fcinfo, 5, npayloads, &keys, &key_nulls);
	values[5] = priority_arg(fcinfo, 6);
	values[0] = TimestampTzGetDatum(now + delay);
	values[1] = TimestampTzGetDatum(now);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (keys != NULL)
	{
		owner_context_enter(&ctx);
		sent = send_each(meta, values, nulls, now, payloads, npayloads, keys, key_nulls, rsinfo);
		owner_context_exit(&ctx);
	}
	else
	{
		int64	   *ids = palloc0(sizeof(int64) * Max(npayloads, 1));

		storage_send(meta->id, values, nulls, payloads, npayloads, ids);
		sent = npayloads;
		isnull = false;
		for (int i = 0; i < npayloads; i++)
		{
			Datum		id = Int64GetDatum(ids[i]);

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
		}
	}

	if (sent > 0)
		pending_sent(meta->id, (int64) sent);
	if (sent > 0 && delay > 0)
		pending_hidden(meta->id, now + delay, 0, (int32) sent);
	PG_RETURN_NULL();
}

/*
 * Moves messages (locked by the caller) to the queue's dead-letter queue and
 * returns how many moved.
 */
static int64
dead_letter_ids(const QueueMeta *meta, Datum ids)
{
	Datum		values[2];
	uint64		moved;
	const QueueMeta *target = queue_lookup_by_id(meta->dead_letter_id);

	/*
	 * The caller locked this queue, not its dead-letter queue: an alter may
	 * have pointed it elsewhere since, and a drop removed the old one.
	 */
	if (target != NULL)
		target = queue_lock(target, AccessShareLock);
	if (target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the dead-letter queue of queue \"%s\" was dropped while this statement ran",
						meta->name),
				 errhint("Try again: the queue's settings have changed.")));
	values[0] = ids;
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	moved = storage_move(STMT_DEAD_LETTER, meta->id, meta->dead_letter_id, values, NULL);
	if (moved > 0)
		pending_dead_lettered(meta->id, meta->dead_letter_id, (int64) moved);
	/* their groups' next messages are free now */
	if (moved > 0 && meta->fifo)
		pending_wake(meta->id);
	return (int64) moved;
}

/*
 * Fetches the toasted columns of a claimed message: pop deletes the row, and
 * with it what a toast pointer would point to, before the caller reads it.
 */
static void
detoast_message(Datum *values, const bool *nulls)
{
	static const int varlena_columns[] = {2, 3, 4, 8};	/* payload, headers, group_key, last_error */

	for (int i = 0; i < (int) lengthof(varlena_columns); i++)
	{
		int			col = varlena_columns[i] - 1;

		if (!nulls[col])
			values[col] = PointerGetDatum(PG_DETOAST_DATUM_PACKED(values[col]));
	}
}

/* What a claim does with the messages it locks. */
typedef enum ClaimMode
{
	CLAIM_LEASE,				/* read: lease them, written at commit */
	CLAIM_POP,					/* pop: delete them now */
	CLAIM_LOCK					/* a drain worker: keep them locked, nothing else */
} ClaimMode;

/*
 * Claims up to max_messages visible messages (in a FIFO queue, up to
 * per_group of one group: storage_claim): locks them, puts the
 * deliverable ones into store (attempts counting this delivery) and moves
 * those past max_attempts to the dead-letter queue, claiming again to fill
 * the batch.  A lease gets a new receipt, recorded to be written at commit;
 * pop deletes the delivered messages at once; a lock leaves them to the
 * caller's transaction.  The receipt is NULL unless leased.  Returns how
 * many it delivered.
 */
static int
claim_into(const QueueMeta *meta, int max_messages, int per_group, int64 visibility_usecs,
		   ClaimMode mode, const int64 *held, int nheld, Tuplestorestate *store, TupleDesc desc)
{
	int			delivered = 0;
	/* the rows this transaction holds already, then the ones claimed here */
	int64	   *locked_ids = palloc(sizeof(int64) * (nheld + max_messages));
	int64	   *delivered_ids = locked_ids + nheld;

	if (nheld > 0)
		memcpy(locked_ids, held, sizeof(int64) * nheld);
	/*
	 * A recycle's TRUNCATE empties a segment for a snapshot older than it,
	 * whose copies of the segment's messages it cannot see: a group's
	 * earlier message could seem gone.
	 */
	if (meta->fifo && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot read from FIFO queue \"%s\" in a %s transaction", meta->name,
						XactIsoLevel == XACT_SERIALIZABLE ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Read from FIFO queues in READ COMMITTED transactions.")));

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz visible_at = now + visibility_usecs;
		int64		receipt = queue_random_int64();
		int			first = delivered;
		int			nexclude;
		int64	   *exclude;
		StorageRows claimed;
		int64	   *dead_ids;
		int			ndead = 0;

		/* rows this transaction locked already: SKIP LOCKED does not skip them */
		exclude = lease_ids(meta->id, locked_ids, nheld + delivered, &nexclude);
		claimed = storage_claim(meta, now, exclude, nexclude, max_messages - delivered, per_group);
		if (claimed.ntuples == 0)
			break;

		dead_ids = palloc(sizeof(int64) * claimed.ntuples);
		for (int i = 0; i < claimed.ntuples; i++)
		{
			Datum		values[MSG_NCOLS];
			bool		nulls[MSG_NCOLS];
			int32		attempts;

			heap_deform_tuple(claimed.tuples[i], claimed.tupdesc, values, nulls);
			attempts = DatumGetInt32(values[MSG_COL_ATTEMPTS - 1]) + 1;
			if (meta->max_attempts > 0 && attempts > meta->max_attempts)
			{
				dead_ids[ndead++] = DatumGetInt64(values[MSG_COL_ID - 1]);
				continue;
			}
			detoast_message(values, nulls);
			values[MSG_COL_ATTEMPTS - 1] = Int32GetDatum(attempts);
			values[MSG_COL_VISIBLE_AT - 1] = TimestampTzGetDatum(visible_at);
			values[MSG_COL_RECEIPT - 1] = Int64GetDatum(receipt);
			nulls[MSG_COL_RECEIPT - 1] = mode != CLAIM_LEASE;
			delivered_ids[delivered++] = DatumGetInt64(values[MSG_COL_ID - 1]);
			tuplestore_putvalues(store, desc, values, nulls);
		}
		/* the rows are copied out; a long wait must not keep every pass's */
		storage_rows_free(&claimed);
		pending_locked(meta->id);
		if (ndead > 0)
			dead_letter_ids(meta, storage_id_array(dead_ids, ndead));
		if (mode == CLAIM_LEASE && delivered > first)
			lease_record(meta->id, receipt, visible_at, delivered - first, delivered_ids + first);
		if (ndead == 0 || delivered >= max_messages)
			break;
	}

	if (mode == CLAIM_POP && delivered > 0)
	{
		Datum		ids = storage_id_array(delivered_ids, delivered);

		(void) storage_by_id(STMT_DELETE_IDS, meta->id, lowest(delivered_ids, delivered),
							 &ids, NULL, (uint64) delivered);
		messages_removed(meta, delivered);
	}
	return delivered;
}

/*
 * Delivers messages into the function's result set, waiting up to
 * wait_usecs for a commit to bring some.  The wakeup sequence is read before
 * each look, so a commit between the look and the sleep is never missed.
 * The sleep also ends when a delayed or leased message becomes visible
 * again (wakeup_wait), so those are found without polling.
 */
static void
deliver(FunctionCallInfo fcinfo, const QueueMeta *meta, int max_messages, int per_group,
		int64 visibility_usecs, int64 wait_usecs, bool pop)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz deadline = GetCurrentTimestamp() + wait_usecs;
	OwnerContext ctx;

	if (wait_usecs > 0 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot wait for messages in a %s transaction",
						XactIsoLevel == XACT_SERIALIZABLE ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("Its snapshot cannot see messages sent after it began."),
				 errhint("Wait in a READ COMMITTED transaction, or read without wait.")));

	InitMaterializedSRF(fcinfo, 0);
	owner_context_enter(&ctx);
	/* the hidden counts tell the wait when delayed messages reappear */
	if (wait_usecs > 0 && !counters_hidden_known(meta->id))
		queue_count_once(meta);
	for (;;)
	{
		uint64		seen = wait_usecs > 0 ? wakeup_sequence(meta->id) : 0;

		if (claim_into(meta, max_messages, per_group, visibility_usecs,
					   pop ? CLAIM_POP : CLAIM_LEASE, NULL, 0, rsinfo->setResult,
					   rsinfo->setDesc) > 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			break;
		wakeup_wait(meta->id, seen, deadline);
		CHECK_FOR_INTERRUPTS();
	}
	owner_context_exit(&ctx);
}

/*
 * A drain worker's claim: locks up to max_messages visible messages, other
 * than the nheld it holds already, for the rest of the caller's transaction
 * and puts them into store.  The caller is in the owner context.
 */
int
claim_messages(const QueueMeta *meta, int max_messages, const int64 *held, int nheld,
			   Tuplestorestate *store, TupleDesc desc)
{
	return claim_into(meta, max_messages, 1, 0, CLAIM_LOCK, held, nheld, store, desc);
}

/*
 * Settles a drain worker's batch in its transaction: deletes the messages
 * handled, and returns the failed ones to the queue with their attempts,
 * error and the time they become visible again, or moves them to the
 * dead-letter queue.  The caller is in the owner context.
 */
void
settle_messages(const QueueMeta *meta, const int64 *done, int ndone,
				const FailedMessage *failed, int nfailed)
{
	if (ndone > 0)
	{
		Datum		ids = storage_id_array(done, ndone);
		uint64		deleted = storage_by_id(STMT_DELETE_IDS, meta->id, lowest(done, ndone),
											&ids, NULL, (uint64) ndone).processed;

		messages_removed(meta, (int64) deleted);
	}
	if (nfailed > 0)
	{
		Datum	   *ids = palloc(sizeof(Datum) * nfailed);
		Datum	   *attempts = palloc(sizeof(Datum) * nfailed);
		Datum	   *errors = palloc(sizeof(Datum) * nfailed);
		Datum	   *visible = palloc(sizeof(Datum) * nfailed);
		int64	   *dead = palloc(sizeof(int64) * nfailed);
		int			ndead = 0;
		Datum		args[4];
		TimestampTz now = GetCurrentTimestamp();

		for (int i = 0; i < nfailed; i++)
		{
			ids[i] = Int64GetDatum(failed[i].id);
			attempts[i] = Int32GetDatum(failed[i].attempts);
			errors[i] = CStringGetTextDatum(failed[i].error);
			visible[i] = TimestampTzGetDatum(failed[i].visible_at);
			if (failed[i].dead)
				dead[ndead++] = failed[i].id;
			else if (failed[i].visible_at > now)
				pending_hidden(meta->id, failed[i].visible_at, 0, 1);
			else
				pending_wake(meta->id);
		}
		args[0] = PointerGetDatum(construct_array(ids, nfailed, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[1] = PointerGetDatum(construct_array(attempts, nfailed, INT4OID, 4, true, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_array(errors, nfailed, TEXTOID, -1, false, TYPALIGN_INT));
		args[3] = PointerGetDatum(construct_array(visible, nfailed, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		/* locked by this transaction: no recycle moves them, no read skips them */
		(void) storage_by_id(STMT_FAIL, meta->id, lowest_failed(failed, nfailed), args, NULL,
							 (uint64) nfailed);
		if (ndead > 0)
			dead_letter_ids(meta, storage_id_array(dead, ndead));
	}
}

/*
 * queue.read(queue_name, max_messages, visibility_timeout, wait, per_group)
 * returns setof queue.message
 */
Datum
queue_read(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	int			max_messages = batch_size_arg(fcinfo, 1, "max_messages");
	int64		visibility = interval_arg_usecs(fcinfo, 2, "visibility_timeout", 0,
												QUEUE_MAX_VISIBILITY_USECS,
												meta->visibility_usecs);
	int64		wait = interval_arg_usecs(fcinfo, 3, "wait", 0, QUEUE_MAX_WAIT_USECS, 0);
	int			per_group = batch_size_arg(fcinfo, 4, "per_group");

	require_writable(fcinfo);
	deliver(fcinfo, meta, max_messages, per_group, visibility, wait, false);
	PG_RETURN_NULL();
}

/* queue.pop(queue_name, max_messages, per_group) returns setof queue.message */
Datum
queue_pop(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	int			max_messages = batch_size_arg(fcinfo, 1, "max_messages");
	int			per_group = batch_size_arg(fcinfo, 2, "per_group");

	require_writable(fcinfo);
	deliver(fcinfo, meta, max_messages, per_group, meta->visibility_usecs, 0, true);
	PG_RETURN_NULL();
}

/*
 * Runs one lease-checked statement on (id, receipt); when it hit, returns
 * true and the message's visible_at before the statement.
 */
static bool
leased_statement(const QueueMeta *meta, StorageStatement stmt, Datum *args, const char *nulls,
				 TimestampTz *old_visible_at)
{
	OwnerContext ctx;
	bool		hit;
	bool		isnull;
	StorageRows r;

	/* a message read by this transaction gets its lease written first */
	lease_flush(meta->id);
	owner_context_enter(&ctx);
	r = storage_by_id(stmt, meta->id, DatumGetInt64(args[0]), args, nulls, 1);
	hit = r.ntuples > 0;
	if (hit)
		*old_visible_at = DatumGetTimestampTz(heap_getattr(r.tuples[0], 1, r.tupdesc, &isnull));
	owner_context_exit(&ctx);
	return hit;
}

/*
 * Deletes messages this transaction leased and has not written the lease
 * of, as acknowledged; puts their ids into the result set when given one.
 */
static uint64
delete_locked(const QueueMeta *meta, const int64 *ids, int n, ReturnSetInfo *rsinfo)
{
	Datum		arg = storage_id_array(ids, n);
	uint64		deleted;
	StorageRows r;
	OwnerContext ctx;

	owner_context_enter(&ctx);
	r = storage_by_id(STMT_DELETE_IDS, meta->id, lowest(ids, n), &arg, NULL, (uint64) n);
	deleted = r.processed;
	for (int i = 0; rsinfo != NULL && i < r.ntuples; i++)
	{
		bool		isnull;
		Datum		id = heap_getattr(r.tuples[i], 1, r.tupdesc, &isnull);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
	}
	owner_context_exit(&ctx);
	if (deleted > 0)
		messages_removed(meta, (int64) deleted);
	return deleted;
}

/*
 * A drain worker's careful claim: leases up to max_messages like read, so
 * that the delivery is counted when the claiming transaction commits,
 * before the handler runs.  The caller is in the owner context.
 */
int
claim_leased(const QueueMeta *meta, int max_messages, int64 visibility_usecs,
			 Tuplestorestate *store, TupleDesc desc)
{
	return claim_into(meta, max_messages, 1, visibility_usecs, CLAIM_LEASE, NULL, 0, store, desc);
}

/*
 * Settles a message a drain worker leased: deletes it as handled (failed
 * NULL), or gives it back failed, or dead-letters it.  Returns false when
 * the lease was lost.
 */
bool
settle_leased(const QueueMeta *meta, int64 id, int64 receipt, const FailedMessage *failed)
{
	Datum		args[4];
	TimestampTz old_visible_at;
	OwnerContext ctx;

	args[0] = Int64GetDatum(id);
	args[1] = Int64GetDatum(receipt);
	if (failed == NULL)
	{
		if (!leased_statement(meta, STMT_ACK, args, NULL, &old_visible_at))
			return false;
		messages_removed(meta, 1);
		pending_hidden(meta->id, old_visible_at, -1, 0);
		return true;
	}
	args[2] = TimestampTzGetDatum(failed->visible_at);
	args[3] = CStringGetTextDatum(failed->error);
	if (!leased_statement(meta, STMT_NACK, args, NULL, &old_visible_at))
		return false;
	pending_hidden(meta->id, old_visible_at, -1, 0);
	if (failed->dead)
	{
		owner_context_enter(&ctx);
		dead_letter_ids(meta, storage_id_array(&id, 1));
		owner_context_exit(&ctx);
	}
	else if (failed->visible_at > GetCurrentTimestamp())
		pending_hidden(meta->id, failed->visible_at, 0, 1);
	else
		pending_wake(meta->id);
	return true;
}

/* queue.ack(queue_name, id, receipt) returns boolean */
Datum
queue_ack(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	int64		id = required_int8_arg(fcinfo, 1, "id");
	int64		receipt = required_int8_arg(fcinfo, 2, "receipt");
	Datum		args[2];
	TimestampTz old_visible_at;

	require_writable(fcinfo);
	switch (lease_consume(meta->id, id, receipt))
	{
		case LEASE_MATCH:
			/* read by this transaction: its lease was never written */
			PG_RETURN_BOOL(delete_locked(meta, &id, 1, NULL) > 0);
		case LEASE_OTHER:
			PG_RETURN_BOOL(false);
		case LEASE_NONE:
			break;
	}
	args[0] = Int64GetDatum(id);
	args[1] = Int64GetDatum(receipt);
	if (!leased_statement(meta, STMT_ACK, args, NULL, &old_visible_at))
		PG_RETURN_BOOL(false);
	messages_removed(meta, 1);
	pending_hidden(meta->id, old_visible_at, -1, 0);
	PG_RETURN_BOOL(true);
}

static ArrayType *
int8_array_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	ArrayType  *arr;

	require_not_null(fcinfo, argno, argname);
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", argname)));
	return arr;
}

/*
 * Acks the pairs of a batch that this transaction leased itself (deleting
 * them at once), drops those leased here under another receipt, and leaves
 * the rest in *ids and *receipts for the usual lease-checked delete.
 */
static void
split_own_leases(const QueueMeta *meta, ArrayType **ids, ArrayType **receipts,
				 ReturnSetInfo *rsinfo)
{
	Datum	   *id_elems;
	Datum	   *receipt_elems;
	bool	   *id_nulls;
	bool	   *receipt_nulls;
	int			n;
	int			nrest = 0;
	int			nown = 0;
	int64	   *own;

	deconstruct_array(*ids, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &id_elems, &id_nulls, &n);
	deconstruct_array(*receipts, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &receipt_elems, &receipt_nulls, &n);
	own = palloc(sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (id_nulls[i] || receipt_nulls[i])
			continue;
		switch (lease_consume(meta->id, DatumGetInt64(id_elems[i]), DatumGetInt64(receipt_elems[i])))
		{
			case LEASE_MATCH:
				own[nown++] = DatumGetInt64(id_elems[i]);
				break;
			case LEASE_OTHER:
				break;
			case LEASE_NONE:
				id_elems[nrest] = id_elems[i];
				receipt_elems[nrest++] = receipt_elems[i];
				break;
		}
	}
	if (nown > 0)
		(void) delete_locked(meta, own, nown, rsinfo);
	*ids = construct_array(id_elems, nrest, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	*receipts = construct_array(receipt_elems, nrest, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/* queue.ack(queue_name, ids, receipts) returns setof bigint */
Datum
queue_ack_batch(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	ArrayType  *ids = int8_array_arg(fcinfo, 1, "ids");
	ArrayType  *receipts = int8_array_arg(fcinfo, 2, "receipts");
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			nids = ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids));
	Datum		args[2];
	StorageRows acked;
	OwnerContext ctx;

	require_writable(fcinfo);
	if (nids != ArrayGetNItems(ARR_NDIM(receipts), ARR_DIMS(receipts)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ids and receipts must have the same length"),
				 errdetail("There are %d ids and %d receipts.", nids,
						   ArrayGetNItems(ARR_NDIM(receipts), ARR_DIMS(receipts)))));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (lease_pending(meta->id))
		split_own_leases(meta, &ids, &receipts, rsinfo);
	args[0] = PointerGetDatum(ids);
	args[1] = PointerGetDatum(receipts);

	owner_context_enter(&ctx);
	acked = storage_by_id(STMT_ACK_BATCH, meta->id, lowest_in_array(ids), args, NULL,
						  (uint64) ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids)));
	for (int i = 0; i < acked.ntuples; i++)
	{
		bool		isnull;
		Datum		id = heap_getattr(acked.tuples[i], 1, acked.tupdesc, &isnull);
		Datum		old_visible_at = heap_getattr(acked.tuples[i], 2, acked.tupdesc, &isnull);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
		pending_hidden(meta->id, DatumGetTimestampTz(old_visible_at), -1, 0);
	}
	owner_context_exit(&ctx);

	if (acked.processed > 0)
		messages_removed(meta, (int64) acked.processed);
	PG_RETURN_NULL();
}

/*
 * After a nack in a FIFO queue: gives back the messages of the nacked one's
 * group that the same read (receipt) took after it, read with per_group,
 * so that they are not handled before it (STMT_GIVE_BACK_RUN).  Their own
 * ack or nack then finds the lease lost.
 */
static void
give_back_run(const QueueMeta *meta, Datum id, Datum receipt)
{
	OwnerContext ctx;
	Datum		args[3];

	args[0] = id;
	args[1] = receipt;
	args[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	owner_context_enter(&ctx);
	run_plan(storage_plan(STMT_GIVE_BACK_RUN, meta->id, 0), args, NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		old = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		pending_hidden(meta->id, DatumGetTimestampTz(old), -1, 0);
	}
	owner_context_exit(&ctx);
}

/* queue.nack(queue_name, id, receipt, delay, error) returns boolean */
Datum
queue_nack(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	int64		delay = interval_arg_usecs(fcinfo, 3, "delay", 0, QUEUE_MAX_DELAY_USECS, 0);
	TimestampTz visible_at = GetCurrentTimestamp() + delay;
	TimestampTz old_visible_at;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	require_writable(fcinfo);
	args[0] = Int64GetDatum(required_int8_arg(fcinfo, 1, "id"));
	args[1] = Int64GetDatum(required_int8_arg(fcinfo, 2, "receipt"));
	args[2] = TimestampTzGetDatum(visible_at);
	args[3] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	nulls[3] = PG_ARGISNULL(4) ? 'n' : ' ';
	if (!leased_statement(meta, STMT_NACK, args, nulls, &old_visible_at))
		PG_RETURN_BOOL(false);
	pending_hidden(meta->id, old_visible_at, -1, 0);
	pending_hidden(meta->id, visible_at, 0, 1);
	if (meta->fifo)
		give_back_run(meta, args[0], args[1]);
	pending_wake(meta->id);
	PG_RETURN_BOOL(true);
}

/* queue.set_visibility(queue_name, id, receipt, visibility_timeout) returns boolean */
Datum
queue_set_visibility(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	int64		visibility = interval_arg_usecs(fcinfo, 3, "visibility_timeout", 0,
												QUEUE_MAX_VISIBILITY_USECS, -1);
	TimestampTz visible_at = GetCurrentTimestamp() + visibility;
	TimestampTz old_visible_at;
	Datum		args[3];

	require_writable(fcinfo);
	args[0] = Int64GetDatum(required_int8_arg(fcinfo, 1, "id"));
	args[1] = Int64GetDatum(required_int8_arg(fcinfo, 2, "receipt"));
	args[2] = TimestampTzGetDatum(visible_at);
	if (!leased_statement(meta, STMT_SET_VISIBILITY, args, NULL, &old_visible_at))
		PG_RETURN_BOOL(false);
	pending_hidden(meta->id, old_visible_at, -1, 0);
	pending_hidden(meta->id, visible_at, 1, 0);
	if (visibility == 0)
		pending_wake(meta->id);
	PG_RETURN_BOOL(true);
}

/*
 * queue.archive(queue_name, id, receipt) returns boolean.  Archived
 * messages older than the queue's retention are pruned on the way; the
 * prune is an index range scan that finds nothing most of the time.
 */
Datum
queue_archive(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[3];
	StorageRows archived;
	TimestampTz old_visible_at = 0;
	bool		isnull;
	OwnerContext ctx;

	require_writable(fcinfo);
	args[0] = Int64GetDatum(required_int8_arg(fcinfo, 1, "id"));
	args[1] = Int64GetDatum(required_int8_arg(fcinfo, 2, "receipt"));
	args[2] = TimestampTzGetDatum(now);

	lease_flush(meta->id);
	owner_context_enter(&ctx);
	archived = storage_by_id(STMT_ARCHIVE, meta->id, DatumGetInt64(args[0]), args, NULL, 1);
	if (archived.ntuples > 0)
		old_visible_at = DatumGetTimestampTz(heap_getattr(archived.tuples[0], 1,
														  archived.tupdesc, &isnull));
	if (meta->retention_usecs >= 0)
	{
		Datum		cutoff = TimestampTzGetDatum(now - meta->retention_usecs);

		run_plan(storage_plan(STMT_PRUNE_ARCHIVE, meta->id, 0), &cutoff, NULL);
	}
	owner_context_exit(&ctx);

	if (archived.processed == 0)
		PG_RETURN_BOOL(false);
	messages_removed(meta, 1);
	pending_hidden(meta->id, old_visible_at, -1, 0);
	PG_RETURN_BOOL(true);
}

/* queue.archived(queue_name) returns setof queue.archived_message */
Datum
queue_archived(PG_FUNCTION_ARGS)
{
	const QueueMeta *meta = queue_open(fcinfo, 0, "queue_name", QUEUE_PRIV_READ);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		n;
	OwnerContext ctx;

	InitMaterializedSRF(fcinfo, 0);
	owner_context_enter(&ctx);
	n = run_plan(storage_plan(STMT_LIST_ARCHIVE, meta->id, 0), NULL, NULL);
	for (uint64 i = 0; i < n; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	owner_context_exit(&ctx);
	PG_RETURN_NULL();
}
