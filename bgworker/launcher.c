/*
 * launcher.c
 *    The launcher: one background worker per server, registered at preload
 *    and restarted by the postmaster when it exits, that starts the drain
 *    workers (drain.c) each consumer needs and never more than
 *    queue.max_workers of them in all.
 *
 * It connects to no database.  At start it has every database maintained
 * (a short-lived worker that copies the database's consumers into the
 * registry and does the housekeeping of its queues, see maintain.c); after
 * that, transactions that change consumers ask for their database's
 * maintenance when they commit, and the databases the extension is
 * installed in are maintained every queue.maintenance_interval.  It starts
 * on a primary only (BgWorkerStart_RecoveryFinished), so a standby runs no
 * consumers until it is promoted.
 *
 * A consumer without workers gets one when its queue may have work: a
 * commit has added messages since its last worker went idle (the commit
 * sets the launcher's latch, see queue_has_work), or a hidden message is
 * due.  A consumer with workers gets another, up to its max_concurrency,
 * when a worker claims a full batch.  A worker that fails to start or ends
 * on an error makes the launcher back off that consumer; running out of
 * background worker slots makes it back off altogether, with one warning
 * per backoff.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "queue.h"

PGDLLEXPORT void queue_launcher_main(Datum main_arg);

#define LAUNCHER_NAPTIME_MS		1000
#define MAX_BACKOFF_USECS		(INT64CONST(60) * USECS_PER_SEC)

static BackgroundWorkerHandle **handles;	/* by worker slot */
static uint32 *generations;
#define MAX_SCHEDULED			256

static List *maintenance_due = NIL; /* databases to maintain next, as Oids */
static int	nscheduled = 0;		/* databases maintained every interval */
static Oid	scheduled_db[MAX_SCHEDULED];
static TimestampTz scheduled_at[MAX_SCHEDULED];
static int	maintenance_slot = -1;
static TimestampTz slots_backoff_until = 0;
static int64 slots_backoff_usecs = USECS_PER_SEC;
static int	next_consumer = 0;	/* round robin start */

void
launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "queue", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "queue_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "queue launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "queue launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/*
 * Registers a dynamic worker for a reserved slot; false when the server
 * has no background worker slot left.
 */
static bool
start_worker(int index, bool maintenance, const char *consumer_name)
{
	BackgroundWorker worker;
	WorkerSlot *w = registry_worker(index);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "queue", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "queue_worker_main", BGW_MAXLEN);
	if (maintenance)
	{
		strlcpy(worker.bgw_name, "queue maintenance", BGW_MAXLEN);
		strlcpy(worker.bgw_type, "queue maintenance", BGW_MAXLEN);
	}
	else
	{
		snprintf(worker.bgw_name, BGW_MAXLEN, "queue drain worker for %s", consumer_name);
		strlcpy(worker.bgw_type, "queue drain worker", BGW_MAXLEN);
	}
	worker.bgw_main_arg = Int32GetDatum(index);
	memcpy(worker.bgw_extra, &w->generation, sizeof(uint32));
	worker.bgw_notify_pid = MyProcPid;

	generations[index] = w->generation;
	if (RegisterDynamicBackgroundWorker(&worker, &handles[index]))
	{
		slots_backoff_usecs = USECS_PER_SEC;
		return true;
	}
	handles[index] = NULL;
	registry_release_worker(index, w->generation);
	slots_backoff_until = GetCurrentTimestamp() + slots_backoff_usecs;
	ereport(WARNING,
			(errmsg("queue launcher could not start a worker: no background worker slot is free"),
			 errdetail("Trying again in %lld ms.", (long long) (slots_backoff_usecs / 1000)),
			 errhint("Raise max_worker_processes (now %d) above queue.max_workers (now %d) plus what other extensions use.",
					 max_worker_processes, queue_max_workers)));
	slots_backoff_usecs = Min(slots_backoff_usecs * 2, MAX_BACKOFF_USECS);
	return false;
}

/* Backs off a consumer whose worker failed to start or failed. */
static void
consumer_backoff(const WorkerSlot *w)
{
	ConsumerSlot *c;

	registry_lock(true);
	c = registry_find_consumer(w->database, w->catalog, w->consumer_id);
	if (c != NULL)
	{
		if (!w->worked)
			consumer_note_error(c, "a drain worker exited before it could connect as the consumer's owner; see the server log");
		/* a worker that died in a batch may have been killed by a message */
		if (w->failed)
			c->careful = c->batch_size;
		if (!w->worked || w->failed)
		{
			int64		delay = USECS_PER_SEC << Min(c->start_failures, 6);

			c->start_failures++;
			c->next_start = GetCurrentTimestamp() + Min(delay, MAX_BACKOFF_USECS);
		}
		else
			c->start_failures = 0;
	}
	registry_unlock();
}

/* Releases the slots of workers that are gone. */
static void
reap_workers(void)
{
	for (int i = 0; i < registry_nworkers(); i++)
	{
		WorkerSlot *w = registry_worker(i);
		pid_t		pid;

		if (handles[i] == NULL)
		{
			/* a worker of an earlier launcher: gone, or never started */
			if (w->in_use && (w->exited || (w->pid == 0 &&
											GetCurrentTimestamp() > w->started_at + MAX_BACKOFF_USECS)))
				registry_release_worker(i, w->generation);
			continue;
		}
		if (GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;
		pfree(handles[i]);
		handles[i] = NULL;
		registry_release_worker(i, generations[i]);
		if (i == maintenance_slot)
			maintenance_slot = -1;
		else if (w->generation == generations[i])
			consumer_backoff(w);
	}
}

/* Every database that accepts connections and is not a template. */
static void
list_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!db->datallowconn || db->datistemplate)
			continue;
		old = MemoryContextSwitchTo(cxt);
		maintenance_due = list_append_unique_oid(maintenance_due, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
}

/*
 * Queues the maintenance of the databases the extension is installed in
 * whose interval has passed.
 */
static void
schedule_maintenance(void)
{
	Oid			dbs[MAX_SCHEDULED];
	int			n = registry_databases(dbs, MAX_SCHEDULED);
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = now + (int64) queue_maintenance_interval * 1000;
	int			kept = 0;

	for (int i = 0; i < n; i++)
	{
		TimestampTz at = next;

		for (int j = 0; j < nscheduled; j++)
		{
			if (scheduled_db[j] != dbs[i])
				continue;
			at = scheduled_at[j];
			if (at <= now)
			{
				maintenance_due = list_append_unique_oid(maintenance_due, dbs[i]);
				at = next;
			}
		}
		/* databases the registry no longer lists drop out here */
		scheduled_db[kept] = dbs[i];
		scheduled_at[kept++] = at;
	}
	nscheduled = kept;
}

/* Starts the next maintenance worker when none runs. */
static void
run_maintenance(void)
{
	bool		all;
	Oid			db;
	int			index;

	while (OidIsValid(db = registry_next_maintenance(&all)) || all)
	{
		if (all)
			list_databases();
		else
			maintenance_due = list_append_unique_oid(maintenance_due, db);
	}
	if (maintenance_slot >= 0 || maintenance_due == NIL ||
		GetCurrentTimestamp() < slots_backoff_until)
		return;
	db = linitial_oid(maintenance_due);
	if (registry_database_blocked(db))
	{
		/* its turn comes after the others' */
		maintenance_due = lappend_oid(list_delete_first(maintenance_due), db);
		return;
	}
	index = registry_reserve_worker(db, NULL);
	if (index < 0)
		return;
	if (start_worker(index, true, NULL))
	{
		maintenance_slot = index;
		maintenance_due = list_delete_first(maintenance_due);
	}
}

/*
 * Whether a consumer should get another worker now; the caller holds the
 * registry lock exclusively.
 */
static bool
needs_worker(ConsumerSlot *c, TimestampTz now)
{
	int			running;

	if (!c->in_use || c->paused || c->next_start > now ||
		registry_database_blocked(c->database))
		return false;
	running = registry_count_workers(c);
	if (running == 0)
	{
		/*
		 * Look at the time first, then note the next one: a pass after the
		 * noted time starts a worker however late it comes.
		 */
		bool		due = c->wake_at != 0 && now >= c->wake_at;

		c->wake_at = queue_next_visible(&c->queue);
		if (c->wake_at == DT_NOEND)
			c->wake_at = 0;
		return due || !c->seen_idle || queue_has_work(&c->queue, c->idle_seq, true);
	}
	if (running < c->max_concurrency && c->want_more)
	{
		c->want_more = false;
		return true;
	}
	return false;
}

/* Starts the drain workers consumers need, within queue.max_workers. */
static void
start_drain_workers(void)
{
	int			n = registry_nconsumers();
	TimestampTz now = GetCurrentTimestamp();
	int			total;

	if (now < slots_backoff_until)
		return;
	for (int k = 0; k < n; k++)
	{
		int			i = (next_consumer + k) % n;
		ConsumerSlot *c = registry_consumer(i);
		ConsumerSlot copy;
		bool		start;
		int			index;

		registry_lock(true);
		total = registry_count_workers(NULL);
		start = total < queue_max_workers && needs_worker(c, now);
		copy = *c;
		registry_unlock();
		if (!start)
			continue;
		index = registry_reserve_worker(copy.database, &copy);
		if (index < 0 || !start_worker(index, false, copy.name))
			return;
		next_consumer = (i + 1) % n;
	}
}

static void
launcher_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	registry_set_launcher(false);
}

void
queue_launcher_main(Datum main_arg pg_attribute_unused())
{
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * registry_nworkers());
	generations = MemoryContextAllocZero(TopMemoryContext, sizeof(uint32) * registry_nworkers());
	registry_set_launcher(true);
	before_shmem_exit(launcher_exit, (Datum) 0);
	/* what an earlier launcher had still to do is lost with it */
	registry_request_maintenance_all();
	ereport(LOG, (errmsg("queue launcher started")));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		reap_workers();
		schedule_maintenance();
		run_maintenance();
		start_drain_workers();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
