/*
 * shmem.c
 *    The extension's shared memory: one slot per queue holding its counters
 *    and its wakeup, and the transaction-local record of what the current
 *    transaction did to each queue, applied to the slots when it commits.
 *
 * Locking: the hash table's membership is guarded by one LWLock (shared to
 * find a slot, exclusive to add or remove one).  A slot's counters are
 * guarded by its spinlock; its wakeup sequence is an atomic.  Slots never
 * move while they exist, and a slot is removed only when its queue's DROP
 * commits, which waits (on the queue's table lock) for every transaction
 * that used the queue, so nobody holds a pointer to a removed slot.
 *
 * Counters and wakeups change only at commit (XACT_EVENT_COMMIT runs after
 * the commit is visible to other backends and before locks are released), so
 * a waiter is never woken by a send that is not yet visible and a rolled-back
 * transaction leaves no trace.  Subtransactions keep their own records, which
 * an aborted savepoint discards.
 *
 * "messages" (how many messages a queue stores) is counted once per server
 * start, by the first call that needs it, and kept up to date by the deltas
 * after that; see counters_set_messages.  When the table of slots is full,
 * further queues share one overflow wakeup and have no counters.  The slots
 * of a queue dropped with its whole database or extension stay until the
 * server restarts (see SlotKey).
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "queue.h"


typedef struct QueueSlot
{
	SlotKey		key;			/* hash key */
	pg_atomic_uint64 wake_seq;	/* bumped by every commit that adds work */
	pg_atomic_uint32 poke_launcher; /* the launcher waits for this queue */
	ConditionVariable cv;		/* readers waiting for wake_seq to move */
	slock_t		mutex;			/* guards the counters below */
	bool		messages_known;
	bool		hidden_known;	/* see hidden.c */
	int64		messages;
	int64		sent;
	int64		acked;
	int64		dead;
} QueueSlot;

typedef struct QueueShared
{
	LWLock	   *lock;			/* guards membership of slot_hash */
	pg_atomic_uint64 overflow_seq;	/* wakeup of queues without a slot */
	ConditionVariable overflow_cv;
} QueueShared;

/* A change of a queue's hidden counts in one second's bucket. */
typedef struct HiddenDelta
{
	int64		second;
	int32		in_flight;
	int32		delayed;
} HiddenDelta;

/* What the current transaction did to one queue, at one nesting level. */
typedef struct PendingQueue
{
	SlotKey		key;
	int64		queue_id;
	int			nest_level;
	int64		messages;
	int64		sent;
	int64		acked;
	int64		dead;
	bool		wake;
	bool		recount;		/* purged: count the messages again */
	bool		created;		/* a new queue: its counts start known, at 0 */
	bool		dropped;
	int			nhidden;		/* changes of hidden counts, by second */
	int			maxhidden;
	HiddenDelta *hidden;
} PendingQueue;

static QueueShared *shared = NULL;
static HTAB *slot_hash = NULL;
static List *pending = NIL;		/* of PendingQueue, in TopTransactionContext */
static List *to_wake = NIL;		/* of PendingQueue: the ending transaction's wakeups */

#ifdef QUEUE_HAS_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
shmem_size(void)
{
	return add_size(add_size(add_size(MAXALIGN(sizeof(QueueShared)),
									  hash_estimate_size(queue_max_queues, sizeof(QueueSlot))),
							 add_size(hidden_shmem_size(), segment_shmem_size())),
					registry_shmem_size());
}

static void
shmem_request(void)
{
#ifdef QUEUE_HAS_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(shmem_size());
	/* slots, registry, hidden buckets' partitions, segments */
	RequestNamedLWLockTranche("queue", 3 + hidden_lock_count());
}

static void
shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("queue", sizeof(QueueShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("queue"))->lock;
		pg_atomic_init_u64(&shared->overflow_seq, 0);
		ConditionVariableInit(&shared->overflow_cv);
	}
	info.keysize = sizeof(SlotKey);
	info.entrysize = sizeof(QueueSlot);
	slot_hash = ShmemInitHash("queue slots", queue_max_queues, queue_max_queues,
							  &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	registry_shmem_startup(&(GetNamedLWLockTranche("queue") + 1)->lock);
	hidden_shmem_startup(GetNamedLWLockTranche("queue") + 2);
	segment_shmem_startup(&(GetNamedLWLockTranche("queue") + 2 + hidden_lock_count())->lock);
	LWLockRelease(AddinShmemInitLock);
}

/* The key of a queue's slot: the queue of this database and installation. */
SlotKey
queue_slot_key(int64 queue_id)
{
	SlotKey		key;

	memset(&key, 0, sizeof(key));
	key.database = MyDatabaseId;
	key.catalog = catalog_relid();
	key.queue_id = queue_id;
	return key;
}

/* Finds a queue's slot, adding it when create is set and there is room. */
static QueueSlot *
slot_find(const SlotKey *key, bool create)
{
	QueueSlot  *slot;
	bool		found;

	LWLockAcquire(shared->lock, LW_SHARED);
	slot = hash_search(slot_hash, key, HASH_FIND, NULL);
	LWLockRelease(shared->lock);
	if (slot != NULL || !create)
		return slot;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = hash_search(slot_hash, key, HASH_ENTER_NULL, &found);
	if (slot != NULL && !found)
	{
		pg_atomic_init_u64(&slot->wake_seq, 0);
		pg_atomic_init_u32(&slot->poke_launcher, 0);
		ConditionVariableInit(&slot->cv);
		SpinLockInit(&slot->mutex);
		slot->messages_known = false;
		slot->hidden_known = false;
		slot->messages = slot->sent = slot->acked = slot->dead = 0;
	}
	LWLockRelease(shared->lock);
	return slot;
}

static QueueSlot *
slot_get(int64 queue_id, bool create)
{
	SlotKey		key = queue_slot_key(queue_id);

	return slot_find(&key, create);
}

static void
slot_remove(const SlotKey *key)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_search(slot_hash, key, HASH_REMOVE, NULL);
	LWLockRelease(shared->lock);
}

static void
wake_slot(QueueSlot *slot)
{
	pg_atomic_fetch_add_u64(&slot->wake_seq, 1);
	ConditionVariableBroadcast(&slot->cv);
	/* a consumer of this queue has no worker: the launcher starts one */
	if (pg_atomic_read_u32(&slot->poke_launcher) != 0 &&
		pg_atomic_exchange_u32(&slot->poke_launcher, 0) != 0)
		registry_poke_launcher();
}

/* Wakes a queue's waiters (those of queues without a slot: all of them). */
static void
wake_queue(const SlotKey *key)
{
	QueueSlot  *slot = slot_find(key, false);

	if (slot != NULL)
		wake_slot(slot);
	else
	{
		pg_atomic_fetch_add_u64(&shared->overflow_seq, 1);
		ConditionVariableBroadcast(&shared->overflow_cv);
	}
}

/* Adds a record to the wakeups due once the locks are released. */
static List *
wake_later(List *list, PendingQueue *p)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	list = lappend(list, p);
	MemoryContextSwitchTo(old);
	return list;
}

/* Applies one committed record to its queue's slot; must not throw. */
static void
apply_pending(const PendingQueue *p)
{
	QueueSlot  *slot;

	bool		hidden_ok = true;

	if (p->dropped)
	{
		hidden_forget(&p->key);
		slot_remove(&p->key);
		return;
	}
	if (p->recount || p->created)
		hidden_forget(&p->key);
	for (int i = 0; i < p->nhidden; i++)
		hidden_ok &= hidden_apply(&p->key, p->hidden[i].second,
								  p->hidden[i].in_flight, p->hidden[i].delayed);
	slot = slot_find(&p->key, true);
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	if (p->created)
	{
		slot->messages = 0;
		slot->messages_known = slot->hidden_known = true;
	}
	if (p->recount)
		slot->messages_known = slot->hidden_known = false;
	if (!hidden_ok)
		slot->hidden_known = false;
	slot->messages += p->messages;
	slot->sent += p->sent;
	slot->acked += p->acked;
	slot->dead += p->dead;
	SpinLockRelease(&slot->mutex);
}

static void
xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	ListCell   *lc;

	if (event == XACT_EVENT_PRE_COMMIT)
	{
		lease_flush(0);
		/* after the leases: a recycle copies them along with their rows */
		segment_pre_commit();
	}
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
			 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
			 event == XACT_EVENT_PREPARE)
	{
		lease_at_xact_end();
		segment_at_xact_end(event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT);
	}
	if (pending == NIL && !(event == XACT_EVENT_PRE_PREPARE && lease_any()))
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot prepare a transaction that used a queue"),
					 errdetail("Queue leases, counters and wakeups are written when the transaction commits in the backend that ran it.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			to_wake = NIL;
			foreach(lc, pending)
			{
				PendingQueue *p = (PendingQueue *) lfirst(lc);

				apply_pending(p);
				/* new hidden counts may end a waiter's sleep sooner than it planned */
				if (!p->dropped && (p->wake || p->nhidden > 0))
					to_wake = wake_later(to_wake, p);
			}
			pending = NIL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* rows the transaction had locked are there for the waiters again */
			to_wake = pending;
			pending = NIL;
			break;
		case XACT_EVENT_PREPARE:
			pending = NIL;
			break;
		default:
			break;
	}
}

/*
 * Wakes the waiters of the queues the ending transaction (or aborted
 * savepoint) changed, once its locks are gone: a FIFO group's lock is
 * released after the commit, and a waiter woken before would find the
 * group still locked and sleep on.  The records live in
 * TopTransactionContext, which outlives this phase.  Must not throw.
 */
static void
resource_release_callback(ResourceReleasePhase phase, bool isCommit pg_attribute_unused(),
						  bool isTopLevel pg_attribute_unused(), void *arg pg_attribute_unused())
{
	ListCell   *lc;

	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || to_wake == NIL)
		return;
	foreach(lc, to_wake)
		wake_queue(&((PendingQueue *) lfirst(lc))->key);
	to_wake = NIL;
}

/* A committed savepoint hands its records to its parent; an aborted one drops them. */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid pg_attribute_unused(),
				 SubTransactionId parentSubid pg_attribute_unused(),
				 void *arg pg_attribute_unused())
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	if (event == SUBXACT_EVENT_COMMIT_SUB || event == SUBXACT_EVENT_ABORT_SUB)
	{
		lease_at_subxact_end(event == SUBXACT_EVENT_COMMIT_SUB, level);
		segment_at_subxact_end(event == SUBXACT_EVENT_COMMIT_SUB, level);
	}
	if (pending == NIL)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, pending)
		{
			PendingQueue *p = lfirst(lc);

			if (p->nest_level >= level)
				p->nest_level = level - 1;
		}
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, pending)
		{
			PendingQueue *p = lfirst(lc);

			if (p->nest_level >= level)
			{
				to_wake = wake_later(to_wake, p);
				pending = foreach_delete_current(pending, lc);
			}
		}
	}
}

void
shmem_init(void)
{
#ifdef QUEUE_HAS_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
#else
	shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
	RegisterXactCallback(xact_callback, NULL);
	RegisterResourceReleaseCallback(resource_release_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}

/* Refuses to run without shared memory: 55000 with the setup as hint. */
void
require_preloaded(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("queue must be loaded via \"shared_preload_libraries\""),
				 errdetail("Queue wakeups and counters live in shared memory, which is set up only at server start."),
				 errhint("Add queue to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* The current transaction's record for a queue at the current level. */
static PendingQueue *
pending_entry(int64 queue_id)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;
	PendingQueue *p;
	MemoryContext old;

	foreach(lc, pending)
	{
		p = lfirst(lc);
		if (p->queue_id == queue_id && p->nest_level == level)
			return p;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(PendingQueue));
	p->key = queue_slot_key(queue_id);
	p->queue_id = queue_id;
	p->nest_level = level;
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
	return p;
}

void
pending_sent(int64 queue_id, int64 n)
{
	PendingQueue *p = pending_entry(queue_id);

	p->messages += n;
	p->sent += n;
	p->wake = true;
}

/* Messages left the queue: acknowledged (ack, pop, archive) or purged. */
void
pending_removed(int64 queue_id, int64 n, bool acked)
{
	PendingQueue *p = pending_entry(queue_id);

	p->messages -= n;
	if (acked)
		p->acked += n;
}

void
pending_dead_lettered(int64 from_queue_id, int64 to_queue_id, int64 n)
{
	PendingQueue *from = pending_entry(from_queue_id);
	PendingQueue *to;

	from->messages -= n;
	from->dead += n;
	to = pending_entry(to_queue_id);
	to->messages += n;
	to->wake = true;
}

/* Messages moved between queues without being sent anew (redrive). */
void
pending_moved(int64 from_queue_id, int64 to_queue_id, int64 n)
{
	PendingQueue *to;

	pending_entry(from_queue_id)->messages -= n;
	to = pending_entry(to_queue_id);
	to->messages += n;
	to->wake = true;
}

/* The transaction locked messages of the queue (a read): see wake_after_abort. */
void
pending_locked(int64 queue_id)
{
	(void) pending_entry(queue_id);
}

/* Messages became visible again without a send (nack): wake the waiters. */
void
pending_wake(int64 queue_id)
{
	pending_entry(queue_id)->wake = true;
}

/*
 * Records that messages start (+1) or stop (-1) being hidden until
 * visible_at, in flight (leased) or delayed.
 */
void
pending_hidden(int64 queue_id, TimestampTz visible_at, int32 in_flight, int32 delayed)
{
	PendingQueue *p = pending_entry(queue_id);
	int64		second = hidden_second(visible_at);
	HiddenDelta *d = NULL;

	for (int i = 0; i < p->nhidden; i++)
	{
		if (p->hidden[i].second == second)
		{
			d = &p->hidden[i];
			break;
		}
	}
	if (d == NULL)
	{
		if (p->nhidden == p->maxhidden)
		{
			p->maxhidden = Max(8, p->maxhidden * 2);
			p->hidden = p->hidden == NULL ?
				MemoryContextAlloc(TopTransactionContext, sizeof(HiddenDelta) * p->maxhidden) :
				repalloc(p->hidden, sizeof(HiddenDelta) * p->maxhidden);
		}
		d = &p->hidden[p->nhidden++];
		d->second = second;
		d->in_flight = d->delayed = 0;
	}
	d->in_flight += in_flight;
	d->delayed += delayed;
}

void
pending_purged(int64 queue_id)
{
	pending_entry(queue_id)->recount = true;
}

void
pending_created(int64 queue_id)
{
	pending_entry(queue_id)->created = true;
}

void
pending_dropped(int64 queue_id)
{
	pending_entry(queue_id)->dropped = true;
}

/* Whether the current transaction has changed the queue. */
bool
pending_touches(int64 queue_id)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		if (((PendingQueue *) lfirst(lc))->queue_id == queue_id)
			return true;
	}
	return false;
}

/* The queue's wakeup sequence; read it before looking for messages. */
uint64
wakeup_sequence(int64 queue_id)
{
	SlotKey		key = queue_slot_key(queue_id);

	return wakeup_sequence_key(&key);
}

uint64
wakeup_sequence_key(const SlotKey *key)
{
	QueueSlot  *slot = slot_find(key, true);

	if (slot == NULL)
		return pg_atomic_read_u64(&shared->overflow_seq);
	return pg_atomic_read_u64(&slot->wake_seq);
}

/*
 * When the queue's next hidden message becomes visible again, so that a
 * waiter can sleep until then; without counts to tell (table full, not yet
 * counted) it wakes up every second to look.
 */
static TimestampTz
next_visible_time(QueueSlot *slot, TimestampTz now)
{
	bool		known;
	int64		second;

	if (slot == NULL)
		return now + USECS_PER_SEC;
	SpinLockAcquire(&slot->mutex);
	known = slot->hidden_known;
	SpinLockRelease(&slot->mutex);
	if (!known)
		return now + USECS_PER_SEC;
	second = hidden_next_second(&slot->key);
	return second < 0 ? DT_NOEND : (second + 1) * USECS_PER_SEC;
}

/*
 * Sleeps until a commit moves the queue's wakeup sequence past "seen", a
 * hidden message becomes visible again, or the deadline passes.
 * Cancellable: the condition variable sleep services interrupts.
 */
void
wakeup_wait(int64 queue_id, uint64 seen, TimestampTz deadline)
{
	SlotKey		key = queue_slot_key(queue_id);

	wakeup_wait_key(&key, seen, deadline);
}

void
wakeup_wait_key(const SlotKey *key, uint64 seen, TimestampTz deadline)
{
	QueueSlot  *slot = slot_find(key, true);
	ConditionVariable *cv = slot ? &slot->cv : &shared->overflow_cv;
	pg_atomic_uint64 *seq = slot ? &slot->wake_seq : &shared->overflow_seq;
	TimestampTz until = Min(deadline, next_visible_time(slot, GetCurrentTimestamp()));

	ConditionVariablePrepareToSleep(cv);
	for (;;)
	{
		long		remaining;

		if (pg_atomic_read_u64(seq) != seen)
			break;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		if (remaining <= 0)
			break;
		ConditionVariableTimedSleep(cv, remaining, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/*
 * For the launcher: whether a commit has added work to a queue since a
 * consumer's last worker went idle at wakeup sequence since_seq.  With poke
 * set, the next commit that adds work sets the launcher's latch; the flag
 * is set before the look, so a commit cannot slip between the two
 * unnoticed.
 */
bool
queue_has_work(const SlotKey *key, uint64 since_seq, bool poke)
{
	QueueSlot  *slot = slot_find(key, false);

	if (slot == NULL)
		return since_seq != 0;	/* the slot went away: have a look */
	if (poke)
		pg_atomic_write_u32(&slot->poke_launcher, 1);
	pg_memory_barrier();
	return pg_atomic_read_u64(&slot->wake_seq) != since_seq;
}

/*
 * For the launcher: when the queue's next hidden (delayed, leased) message
 * is visible again; DT_NOEND when there is none, a second from now when
 * the counts are not known.
 */
TimestampTz
queue_next_visible(const SlotKey *key)
{
	return next_visible_time(slot_find(key, false), GetCurrentTimestamp());
}

/* Whether the queue's hidden counts are known (without reading them). */
bool
counters_hidden_known(int64 queue_id)
{
	QueueSlot  *slot = slot_get(queue_id, true);
	bool		known;

	if (slot == NULL)
		return true;			/* no counts to get: nothing to count */
	SpinLockAcquire(&slot->mutex);
	known = slot->hidden_known;
	SpinLockRelease(&slot->mutex);
	return known;
}

QueueCounters
counters_read(int64 queue_id)
{
	QueueCounters c = {0};
	QueueSlot  *slot = slot_get(queue_id, true);

	if (slot == NULL)
		return c;
	c.tracked = true;
	SpinLockAcquire(&slot->mutex);
	c.messages_known = slot->messages_known;
	c.hidden_known = slot->hidden_known;
	c.messages = slot->messages;
	c.sent = slot->sent;
	c.acked = slot->acked;
	c.dead = slot->dead;
	SpinLockRelease(&slot->mutex);
	if (c.hidden_known)
		hidden_read(&slot->key, &c.in_flight, &c.delayed);
	return c;
}

/*
 * Records a count of the queue's messages and of its hidden ones by second.
 * The caller counted under a lock that excludes writers and had no
 * uncommitted change of its own, so no delta is missing from the count nor
 * counted twice.
 */
void
counters_set_initial(int64 queue_id, int64 messages, int nseconds, const int64 *seconds,
					 const int32 *in_flight, const int32 *delayed)
{
	QueueSlot  *slot = slot_get(queue_id, true);
	bool		hidden_ok = true;

	if (slot == NULL)
		return;
	hidden_forget(&slot->key);
	for (int i = 0; i < nseconds; i++)
		hidden_ok &= hidden_apply(&slot->key, seconds[i], in_flight[i], delayed[i]);
	SpinLockAcquire(&slot->mutex);
	slot->messages = messages;
	slot->messages_known = true;
	slot->hidden_known = hidden_ok;
	SpinLockRelease(&slot->mutex);
}
