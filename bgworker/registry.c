/*
 * registry.c
 *    The shared-memory registry of consumers and drain workers: what the
 *    launcher decides from, what the workers report into, and what the
 *    views queue.consumers and queue.workers show.
 *
 * Consumer slots are a cache of the consumer catalogs of every database,
 * written only by maintenance workers (drain.c), which read one database's
 * catalog and replace that database's slots.  Maintenance of a database is
 * requested at start (for every database), by each transaction that
 * changes a consumer, when it commits, and by the launcher every
 * queue.maintenance_interval for the databases the extension is installed
 * in, which the maintenance workers note here.  Slots also carry what must
 * be shared by all of a consumer's workers: the token bucket of its rate
 * limit (ratelimit.c) and its counters.
 *
 * Worker slots: one per possible background worker.  Only the launcher
 * reserves a slot (before it registers the worker) and frees it (when the
 * postmaster reports the worker gone), so a slot is taken for as long as
 * its process may exist and the cap on drain workers is exact.  A worker
 * marks its slot exited as it goes, which is all a restarted launcher,
 * without the handles of the workers of the one before, can go by.  A
 * generation number tells a reused slot from the one a worker was given.
 *
 * Locking: one LWLock guards membership of both arrays; the fields a slot's
 * owner updates while running (counters, state, the bucket) are guarded by
 * the slot's spinlock.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "queue.h"

#define MAX_REQUESTS	64
#define MAX_DATABASES	256

typedef struct Registry
{
	LWLock	   *lock;
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	pid_t		launcher_pid;
	bool		maintain_all;	/* every database needs maintenance */
	int			nrequests;
	Oid			requests[MAX_REQUESTS]; /* databases whose consumers changed */
	int			ndatabases;
	Oid			databases[MAX_DATABASES];	/* where the extension is installed */
	TimestampTz started_at;		/* shared memory set up: the server (re)started */
	Oid			blocked_database;	/* being dropped: start no worker in it */
	TimestampTz blocked_until;
	ConsumerSlot *consumers;
	WorkerSlot *workers;
} Registry;

static Registry *registry = NULL;
static int	nworker_slots = 0;

/* set in a worker: the slot it holds, released at exit */
static WorkerSlot *my_worker = NULL;

Size
registry_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(Registry));

	size = add_size(size, mul_size(queue_max_consumers, sizeof(ConsumerSlot)));
	size = add_size(size, mul_size(max_worker_processes, sizeof(WorkerSlot)));
	return size;
}

void
registry_shmem_startup(LWLock *lock)
{
	bool		found;
	char	   *base;

	registry = ShmemInitStruct("queue registry", registry_shmem_size(), &found);
	nworker_slots = max_worker_processes;
	base = (char *) registry + MAXALIGN(sizeof(Registry));
	if (!found)
	{
		memset(registry, 0, registry_shmem_size());
		registry->lock = lock;
		registry->maintain_all = true;
		registry->started_at = GetCurrentTimestamp();
	}
	registry->consumers = (ConsumerSlot *) base;
	registry->workers = (WorkerSlot *) (base + mul_size(queue_max_consumers, sizeof(ConsumerSlot)));
	if (!found)
	{
		for (int i = 0; i < queue_max_consumers; i++)
			SpinLockInit(&registry->consumers[i].mutex);
		for (int i = 0; i < nworker_slots; i++)
			SpinLockInit(&registry->workers[i].mutex);
	}
}

TimestampTz
registry_started_at(void)
{
	return registry->started_at;
}

bool
registry_ready(void)
{
	return registry != NULL;
}

int
registry_nconsumers(void)
{
	return queue_max_consumers;
}

int
registry_nworkers(void)
{
	return nworker_slots;
}

ConsumerSlot *
registry_consumer(int index)
{
	return &registry->consumers[index];
}

WorkerSlot *
registry_worker(int index)
{
	return &registry->workers[index];
}

void
registry_lock(bool exclusive)
{
	LWLockAcquire(registry->lock, exclusive ? LW_EXCLUSIVE : LW_SHARED);
}

void
registry_unlock(void)
{
	LWLockRelease(registry->lock);
}

/* Finds a consumer's slot; the caller holds the registry lock. */
ConsumerSlot *
registry_find_consumer(Oid database, Oid catalog, int64 consumer_id)
{
	for (int i = 0; i < queue_max_consumers; i++)
	{
		ConsumerSlot *c = &registry->consumers[i];

		if (c->in_use && c->database == database && c->catalog == catalog &&
			c->consumer_id == consumer_id)
			return c;
	}
	return NULL;
}

/* ---- the launcher's latch and the requests that set it ------------------ */

void
registry_set_launcher(bool running)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	registry->launcher_latch = running ? MyLatch : NULL;
	registry->launcher_pid = running ? MyProcPid : 0;
	LWLockRelease(registry->lock);
}

pid_t
registry_launcher_pid(void)
{
	return registry ? registry->launcher_pid : 0;
}

/* Wakes the launcher; cheap, and safe in a commit callback. */
void
registry_poke_launcher(void)
{
	Latch	   *latch;

	if (registry == NULL)
		return;
	latch = registry->launcher_latch;
	if (latch != NULL)
		SetLatch(latch);
}

/* Asks for maintenance of a database (its consumers, its queues). */
void
registry_request_maintenance(Oid database)
{
	bool		have = false;

	if (registry == NULL)
		return;
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < registry->nrequests; i++)
		have |= registry->requests[i] == database;
	if (!have && registry->nrequests < MAX_REQUESTS)
		registry->requests[registry->nrequests++] = database;
	else if (!have)
		registry->maintain_all = true;
	LWLockRelease(registry->lock);
	registry_poke_launcher();
}

/* Asks for maintenance of every database (a launcher that starts afresh). */
void
registry_request_maintenance_all(void)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	registry->maintain_all = true;
	LWLockRelease(registry->lock);
}

/*
 * The launcher takes the next database to maintain; InvalidOid: none.
 * *all: every database should be.
 */
Oid
registry_next_maintenance(bool *all)
{
	Oid			db = InvalidOid;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	*all = registry->maintain_all;
	registry->maintain_all = false;
	if (!*all && registry->nrequests > 0)
	{
		db = registry->requests[0];
		memmove(&registry->requests[0], &registry->requests[1],
				sizeof(Oid) * (registry->nrequests - 1));
		registry->nrequests--;
	}
	LWLockRelease(registry->lock);
	return db;
}

/*
 * Replaces the slots of one database with its current consumers, keeping
 * the counters of those that stay.  Consumers that do not fit are reported
 * by the caller.  Returns how many were stored.
 */
int
registry_replace_database(Oid database, Oid catalog, int n, const ConsumerSlot *fresh)
{
	int			stored = 0;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < queue_max_consumers; i++)
	{
		ConsumerSlot *c = &registry->consumers[i];
		bool		keep = false;

		if (!c->in_use || c->database != database)
			continue;
		for (int j = 0; j < n && c->catalog == catalog; j++)
			keep |= fresh[j].consumer_id == c->consumer_id;
		if (!keep)
			c->in_use = false;
	}
	for (int j = 0; j < n; j++)
	{
		ConsumerSlot *c = registry_find_consumer(database, catalog, fresh[j].consumer_id);

		if (c == NULL)
		{
			for (int i = 0; i < queue_max_consumers && c == NULL; i++)
			{
				if (!registry->consumers[i].in_use)
				{
					c = &registry->consumers[i];
					SpinLockAcquire(&c->mutex);
					c->batches = c->messages = c->failures = 0;
					c->last_error[0] = '\0';
					c->last_error_at = 0;
					c->tokens = fresh[j].batch_size;
					c->refilled_at = GetCurrentTimestamp();
					memset(c->rate_second, 0, sizeof(c->rate_second));
					memset(c->rate_count, 0, sizeof(c->rate_count));
					SpinLockRelease(&c->mutex);
					c->idle_seq = 0;
					c->seen_idle = false;
					c->want_more = false;
					c->next_start = 0;
					c->start_failures = 0;
					/* see careful mode in drain.c */
					c->careful = fresh[j].careful;
				}
			}
			if (c == NULL)
				continue;
		}
		c->database = database;
		c->catalog = catalog;
		c->consumer_id = fresh[j].consumer_id;
		c->queue = fresh[j].queue;
		c->owner = fresh[j].owner;
		strlcpy(c->name, fresh[j].name, sizeof(c->name));
		c->max_concurrency = fresh[j].max_concurrency;
		c->paused = fresh[j].paused;
		SpinLockAcquire(&c->mutex);
		c->rate_limit = fresh[j].rate_limit;
		c->batch_size = fresh[j].batch_size;
		c->tokens = Min(c->tokens, (double) c->batch_size);
		SpinLockRelease(&c->mutex);
		c->in_use = true;
		stored++;
	}
	LWLockRelease(registry->lock);
	return stored;
}

/* Notes whether the extension is installed in a database. */
void
registry_note_database(Oid database, bool installed)
{
	int			i;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (i = 0; i < registry->ndatabases && registry->databases[i] != database; i++)
		;
	if (installed && i == registry->ndatabases && i < MAX_DATABASES)
		registry->databases[registry->ndatabases++] = database;
	else if (!installed && i < registry->ndatabases)
		registry->databases[i] = registry->databases[--registry->ndatabases];
	LWLockRelease(registry->lock);
}

/* Copies out the databases the extension is installed in; returns how many. */
int
registry_databases(Oid *databases, int max)
{
	int			n;

	LWLockAcquire(registry->lock, LW_SHARED);
	n = Min(registry->ndatabases, max);
	memcpy(databases, registry->databases, sizeof(Oid) * n);
	LWLockRelease(registry->lock);
	return n;
}

/*
 * Finds a consumer, in any database but skip_database, owned by a role;
 * returns false when there is none.
 */
bool
registry_consumer_of_owner(Oid role, Oid skip_database, char *name, Oid *database)
{
	bool		found = false;

	LWLockAcquire(registry->lock, LW_SHARED);
	for (int i = 0; i < queue_max_consumers && !found; i++)
	{
		ConsumerSlot *c = &registry->consumers[i];

		if (c->in_use && c->owner == role && c->database != skip_database)
		{
			strlcpy(name, c->name, NAMEDATALEN);
			*database = c->database;
			found = true;
		}
	}
	LWLockRelease(registry->lock);
	return found;
}

/* Forgets a database's consumers (dropped, or the extension is gone). */
void
registry_forget_database(Oid database)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < queue_max_consumers; i++)
	{
		if (registry->consumers[i].database == database)
			registry->consumers[i].in_use = false;
	}
	LWLockRelease(registry->lock);
}

/*
 * Stops the drain workers of a database about to be dropped, and keeps the
 * launcher from starting new ones there for a while.
 */
void
registry_stop_database(Oid database)
{
	if (registry == NULL)
		return;
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	registry->blocked_database = database;
	registry->blocked_until = GetCurrentTimestamp() + 30 * USECS_PER_SEC;
	for (int i = 0; i < nworker_slots; i++)
	{
		WorkerSlot *w = &registry->workers[i];

		if (w->in_use && w->database == database && w->pid != 0)
		{
			w->stopping = true;
			kill(w->pid, SIGTERM);
		}
	}
	LWLockRelease(registry->lock);
}

/*
 * The command is over: the launcher may start workers there again once
 * maintenance has brought its consumers up to date, or forgets the
 * database when it was dropped.
 */
void
registry_stop_database_done(Oid database, bool dropped, bool maintain)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	if (registry->blocked_database == database)
		registry->blocked_until = 0;
	LWLockRelease(registry->lock);
	if (dropped)
	{
		registry_forget_database(database);
		registry_note_database(database, false);
	}
	else if (maintain)
		registry_request_maintenance(database);
	else
		registry_poke_launcher();
}

bool
registry_database_blocked(Oid database)
{
	return registry->blocked_database == database &&
		GetCurrentTimestamp() < registry->blocked_until;
}

/* ---- worker slots -------------------------------------------------------- */

/* Counts the reserved drain worker slots, of one consumer or (NULL) all. */
int
registry_count_workers(const ConsumerSlot *consumer)
{
	int			n = 0;

	for (int i = 0; i < nworker_slots; i++)
	{
		WorkerSlot *w = &registry->workers[i];

		if (w->in_use && !w->maintenance &&
			(consumer == NULL ||
			 (w->database == consumer->database && w->consumer_id == consumer->consumer_id)))
			n++;
	}
	return n;
}

/* Reserves a worker slot (launcher only); -1 when none is free. */
int
registry_reserve_worker(Oid database, const ConsumerSlot *consumer)
{
	int			found = -1;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nworker_slots && found < 0; i++)
	{
		WorkerSlot *w = &registry->workers[i];

		if (w->in_use)
			continue;
		w->in_use = true;
		w->generation++;
		w->pid = 0;
		w->database = database;
		w->maintenance = consumer == NULL;
		w->consumer_id = consumer ? consumer->consumer_id : 0;
		w->catalog = consumer ? consumer->catalog : InvalidOid;
		w->state = WORKER_STARTING;
		w->started_at = GetCurrentTimestamp();
		w->batch_started_at = 0;
		w->batch_messages = 0;
		w->batches = w->messages = 0;
		w->worked = false;
		w->failed = false;
		w->stopping = false;
		w->exited = false;
		found = i;
	}
	LWLockRelease(registry->lock);
	return found;
}

/* Releases a slot if it still holds the given generation. */
void
registry_release_worker(int index, uint32 generation)
{
	WorkerSlot *w = &registry->workers[index];

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	if (w->in_use && w->generation == generation)
	{
		w->in_use = false;
		w->pid = 0;
	}
	LWLockRelease(registry->lock);
}

static void
mark_my_worker_exited(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	if (my_worker == NULL)
		return;
	/*
	 * Dying in a batch (FATAL in the handler, say) is a failure, unless the
	 * worker was stopped on purpose: the launcher backs off.  Voluntary
	 * exits leave the state at WORKER_WAITING.
	 */
	if ((my_worker->state == WORKER_CLAIMING || my_worker->state == WORKER_HANDLING ||
		 my_worker->state == WORKER_COMMITTING) && !my_worker->stopping)
		my_worker->failed = true;
	my_worker->pid = 0;
	my_worker->exited = true;
	my_worker = NULL;
	registry_poke_launcher();
}

/*
 * Called by a starting worker: takes over the slot the launcher reserved.
 * Returns NULL when the slot was given away meanwhile.
 */
WorkerSlot *
registry_attach_worker(int index, uint32 generation)
{
	WorkerSlot *w = &registry->workers[index];
	bool		ok;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	ok = w->in_use && w->generation == generation;
	if (ok)
		w->pid = MyProcPid;
	LWLockRelease(registry->lock);
	if (!ok)
		return NULL;
	my_worker = w;
	before_shmem_exit(mark_my_worker_exited, (Datum) 0);
	return w;
}

/*
 * Whether a drain worker is one too many, now that its consumer's
 * max_concurrency or queue.max_workers was lowered: the workers with the
 * highest slots go first, so exactly the surplus leaves.
 */
bool
registry_worker_is_surplus(const WorkerSlot *me, const ConsumerSlot *consumer)
{
	int			mine_above = 0;
	int			all_above = 0;
	int			mine = 0;
	int			all = 0;

	LWLockAcquire(registry->lock, LW_SHARED);
	for (int i = 0; i < nworker_slots; i++)
	{
		WorkerSlot *w = &registry->workers[i];
		bool		same;

		if (!w->in_use || w->maintenance || w->exited)
			continue;
		same = w->database == consumer->database && w->consumer_id == consumer->consumer_id;
		all++;
		mine += same;
		if (w > me)
		{
			all_above++;
			mine_above += same;
		}
	}
	LWLockRelease(registry->lock);
	return (mine > consumer->max_concurrency && mine_above < mine - consumer->max_concurrency) ||
		(all > queue_max_workers && all_above < all - queue_max_workers);
}

void
worker_set_state(WorkerSlot *w, WorkerState state, int batch_messages)
{
	SpinLockAcquire(&w->mutex);
	w->state = state;
	if (state == WORKER_HANDLING)
	{
		w->batch_started_at = GetCurrentTimestamp();
		w->batch_messages = batch_messages;
	}
	else if (state == WORKER_WAITING)
		w->batch_messages = 0;
	SpinLockRelease(&w->mutex);
}

const char *
worker_state_name(WorkerState state)
{
	switch (state)
	{
		case WORKER_STARTING:
			return "starting";
		case WORKER_WAITING:
			return "waiting";
		case WORKER_CLAIMING:
			return "claiming";
		case WORKER_HANDLING:
			return "handling";
		case WORKER_COMMITTING:
			return "committing";
		case WORKER_MAINTAINING:
			return "maintaining";
	}
	return "unknown";
}

/* ---- what a consumer's workers share ------------------------------------ */

/* Copies text into a buffer of size bytes, cut between characters. */
void
copy_clipped(char *dst, const char *src, int size)
{
	int			len = pg_mbcliplen(src, strlen(src), size - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* Counts a committed batch. */
void
consumer_count_batch(ConsumerSlot *c, int handled, int failed, const char *error)
{
	int64		second = GetCurrentTimestamp() / USECS_PER_SEC;
	int			i = (int) (second % CONSUMER_RATE_WINDOW);

	SpinLockAcquire(&c->mutex);
	c->batches++;
	c->messages += handled;
	c->failures += failed;
	if (error != NULL)
	{
		copy_clipped(c->last_error, error, sizeof(c->last_error));
		c->last_error_at = GetCurrentTimestamp();
	}
	if (c->rate_second[i] != second)
	{
		c->rate_second[i] = second;
		c->rate_count[i] = 0;
	}
	c->rate_count[i] += handled + failed;
	SpinLockRelease(&c->mutex);
}

/* Records an error that ended a worker, for queue.consumers. */
void
consumer_note_error(ConsumerSlot *c, const char *error)
{
	SpinLockAcquire(&c->mutex);
	copy_clipped(c->last_error, error, sizeof(c->last_error));
	c->last_error_at = GetCurrentTimestamp();
	SpinLockRelease(&c->mutex);
}

/* Messages per second over the last full seconds of the window. */
double
consumer_observed_rate(ConsumerSlot *c)
{
	int64		now = GetCurrentTimestamp() / USECS_PER_SEC;
	int64		total = 0;

	SpinLockAcquire(&c->mutex);
	for (int i = 0; i < CONSUMER_RATE_WINDOW; i++)
	{
		if (c->rate_second[i] < now && c->rate_second[i] >= now - (CONSUMER_RATE_WINDOW - 1))
			total += c->rate_count[i];
	}
	SpinLockRelease(&c->mutex);
	return (double) total / (CONSUMER_RATE_WINDOW - 1);
}
