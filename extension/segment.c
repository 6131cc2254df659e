/*
 * segment.c
 *    A queue's ring of segment tables: which one takes new messages, where
 *    a read starts in each, and the recycling that empties a drained one
 *    with TRUNCATE.
 *
 * The model (PgQ's): queue 17 keeps its messages in QUEUE_SEGMENTS tables,
 * queue_internal.s17_0 .. s17_3, children (INHERITS) of the empty parent
 * queue_internal.q17, so that a query on q17 still sees every message.
 * Segments are used in turn, by generation: generation g lives in table
 * g % QUEUE_SEGMENTS, and the live generations are tail .. head.  Sends go
 * to the head.  The head is rotated (head + 1) when it has grown past
 * queue.segment_size or is older than queue.segment_age; the tail, once
 * drained (no deliverable message left, only a few hidden ones: in flight
 * or delayed), is recycled: under an ACCESS EXCLUSIVE lock that is only
 * tried, never waited for, its remaining rows are copied into the next
 * generation (ids, leases, attempts unchanged) and the table is emptied
 * with TRUNCATE, which needs no vacuum and does not care about old
 * snapshots.  head and tail are kept in queue_internal.segment_ring and, at
 * run time, in shared memory, where commits change them (never before).
 *
 * Why nothing is lost or delivered twice: a recycle holds the only lock on
 * the table, so no transaction that touched it is still running, and it
 * copies with a snapshot taken after that lock; the copy and the TRUNCATE
 * commit together.  A transaction that had read a message would have held a
 * lock on the table, so a moved message is never leased by two.  Senders
 * lock the head table and then check that its generation is still live
 * (segment_for_insert): a sender that lost a race with a recycle retries on
 * the new head instead of writing into a recycled table.
 *
 * Where reads start (the scan hint): acked messages leave dead index
 * entries, and while any old snapshot is open vacuum cannot remove them and
 * index scans cannot mark them dead, so a read that scanned ORDER BY id from
 * a segment's first entry would walk all of them.  Each segment therefore
 * keeps scan_from, an id below which every row is either dead for good or
 * listed as a straggler (a hidden row with the time it may become visible).
 * A probe walks the index from scan_from with a dirty snapshot (which also
 * sees rows of transactions still running) to the first row that is or may
 * become deliverable now, listing the hidden ones it passes.  Ids are
 * handed out before their rows commit, and a row may enter the index after
 * a probe passed its place, so every write that puts a row into a segment,
 * or makes a row visible sooner, reports its id (segment_note) once its
 * index entry exists: the report lowers scan_from when it is below it, and
 * while a probe runs it is remembered (low_seen), so that the probe cannot
 * raise scan_from past it.  A segment whose probe found nothing deliverable
 * is marked empty, and reads skip it (and so take no lock on it) until a
 * write reports a row or a straggler's time comes.  The hint is only an
 * optimisation of where to start; recycling copies every row of the table,
 * whatever the hint says.  A FIFO claim's head test also starts from it
 * (segment_floor): its probe for a group's earlier messages skips the dead
 * entries below, and so relies on the hint being exact in one direction:
 * no live row below scan_from that is not listed.
 *
 * More things a claim needs to know live here, with the ring: whether a
 * segment may hold messages with a priority (marked by the writes that put
 * one there, unknown for a table that held rows when the state was loaded
 * until a claim finds the queue has none, cleared when a new segment
 * starts), whether a lease may have been written into it (marked likewise,
 * assumed for a table that held rows when loaded), and where a fair
 * queue's next turn starts (the last group key a claim served).
 *
 * Who recycles: the maintenance worker the launcher starts for each
 * database (maintain.c calls storage_maintain); the backends themselves: a
 * backend that uses a queue whose maintenance is due runs it just before
 * its transaction commits, in a subtransaction whose failure is only
 * logged, under a lock that only one backend can take; and queue.recycle()
 * by hand.
 *
 * Locking: a queue's state is guarded by its spinlock; the table of states
 * by one LWLock.  Maintenance is serialised by a SHARE UPDATE EXCLUSIVE lock
 * on the parent table, only tried.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "queue.h"

#define MAINTAIN_EVERY_USECS (100 * 1000)	/* a queue is looked at this often */
#define PROBE_EVERY_USECS	(5 * 1000)	/* reads probe a segment this often */
#define MOVE_LIMIT			10000	/* hidden rows a recycle copies at most */

/* What is known of a segment's prioritized messages. */
typedef enum SegPriority
{
	PRIORITY_NONE,				/* none was written since it was last empty */
	PRIORITY_SOME,				/* one was written */
	PRIORITY_UNKNOWN			/* it held rows when the state was loaded */
} SegPriority;

/* Where reads start in one segment table; see the header comment. */
typedef struct SegHint
{
	int64		scan_from;		/* below it: dead rows and stragglers only */
	int64		low_seen;		/* lowest id reported since the probe began */
	bool		probing;
	bool		empty;			/* nothing deliverable at or above scan_from */
	bool		drained;		/* nothing deliverable, at most MOVE_LIMIT hidden rows */
	SegPriority priority;		/* whether it holds messages with a priority */
	bool		maybe_leased;	/* a lease may have been written into it */
	TimestampTz probed_at;
	int			nstrag;
	int64		strag_id[STRAGGLERS];
	TimestampTz strag_at[STRAGGLERS];	/* not visible before then */
} SegHint;

typedef struct SegState
{
	SlotKey		key;			/* hash key */
	slock_t		mutex;			/* guards everything below */
	bool		loaded;			/* head and tail read from the catalog */
	int64		head;
	int64		tail;
	TimestampTz head_since;
	TimestampTz next_check;		/* maintenance is not looked at before */
	int64		first_id[QUEUE_SEGMENTS];	/* per table: ids from here on went to it */
	SegHint		hint[QUEUE_SEGMENTS];
	char		fair_cursor[FAIR_CURSOR_BYTES]; /* a fair queue's next turn is after it */
} SegState;

/* A change of a queue's ring made by this transaction, applied at commit. */
typedef enum SegChangeKind
{
	SEG_ROTATED,
	SEG_RECYCLED,
	SEG_FORGET,					/* purged: start afresh */
	SEG_DROPPED
} SegChangeKind;

typedef struct SegChange
{
	int64		queue_id;
	SlotKey		key;
	int			nest_level;
	SegChangeKind kind;
	int64		generation;		/* the new head or tail */
	int64		first_id;		/* of a new head */
	TimestampTz at;
} SegChange;

static HTAB *seg_hash = NULL;
static LWLock *seg_lock = NULL;
static List *changes = NIL;		/* of SegChange, in TopTransactionContext */
static List *due_queues = NIL;	/* queue ids to maintain at pre-commit */

/* Shared memory for the segment state of queue.max_queues queues. */
Size
segment_shmem_size(void)
{
	return hash_estimate_size(queue_max_queues, sizeof(SegState));
}

/* Attaches to the table of segment states; lock guards its membership. */
void
segment_shmem_startup(LWLock *lock)
{
	HASHCTL		info;

	seg_lock = lock;
	info.keysize = sizeof(SlotKey);
	info.entrysize = sizeof(SegState);
	seg_hash = ShmemInitHash("queue segments", queue_max_queues, queue_max_queues,
							 &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/* A queue's key: the same as its slot's in shmem.c (database, installation, id). */
static SlotKey
seg_key(int64 queue_id)
{
	SlotKey		key;

	memset(&key, 0, sizeof(key));
	key.database = MyDatabaseId;
	key.catalog = catalog_relid();
	key.queue_id = queue_id;
	return key;
}

/* Forgets what a segment's hint knew: reads start at scan_from. */
static void
hint_reset(SegHint *h, int64 scan_from, bool empty)
{
	h->scan_from = scan_from;
	h->low_seen = PG_INT64_MAX;
	h->probing = false;
	h->empty = empty;
	h->drained = false;
	/* a table not known to be empty may hold anything */
	h->priority = empty ? PRIORITY_NONE : PRIORITY_UNKNOWN;
	h->maybe_leased = !empty;
	h->probed_at = 0;
	h->nstrag = 0;
}

/* A queue's shared state, created when missing; NULL when the table is full. */
static SegState *
seg_find(int64 queue_id, bool create)
{
	SlotKey		key;
	SegState   *st;
	bool		found;

	if (seg_hash == NULL)
		return NULL;
	key = seg_key(queue_id);
	LWLockAcquire(seg_lock, LW_SHARED);
	st = hash_search(seg_hash, &key, HASH_FIND, NULL);
	LWLockRelease(seg_lock);
	if (st != NULL || !create)
		return st;
	LWLockAcquire(seg_lock, LW_EXCLUSIVE);
	st = hash_search(seg_hash, &key, HASH_ENTER_NULL, &found);
	if (st != NULL && !found)
	{
		SpinLockInit(&st->mutex);
		st->loaded = false;
	}
	LWLockRelease(seg_lock);
	return st;
}

/*
 * Reads head and tail from queue_internal.segment_ring, in an owner context
 * of its own: a send calls this from outside one.
 */
static void
ring_from_catalog(int64 queue_id, int64 *head, int64 *tail)
{
	Oid			type = INT8OID;
	Datum		arg = Int64GetDatum(queue_id);
	bool		isnull;
	int			rc;
	OwnerContext ctx;

	owner_context_enter(&ctx);
	rc = SPI_execute_with_args("SELECT head, tail FROM queue_internal.segment_ring WHERE queue_id = $1",
							   1, &type, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "segment ring of queue " INT64_FORMAT " is missing", queue_id);
	*head = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*tail = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	owner_context_exit(&ctx);
}

/*
 * The live generations of a queue.  Loads the shared state on first use
 * after a start (nothing rotates before it is loaded, so the catalog is
 * current then).  Without shared state (more queues than queue.max_queues)
 * the ring is read from the catalog and never changes.
 */
SegmentRing
segment_ring(int64 queue_id)
{
	SegmentRing ring;
	SegState   *st = seg_find(queue_id, true);
	int64		head;
	int64		tail;

	if (st != NULL)
	{
		SpinLockAcquire(&st->mutex);
		ring.tracked = st->loaded;
		ring.head = st->head;
		ring.tail = st->tail;
		SpinLockRelease(&st->mutex);
		if (ring.tracked)
			return ring;
	}
	ring_from_catalog(queue_id, &head, &tail);
	ring.head = head;
	ring.tail = tail;
	ring.tracked = false;
	if (st == NULL)
		return ring;
	SpinLockAcquire(&st->mutex);
	if (!st->loaded)
	{
		st->loaded = true;
		st->head = head;
		st->tail = tail;
		st->head_since = GetCurrentTimestamp();
		st->next_check = 0;
		st->fair_cursor[0] = '\0';
		for (int i = 0; i < QUEUE_SEGMENTS; i++)
		{
			st->first_id[i] = 0;
			hint_reset(&st->hint[i], 0, false);
		}
	}
	ring.head = st->head;
	ring.tail = st->tail;
	ring.tracked = true;
	SpinLockRelease(&st->mutex);
	return ring;
}

/*
 * The OIDs of the segment tables of the queue looked up last (a send looks
 * twice per call; by name, that is two catalog cache probes each).  Only
 * a complete set is kept, and an invalidation of any of them (a drop, or
 * an abort of the transaction that created them) or of all relations
 * empties it.
 */
static int64 relids_queue = 0;
static Oid	relids[QUEUE_SEGMENTS];

static void
relids_inval_callback(Datum arg pg_attribute_unused(), Oid relid)
{
	for (int i = 0; i < QUEUE_SEGMENTS; i++)
	{
		if (!OidIsValid(relid) || relids[i] == relid)
			relids_queue = 0;
	}
}

/* The OID of one segment table of a queue (InvalidOid when dropped). */
Oid
segment_relid(int64 queue_id, int seg)
{
	static bool callback_registered = false;
	Oid			nsp;
	Oid			found[QUEUE_SEGMENTS];
	bool		complete = true;

	if (relids_queue == queue_id)
		return relids[seg];
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relids_inval_callback, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid(QUEUE_INTERNAL_SCHEMA, false);
	for (int i = 0; i < QUEUE_SEGMENTS; i++)
	{
		char		name[NAMEDATALEN];

		snprintf(name, sizeof(name), "s%lld_%d", (long long) queue_id, i);
		found[i] = get_relname_relid(name, nsp);
		complete &= OidIsValid(found[i]);
	}
	if (complete)
	{
		memcpy(relids, found, sizeof(relids));
		relids_queue = queue_id;
	}
	return found[seg];
}

/*
 * The segment table new rows of a queue go to, locked against recycling:
 * after the lock, the generation is checked again, so a sender that raced
 * with a recycle of that table moves on to the new head.
 */
int
segment_for_insert(int64 queue_id)
{
	for (;;)
	{
		SegmentRing ring = segment_ring(queue_id);
		SegmentRing now;
		int			seg = (int) (ring.head % QUEUE_SEGMENTS);

		LockRelationOid(segment_relid(queue_id, seg), RowExclusiveLock);
		now = segment_ring(queue_id);
		if (ring.head >= now.tail)
			return seg;
	}
}

/* Where a straggler is listed, or -1. */
static int
strag_find(const SegHint *h, int64 id)
{
	for (int i = 0; i < h->nstrag; i++)
	{
		if (h->strag_id[i] == id)
			return i;
	}
	return -1;
}

/* Unlists a straggler (order does not matter). */
static void
strag_remove(SegHint *h, int i)
{
	h->nstrag--;
	h->strag_id[i] = h->strag_id[h->nstrag];
	h->strag_at[i] = h->strag_at[h->nstrag];
}

/*
 * Reports a row written into a segment (sent, moved, dead-lettered,
 * redriven: id is the lowest of the statement's) or made visible sooner
 * (nack, set_visibility), once its index entry exists and before it
 * commits.  See the header comment.
 */
void
segment_note(int64 queue_id, int seg, int64 id, TimestampTz visible_at)
{
	SegState   *st = seg_find(queue_id, false);
	SegHint    *h;

	if (st == NULL)
		return;
	h = &st->hint[seg];
	SpinLockAcquire(&st->mutex);
	if (id < h->low_seen)
		h->low_seen = id;
	h->empty = false;
	h->drained = false;
	if (id < h->scan_from)
	{
		int			i = strag_find(h, id);

		if (i < 0)
			h->scan_from = id;
		else if (visible_at < h->strag_at[i])
			h->strag_at[i] = visible_at;
	}
	SpinLockRelease(&st->mutex);
}

/* Reports a message with a priority written into a segment. */
void
segment_note_priority(int64 queue_id, int seg)
{
	SegState   *st = seg_find(queue_id, false);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	st->hint[seg].priority = PRIORITY_SOME;
	SpinLockRelease(&st->mutex);
}

/* Reports a lease written into a segment (by an update, or a recycle's copy). */
void
segment_note_lease(int64 queue_id, int seg)
{
	SegState   *st = seg_find(queue_id, false);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	st->hint[seg].maybe_leased = true;
	SpinLockRelease(&st->mutex);
}

/*
 * Whether a lease may have been written into a segment since it was last
 * empty (a FIFO claim's head test looks for leased messages only there).
 * Leases are reported before they commit, so the answer covers every lease
 * that a snapshot taken before this call sees.
 */
bool
segment_maybe_leased(int64 queue_id, int seg)
{
	SegState   *st = seg_find(queue_id, false);
	bool		leased = true;

	if (st == NULL)
		return true;
	SpinLockAcquire(&st->mutex);
	if (st->loaded)
		leased = st->hint[seg].maybe_leased;
	SpinLockRelease(&st->mutex);
	return leased;
}

/*
 * Whether any live segment of a queue may hold messages with a priority (so
 * that a claim must look for them first); *unknown says whether that is
 * only because nothing is known of them since the state was loaded.  A
 * segment's mark lasts until it is recycled; without shared state, every
 * queue may.
 */
bool
segment_prioritized(int64 queue_id, bool *unknown)
{
	SegState   *st = seg_find(queue_id, false);
	bool		some = false;
	bool		unknowns = false;

	*unknown = false;
	if (st == NULL || !st->loaded)
		return true;
	SpinLockAcquire(&st->mutex);
	for (int64 g = st->tail; g <= st->head; g++)
	{
		some |= st->hint[g % QUEUE_SEGMENTS].priority == PRIORITY_SOME;
		unknowns |= st->hint[g % QUEUE_SEGMENTS].priority == PRIORITY_UNKNOWN;
	}
	SpinLockRelease(&st->mutex);
	*unknown = unknowns && !some;
	return some || unknowns;
}

/*
 * Records that a look at the whole queue found no prioritized message: the
 * segments whose state was unknown hold none.  A message written since
 * marked its segment, which this leaves as it is.
 */
void
segment_priority_none(int64 queue_id)
{
	SegState   *st = seg_find(queue_id, false);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
	{
		if (st->hint[seg].priority == PRIORITY_UNKNOWN)
			st->hint[seg].priority = PRIORITY_NONE;
	}
	SpinLockRelease(&st->mutex);
}

/*
 * The group key a fair queue's next claim starts after (into key, which has
 * room for FAIR_CURSOR_BYTES): "" starts from the first key.
 */
void
segment_fair_cursor(int64 queue_id, char *key)
{
	SegState   *st = seg_find(queue_id, false);

	key[0] = '\0';
	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	if (st->loaded)
		strlcpy(key, st->fair_cursor, FAIR_CURSOR_BYTES);
	SpinLockRelease(&st->mutex);
}

/*
 * Records the last group key a fair claim served.  A longer key is kept
 * cut (at a character boundary): the next claim starts at that key again
 * rather than after it, which costs the key one extra turn at most.
 */
void
segment_set_fair_cursor(int64 queue_id, const char *key)
{
	SegState   *st = seg_find(queue_id, false);
	int			len = pg_mbcliplen(key, strlen(key), FAIR_CURSOR_BYTES - 1);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	memcpy(st->fair_cursor, key, len);
	st->fair_cursor[len] = '\0';
	SpinLockRelease(&st->mutex);
}

/*
 * Where a read of a segment starts; false when the segment holds nothing
 * deliverable at or above it (the read skips it).
 */
bool
segment_scan_from(int64 queue_id, int seg, int64 *scan_from)
{
	SegState   *st = seg_find(queue_id, false);
	bool		scan;

	*scan_from = 0;
	if (st == NULL)
		return true;
	SpinLockAcquire(&st->mutex);
	if (st->loaded)
	{
		*scan_from = st->hint[seg].scan_from;
		scan = !st->hint[seg].empty;
	}
	else
		scan = true;
	SpinLockRelease(&st->mutex);
	return scan;
}

/*
 * The lowest id a live row of a segment may have now: below it, every row
 * is deleted for good (see the header comment: scan_from with its
 * stragglers).  A row written below it later is reported before it
 * commits, so a snapshot taken before this call sees no live row below
 * it.  PG_INT64_MAX for a segment with nothing live; 0 when nothing is
 * known.
 */
int64
segment_floor(int64 queue_id, int seg)
{
	SegState   *st = seg_find(queue_id, false);
	int64		floor = 0;

	if (st == NULL)
		return 0;
	SpinLockAcquire(&st->mutex);
	if (st->loaded)
	{
		SegHint    *h = &st->hint[seg];

		floor = h->empty ? PG_INT64_MAX : h->scan_from;
		for (int i = 0; i < h->nstrag; i++)
			floor = Min(floor, h->strag_id[i]);
	}
	SpinLockRelease(&st->mutex);
	return floor;
}

/*
 * What lies below where reads of a segment start: *scan_from (PG_INT64_MAX
 * when nothing deliverable is left) and the stragglers' ids (at most
 * STRAGGLERS, into ids, *nids of them), read together.  Below *scan_from,
 * every other row is deleted for good; a row written there later is
 * reported before it commits.  false (nothing read) when nothing is known.
 */
bool
segment_below(int64 queue_id, int seg, int64 *scan_from, int64 *ids, int *nids)
{
	SegState   *st = seg_find(queue_id, false);
	bool		known = false;

	*nids = 0;
	if (st == NULL)
		return false;
	SpinLockAcquire(&st->mutex);
	if (st->loaded)
	{
		SegHint    *h = &st->hint[seg];

		*scan_from = h->empty ? PG_INT64_MAX : h->scan_from;
		*nids = h->nstrag;
		memcpy(ids, h->strag_id, sizeof(int64) * h->nstrag);
		known = true;
	}
	SpinLockRelease(&st->mutex);
	return known;
}

/* The stragglers of a segment whose time has come, at most max. */
int
segment_due(int64 queue_id, int seg, TimestampTz now, int64 *ids, int max)
{
	SegState   *st = seg_find(queue_id, false);
	SegHint    *h;
	int			n = 0;

	if (st == NULL)
		return 0;
	h = &st->hint[seg];
	SpinLockAcquire(&st->mutex);
	for (int i = 0; i < h->nstrag && n < max; i++)
	{
		if (h->strag_at[i] <= now)
			ids[n++] = h->strag_id[i];
	}
	SpinLockRelease(&st->mutex);
	return n;
}

/* Opens a segment and its primary key for a dirty index scan; false when busy. */
static bool
probe_open(int64 queue_id, int seg, Relation *rel, Relation *idx)
{
	Oid			relid = segment_relid(queue_id, seg);

	if (!OidIsValid(relid) || !ConditionalLockRelationOid(relid, AccessShareLock))
		return false;
	*rel = table_open(relid, NoLock);
	*idx = index_open(RelationGetPrimaryKeyIndex(*rel), AccessShareLock);
	return true;
}

/* Closes what probe_open opened, releasing its locks at once. */
static void
probe_close(Relation rel, Relation idx)
{
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
}

/*
 * Looks again at due stragglers that a read did not get: forgets those
 * that are gone, puts off those hidden again, keeps those someone holds.
 */
void
segment_recheck(int64 queue_id, int seg, const int64 *ids, int n)
{
	SegState   *st = seg_find(queue_id, false);
	Relation	rel;
	Relation	idx;
	SnapshotData dirty;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	TimestampTz *at;
	TimestampTz now = GetCurrentTimestamp();

	if (st == NULL || n == 0 || !probe_open(queue_id, seg, &rel, &idx))
		return;
	at = palloc(sizeof(TimestampTz) * n);
	InitDirtySnapshot(dirty);
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, idx, &dirty, 1, 0);
	for (int i = 0; i < n; i++)
	{
		ScanKeyData key;
		bool		isnull;

		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(ids[i]));
		index_rescan(scan, &key, 1, NULL, 0);
		at[i] = DT_NOEND;		/* gone */
		if (index_getnext_slot(scan, ForwardScanDirection, slot))
			at[i] = DatumGetTimestampTz(slot_getattr(slot, 2, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	probe_close(rel, idx);

	SpinLockAcquire(&st->mutex);
	for (int i = 0; i < n; i++)
	{
		SegHint    *h = &st->hint[seg];
		int			j = strag_find(h, ids[i]);

		if (j < 0)
			continue;
		if (at[i] == DT_NOEND)
			strag_remove(h, j);
		else if (at[i] > now)
			h->strag_at[j] = at[i];
	}
	SpinLockRelease(&st->mutex);
}

/*
 * Moves a segment's scan_from up to the first row that is, or may become
 * at any moment, deliverable, listing the hidden rows it passes while there
 * is room.  Runs in one backend at a time per segment; rows reported while
 * it runs keep scan_from at or below them.
 */
static void
probe(int64 queue_id, SegState *st, int seg)
{
	SegHint    *h = &st->hint[seg];
	TimestampTz now = GetCurrentTimestamp();
	int64		from;
	int			room;
	int			nnew = 0;
	int64		new_id[STRAGGLERS];
	TimestampTz new_at[STRAGGLERS];
	int64		next = PG_INT64_MAX;
	int64		first_unlisted = PG_INT64_MAX;
	int			hidden = 0;
	bool		walked = false;
	Relation	rel;
	Relation	idx;

	SpinLockAcquire(&st->mutex);
	if (h->probing || !st->loaded)
	{
		SpinLockRelease(&st->mutex);
		return;
	}
	h->probing = true;
	h->low_seen = PG_INT64_MAX;
	h->probed_at = now;
	from = h->scan_from;
	room = STRAGGLERS - h->nstrag;
	SpinLockRelease(&st->mutex);

	PG_TRY();
	{
		if (probe_open(queue_id, seg, &rel, &idx))
		{
			SnapshotData dirty;
			IndexScanDesc scan;
			TupleTableSlot *slot;
			ScanKeyData key;

			InitDirtySnapshot(dirty);
			slot = table_slot_create(rel, NULL);
			scan = index_beginscan(rel, idx, &dirty, 1, 0);
			ScanKeyInit(&key, 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(from));
			index_rescan(scan, &key, 1, NULL, 0);
			while (index_getnext_slot(scan, ForwardScanDirection, slot))
			{
				bool		isnull;
				int64		id = DatumGetInt64(slot_getattr(slot, 1, &isnull));
				TimestampTz at = DatumGetTimestampTz(slot_getattr(slot, 2, &isnull));

				if (at > now && nnew < room)
				{
					new_id[nnew] = id;
					new_at[nnew++] = at;
					continue;
				}
				if (at > now && ++hidden <= MOVE_LIMIT)
				{
					/* no room to list it: reads start here, but walk on to see if it is drained */
					first_unlisted = Min(first_unlisted, id);
					continue;
				}
				next = id;
				break;
			}
			index_endscan(scan);
			ExecDropSingleTupleTableSlot(slot);
			probe_close(rel, idx);
			walked = true;
		}
	}
	PG_FINALLY();
	{
		SpinLockAcquire(&st->mutex);
		if (walked)
		{
			int64		to = Min(Min(next, first_unlisted), h->low_seen);

			for (int i = 0; i < h->nstrag;)
			{
				if (h->strag_id[i] >= to)
					strag_remove(h, i);
				else
					i++;
			}
			for (int i = 0; i < nnew && h->nstrag < STRAGGLERS; i++)
			{
				if (new_id[i] >= to)
					continue;
				h->strag_id[h->nstrag] = new_id[i];
				h->strag_at[h->nstrag++] = new_at[i];
			}
			h->scan_from = to;
			h->empty = (to == PG_INT64_MAX);
			h->drained = (next == PG_INT64_MAX && h->low_seen == PG_INT64_MAX);
		}
		h->probing = false;
		SpinLockRelease(&st->mutex);
	}
	PG_END_TRY();
}

/* After a read of a segment: probes it when it was not probed lately. */
void
segment_after_read(int64 queue_id, int seg)
{
	SegState   *st = seg_find(queue_id, false);
	TimestampTz probed_at;

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	probed_at = st->hint[seg].probed_at;
	SpinLockRelease(&st->mutex);
	if (GetCurrentTimestamp() - probed_at >= PROBE_EVERY_USECS)
		probe(queue_id, st, seg);
}

/*
 * The segment tables a statement on one id should try, oldest first (rows
 * only ever move forward, so a forward walk cannot miss one that a recycle
 * moves meanwhile): from the generation before the one the id was sent to
 * (a sender that raced with a rotation writes there), or from the tail
 * (from_tail, or when the id is older than every live generation).
 */
int
segment_probe_order(int64 queue_id, int64 id, bool from_tail, int *segs)
{
	SegmentRing ring = segment_ring(queue_id);
	SegState   *st = ring.tracked ? seg_find(queue_id, false) : NULL;
	int64		start = ring.tail;
	int			n = 0;

	if (st != NULL && !from_tail)
	{
		SpinLockAcquire(&st->mutex);
		for (int64 g = ring.head; g > ring.tail; g--)
		{
			if (st->first_id[g % QUEUE_SEGMENTS] <= id)
			{
				start = g - 1;
				break;
			}
		}
		SpinLockRelease(&st->mutex);
	}
	for (int64 g = start; g <= ring.head; g++)
		segs[n++] = (int) (g % QUEUE_SEGMENTS);
	return n;
}

/* ---- changes applied at commit ------------------------------------------- */

/* Records a change of the ring, to be applied when the transaction commits. */
static void
change_record(int64 queue_id, SegChangeKind kind, int64 generation, int64 first_id)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	SegChange  *c = palloc(sizeof(SegChange));

	c->queue_id = queue_id;
	c->key = seg_key(queue_id);
	c->nest_level = GetCurrentTransactionNestLevel();
	c->kind = kind;
	c->generation = generation;
	c->first_id = first_id;
	c->at = GetCurrentTimestamp();
	changes = lappend(changes, c);
	MemoryContextSwitchTo(old);
}

/* The queue's tables were emptied (purge): its hints start afresh at commit. */
void
segment_forget(int64 queue_id)
{
	change_record(queue_id, SEG_FORGET, 0, 0);
}

/* The queue was dropped: its state goes at commit. */
void
segment_dropped(int64 queue_id)
{
	change_record(queue_id, SEG_DROPPED, 0, 0);
}

/* Applies one committed change; must not throw. */
static void
change_apply(const SegChange *c)
{
	SegState   *st;

	if (c->kind == SEG_DROPPED)
	{
		LWLockAcquire(seg_lock, LW_EXCLUSIVE);
		hash_search(seg_hash, &c->key, HASH_REMOVE, NULL);
		LWLockRelease(seg_lock);
		return;
	}
	LWLockAcquire(seg_lock, LW_SHARED);
	st = hash_search(seg_hash, &c->key, HASH_FIND, NULL);
	LWLockRelease(seg_lock);
	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	switch (c->kind)
	{
		case SEG_ROTATED:
			{
				int			seg = (int) (c->generation % QUEUE_SEGMENTS);

				st->head = c->generation;
				st->head_since = c->at;
				st->first_id[seg] = c->first_id;
				/* an empty table: the first send reports its id */
				hint_reset(&st->hint[seg], PG_INT64_MAX, true);
				break;
			}
		case SEG_RECYCLED:
			st->tail = c->generation;
			break;
		case SEG_FORGET:
			st->loaded = false;
			break;
		case SEG_DROPPED:
			break;
	}
	SpinLockRelease(&st->mutex);
}

/* Applies the committed transaction's ring changes; forgets them either way. */
void
segment_at_xact_end(bool commit)
{
	ListCell   *lc;

	if (commit && seg_hash != NULL)
	{
		foreach(lc, changes)
			change_apply((SegChange *) lfirst(lc));
	}
	changes = NIL;
	due_queues = NIL;
}

/* A committed savepoint hands its changes to its parent; an aborted one drops them. */
void
segment_at_subxact_end(bool commit, int level)
{
	ListCell   *lc;

	foreach(lc, changes)
	{
		SegChange  *c = lfirst(lc);

		if (c->nest_level < level)
			continue;
		if (commit)
			c->nest_level = level - 1;
		else
			changes = foreach_delete_current(changes, lc);
	}
}

/* ---- maintenance ---------------------------------------------------------- */

/* Runs one maintenance statement (SQL built from ids only). */
static void
seg_sql(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "queue segment statement failed: %s", SPI_result_code_string(rc));
}

/* Runs a statement that returns one bigint. */
static int64
single_int8(const char *sql)
{
	bool		isnull;
	Datum		d;

	seg_sql(sql);
	if (SPI_processed != 1)
		elog(ERROR, "queue segment statement returned " UINT64_FORMAT " rows", SPI_processed);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Moves head or tail on by one in the catalog, from the value shared memory
 * has; a catalog that disagrees means the state is stale: fail (the caller
 * runs in a subtransaction).
 */
static void
ring_update(int64 queue_id, const char *column, int64 from)
{
	seg_sql(psprintf("UPDATE queue_internal.segment_ring SET %s = %lld WHERE queue_id = %lld AND %s = %lld",
					 column, (long long) from + 1, (long long) queue_id, column, (long long) from));
	if (SPI_processed != 1)
		elog(ERROR, "segment ring of queue %lld moved under its maintenance", (long long) queue_id);
}

/* Whether this transaction has changed the queue's ring already (not yet applied). */
static bool
ring_changed_here(int64 queue_id)
{
	ListCell   *lc;

	foreach(lc, changes)
	{
		if (((SegChange *) lfirst(lc))->queue_id == queue_id)
			return true;
	}
	return false;
}

/* Size of one segment table (heap only) in bytes, or -1 when it is busy. */
static int64
segment_heap_bytes(int64 queue_id, int seg)
{
	Oid			relid = segment_relid(queue_id, seg);
	Relation	rel;
	int64		bytes;

	if (!OidIsValid(relid) || !ConditionalLockRelationOid(relid, AccessShareLock))
		return -1;
	rel = table_open(relid, NoLock);
	bytes = (int64) RelationGetNumberOfBlocks(rel) * BLCKSZ;
	table_close(rel, AccessShareLock);
	return bytes;
}

/*
 * Starts a new head when the current one is big or old enough (force: when
 * it holds anything) and a table is free; tail is the tail as this
 * transaction leaves it.
 */
static bool
maybe_rotate(int64 queue_id, SegState *st, bool force, int64 tail)
{
	int64		head;
	TimestampTz since;
	int64		bytes;
	int64		next_id;

	SpinLockAcquire(&st->mutex);
	head = st->head;
	since = st->head_since;
	SpinLockRelease(&st->mutex);
	if (head - tail + 1 >= QUEUE_SEGMENTS)
		return false;			/* no free table: recycling comes first */
	bytes = segment_heap_bytes(queue_id, (int) (head % QUEUE_SEGMENTS));
	if (bytes <= 0)
		return false;			/* never used since it became the head, or busy */
	if (!force && bytes < (int64) queue_segment_size * 1024 &&
		GetCurrentTimestamp() - since < (int64) queue_segment_age * 1000)
		return false;

	next_id = single_int8("SELECT last_value + 1 FROM queue_internal.message_id_seq");
	ring_update(queue_id, "head", head);
	change_record(queue_id, SEG_ROTATED, head + 1, next_id);
	return true;
}

/*
 * Whether the tail holds nothing deliverable (only listed stragglers), as
 * far as its hint knows; probes it first when it was not probed lately
 * (force: in any case).
 */
static bool
tail_drained(int64 queue_id, SegState *st, int seg, bool force)
{
	bool		drained;
	TimestampTz probed_at;

	SpinLockAcquire(&st->mutex);
	drained = st->hint[seg].empty || st->hint[seg].drained;
	probed_at = st->hint[seg].probed_at;
	SpinLockRelease(&st->mutex);
	if (drained)
		return true;
	if (!force && GetCurrentTimestamp() - probed_at < PROBE_EVERY_USECS)
		return false;
	probe(queue_id, st, seg);
	SpinLockAcquire(&st->mutex);
	drained = st->hint[seg].empty || st->hint[seg].drained;
	SpinLockRelease(&st->mutex);
	return drained;
}

/*
 * Recycles the tail when it is drained and its lock can be had at once:
 * copies whatever rows it still holds into the next generation, empties it
 * with TRUNCATE, and advances the tail at commit.
 */
static bool
maybe_recycle(int64 queue_id, SegState *st, bool force)
{
	int64		head;
	int64		tail;
	int			seg;
	int			next;
	int64		moved;
	bool		isnull;
	Datum		d;

	SpinLockAcquire(&st->mutex);
	head = st->head;
	tail = st->tail;
	SpinLockRelease(&st->mutex);
	if (tail >= head)
		return false;
	seg = (int) (tail % QUEUE_SEGMENTS);
	next = (int) ((tail + 1) % QUEUE_SEGMENTS);
	if (!tail_drained(queue_id, st, seg, force) ||
		!ConditionalLockRelationOid(segment_relid(queue_id, seg), AccessExclusiveLock))
		return false;

	/* a new snapshot, after the lock: it sees every transaction that used the table */
	seg_sql(psprintf("WITH moved AS (INSERT INTO queue_internal.s%1$lld_%3$d"
					 " (id, visible_at, attempts, receipt, enqueued_at, origin, priority,"
					 "  group_key, last_error, headers, payload)"
					 " SELECT id, visible_at, attempts, receipt, enqueued_at, origin, priority,"
					 "  group_key, last_error, headers, payload FROM queue_internal.s%1$lld_%2$d"
					 " RETURNING id, priority, receipt)"
					 " SELECT count(*), min(id), max(priority), bool_or(receipt IS NOT NULL)"
					 " FROM moved",
					 (long long) queue_id, seg, next));
	moved = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (moved > 0 && !isnull)
		segment_note(queue_id, next, DatumGetInt64(d), DT_NOBEGIN);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (moved > 0 && !isnull && DatumGetInt16(d) > 0)
		segment_note_priority(queue_id, next);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
	if (moved > 0 && !isnull && DatumGetBool(d))
		segment_note_lease(queue_id, next);
	seg_sql(psprintf("TRUNCATE queue_internal.s%lld_%d", (long long) queue_id, seg));
	ring_update(queue_id, "tail", tail);
	change_record(queue_id, SEG_RECYCLED, tail + 1, 0);
	return true;
}

/*
 * Recycles one queue's tail when it is drained, then rotates its head when
 * that is due (force: whenever the head holds anything).  Both take effect
 * at commit, at most one step each per call.  Runs in the caller's
 * transaction, in the owner context, with a snapshot that is not the
 * transaction's (READ COMMITTED); takes no lock it would wait for.  Returns
 * how many segments it recycled.
 */
int
storage_maintain(int64 queue_id, bool force)
{
	SegState   *st;
	Oid			parent = storage_relid(queue_id);
	int			recycled;
	int64		tail;

	/*
	 * A copy under a transaction snapshot could miss commits made before its
	 * lock; a second run in one transaction would work from shared state
	 * that its first run's changes (applied at commit) have made stale.
	 */
	if (!OidIsValid(parent) || IsolationUsesXactSnapshot() || XactReadOnly ||
		RecoveryInProgress() || ring_changed_here(queue_id))
		return 0;
	(void) segment_ring(queue_id);
	st = seg_find(queue_id, false);
	if (st == NULL || !ConditionalLockRelationOid(parent, ShareUpdateExclusiveLock))
		return 0;
	SpinLockAcquire(&st->mutex);
	st->next_check = GetCurrentTimestamp() + MAINTAIN_EVERY_USECS;
	tail = st->tail;
	SpinLockRelease(&st->mutex);

	recycled = maybe_recycle(queue_id, st, force) ? 1 : 0;
	(void) maybe_rotate(queue_id, st, force, tail + recycled);
	return recycled;
}

/*
 * Notes that the current transaction used a queue; when the queue's
 * maintenance is due, it runs just before the transaction commits.
 */
void
segment_touch(int64 queue_id)
{
	SegState   *st = seg_find(queue_id, false);
	TimestampTz now;
	bool		due;
	MemoryContext old;
	ListCell   *lc;

	if (st == NULL)
		return;
	foreach(lc, due_queues)
	{
		if (*(int64 *) lfirst(lc) == queue_id)
			return;
	}
	now = GetCurrentTimestamp();
	SpinLockAcquire(&st->mutex);
	due = st->loaded && st->next_check <= now;
	if (due)
		st->next_check = now + MAINTAIN_EVERY_USECS;
	SpinLockRelease(&st->mutex);
	if (!due)
		return;
	old = MemoryContextSwitchTo(TopTransactionContext);
	due_queues = lappend(due_queues, palloc(sizeof(int64)));
	*(int64 *) llast(due_queues) = queue_id;
	MemoryContextSwitchTo(old);
}

/* Runs one queue's maintenance in a subtransaction; a failure is only logged. */
static void
maintain_quietly(int64 queue_id)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		OwnerContext ctx;

		owner_context_enter(&ctx);
		(void) storage_maintain(queue_id, false);
		owner_context_exit(&ctx);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(LOG,
				(errmsg("queue maintenance of queue " INT64_FORMAT " failed: %s",
						queue_id, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
}

/*
 * Pre-commit: maintains the queues segment_touch found due.  Skipped where
 * it could not be safe or useful: a transaction snapshot (a copy must see
 * every commit before its lock), read-only or parallel transactions.
 */
void
segment_pre_commit(void)
{
	List	   *queues = due_queues;
	ListCell   *lc;
	bool		pushed = false;

	due_queues = NIL;
	if (queues == NIL || IsolationUsesXactSnapshot() || XactReadOnly ||
		IsInParallelMode() || RecoveryInProgress())
		return;
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	foreach(lc, queues)
		maintain_quietly(*(int64 *) lfirst(lc));
	if (pushed)
		PopActiveSnapshot();
}

/* Live segments of a queue for queue.queues; false when not known. */
bool
segment_count(int64 queue_id, int32 *segments)
{
	SegState   *st = seg_find(queue_id, false);
	bool		known = false;

	if (st == NULL)
		return false;
	SpinLockAcquire(&st->mutex);
	if (st->loaded)
	{
		*segments = (int32) (st->head - st->tail + 1);
		known = true;
	}
	SpinLockRelease(&st->mutex);
	return known;
}
