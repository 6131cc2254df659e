/*
 * consumer_views.c
 *    The views queue.consumers (each consumer's settings, from its catalog
 *    row, with its state and counters from the registry) and queue.workers
 *    (the live drain workers of this database).
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "queue.h"

PG_FUNCTION_INFO_V1(queue_consumer_stats);
PG_FUNCTION_INFO_V1(queue_worker_stats);

/* Visible messages of a queue from the shared counters; -1 if unknown. */
static int64
queue_backlog(int64 queue_id)
{
	QueueCounters q = counters_read(queue_id);

	if (!q.tracked || !q.messages_known || !q.hidden_known)
		return -1;
	return Max(q.messages - q.in_flight - q.delayed, 0);
}

static const char *
consumer_state(const ConsumerConfig *c, ConsumerSlot *slot, int workers)
{
	if (c->paused)
		return "paused";
	if (registry_launcher_pid() == 0)
		return "stopped";
	if (slot == NULL)
		return "starting";
	if (workers > 0)
		return slot->careful > 0 ? "careful" : "running";
	if (slot->next_start > GetCurrentTimestamp())
		return "backoff";
	return "idle";
}

/* The rows of queue.consumers: consumers of queues the caller may read. */
Datum
queue_consumer_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ConsumerConfig *configs;
	int			n;
	Oid			catalog;
	OwnerContext ctx;

	require_preloaded();
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	owner_context_enter(&ctx);
	n = consumer_catalog_load(0, &configs);
	catalog = consumer_catalog_relid();
	owner_context_exit(&ctx);

	for (int i = 0; i < n; i++)
	{
		ConsumerConfig *c = &configs[i];
		const QueueMeta *meta = queue_lookup_by_id(c->queue_id);
		ConsumerSlot *slot;
		ConsumerSlot copy;
		int			workers = 0;
		int64		backlog;
		Datum		values[22];
		bool		nulls[22] = {0};

		if (meta == NULL || (!queue_has_privilege(meta, QUEUE_PRIV_READ) &&
							 !has_privs_of_role(GetUserId(), c->owner)))
			continue;
		if (!counters_hidden_known(meta->id) || !counters_read(meta->id).messages_known)
		{
			owner_context_enter(&ctx);
			queue_count_once(meta);
			owner_context_exit(&ctx);
		}
		registry_lock(false);
		slot = registry_find_consumer(MyDatabaseId, catalog, c->id);
		if (slot != NULL)
		{
			workers = registry_count_workers(slot);
			SpinLockAcquire(&slot->mutex);
			copy = *slot;
			SpinLockRelease(&slot->mutex);
		}
		registry_unlock();

		values[0] = CStringGetTextDatum(c->name);
		values[1] = CStringGetTextDatum(meta->name);
		values[2] = ObjectIdGetDatum(c->handler);
		values[3] = ObjectIdGetDatum(c->owner);
		values[4] = CStringGetTextDatum(consumer_state(c, slot ? &copy : NULL, workers));
		values[5] = Int32GetDatum(c->batch_size);
		values[6] = usecs_interval(c->batch_window_usecs);
		values[7] = Int32GetDatum(c->max_concurrency);
		values[8] = Float8GetDatum(c->rate_limit);
		nulls[8] = c->rate_limit <= 0;
		values[9] = Int32GetDatum(c->max_attempts > 0 ? c->max_attempts : meta->max_attempts);
		nulls[9] = c->max_attempts <= 0 && meta->max_attempts <= 0;
		values[10] = usecs_interval(c->retry_backoff_usecs);
		values[11] = usecs_interval(c->max_retry_backoff_usecs);
		values[12] = usecs_interval(c->handler_timeout_usecs);
		values[13] = Int32GetDatum(workers);
		values[14] = Int64GetDatum(slot ? copy.batches : 0);
		values[15] = Int64GetDatum(slot ? copy.messages : 0);
		values[16] = Int64GetDatum(slot ? copy.failures : 0);
		values[17] = CStringGetTextDatum(slot ? copy.last_error : "");
		nulls[17] = slot == NULL || copy.last_error[0] == '\0';
		values[18] = TimestampTzGetDatum(slot ? copy.last_error_at : 0);
		nulls[18] = nulls[17];
		values[19] = Float8GetDatum(slot ? consumer_observed_rate(slot) : 0);
		backlog = queue_backlog(c->queue_id);
		values[20] = Int64GetDatum(backlog);
		nulls[20] = backlog < 0;
		values[21] = BoolGetDatum(c->paused);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_NULL();
}

/* The rows of queue.workers: the live drain workers of this database. */
Datum
queue_worker_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	require_preloaded();
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	for (int i = 0; i < registry_nworkers(); i++)
	{
		WorkerSlot *w = registry_worker(i);
		WorkerSlot copy;
		ConsumerSlot *c;
		char		consumer_name[NAMEDATALEN] = "";
		int64		queue_id = 0;
		const QueueMeta *meta;
		Datum		values[9];
		bool		nulls[9] = {0};

		registry_lock(false);
		if (!w->in_use || w->maintenance || w->exited || w->pid == 0 ||
			w->database != MyDatabaseId)
		{
			registry_unlock();
			continue;
		}
		SpinLockAcquire(&w->mutex);
		copy = *w;
		SpinLockRelease(&w->mutex);
		c = registry_find_consumer(copy.database, copy.catalog, copy.consumer_id);
		if (c != NULL)
		{
			strlcpy(consumer_name, c->name, NAMEDATALEN);
			queue_id = c->queue.queue_id;
		}
		registry_unlock();

		meta = queue_id ? queue_lookup_by_id(queue_id) : NULL;
		if (meta == NULL ? !superuser() : !queue_has_privilege(meta, QUEUE_PRIV_READ))
			continue;
		values[0] = Int32GetDatum(copy.pid);
		values[1] = CStringGetTextDatum(consumer_name);
		nulls[1] = consumer_name[0] == '\0';
		values[2] = CStringGetTextDatum(meta ? meta->name : "");
		nulls[2] = meta == NULL;
		values[3] = CStringGetTextDatum(worker_state_name(copy.state));
		values[4] = TimestampTzGetDatum(copy.started_at);
		values[5] = TimestampTzGetDatum(copy.batch_started_at);
		nulls[5] = copy.batch_started_at == 0;
		values[6] = Int32GetDatum(copy.batch_messages);
		values[7] = Int64GetDatum(copy.batches);
		values[8] = Int64GetDatum(copy.messages);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_NULL();
}
