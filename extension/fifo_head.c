/*
 * fifo_head.c
 *    Whether a claim of a FIFO queue may take a message: the message is the
 *    head of its group, and the group's lock is free.
 *
 * The claim statements of a FIFO queue (storage.c) filter their candidates
 * with queue_internal.fifo_head(queue_id, group_key, id, now).  A message
 * is its group's head when no earlier message of the group is left (in
 * flight, delayed, failed, or locked by a reader: any of them holds the
 * group back) and no later one is leased (one can be, when concurrent
 * senders committed out of id order or a redrive brought an old id back).
 * The test probes the group indexes of the live segment tables directly:
 * as sub-selects on the parent table it cost an Append over every segment
 * per candidate.  The probe for earlier messages starts at the segment's
 * floor (segment_floor: no live row below it), so it does not walk the
 * dead index entries that the group's acknowledged messages leave behind
 * until the segment is recycled; the probe for later leased messages only
 * looks above the candidate's id.
 *
 * The group lock lets one reader at a time take a group's messages: a
 * transaction-level lock in PostgreSQL's lock manager with an advisory tag
 * of its own (field4 GROUP_LOCK_TAG; SQL's advisory lock functions use 1 and
 * 2), so it shows in pg_locks as an advisory lock and never meets one taken
 * by the application.  It lasts until the reader's transaction ends: by
 * then the messages it took are leased (lease.c writes leases before the
 * commit), deleted, or handed back, and the group's next reader sees that.
 * The group key is hashed: two groups that share a hash share a lock, which
 * costs parallelism, never order.  The lock is tried first, since it is the
 * cheap test that fails for the heads other readers are taking; when the
 * head test then fails, it is released at once (unless the transaction held
 * it already).
 *
 * Locks and snapshot: a claim statement runs between fifo_probe_begin and
 * fifo_probe_end.  The begin locks every segment table of the queue, as a
 * query of the parent would, before the statement takes its snapshot: no
 * recycle can then move rows out of that snapshot's sight.  The first call
 * of the statement reads the ring and the floors (after the snapshot: a row
 * written below a floor is reported before its commit) and begins the index
 * scans with the statement's snapshot.  The end closes them and tells the
 * claim what the calls saw, so that it knows whether to read further; a
 * statement that fails abandons them to the abort.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "queue.h"

#define GROUP_LOCK_TAG	0x5155	/* "QU" */

/* Columns of a segment table the probes read (the parent's order). */
#define ATT_VISIBLE_AT	2
#define ATT_RECEIPT		4

/* One live segment table, its two FIFO indexes and their scans. */
typedef struct ProbeSegment
{
	Relation	table;
	Relation	group_index;	/* (group_key, id) WHERE group_key IS NOT NULL */
	Relation	leased_index;	/* (group_key, id) WHERE receipt IS NOT NULL */
	IndexScanDesc earlier;
	IndexScanDesc leased;
	TupleTableSlot *slot;
	int64		floor;			/* no live row below this id */
} ProbeSegment;

/* The probe of the claim statement that is running. */
typedef struct Probe
{
	bool		active;
	bool		opened;			/* the first call has opened the segments */
	int64		queue_id;
	Oid			relids[QUEUE_SEGMENTS]; /* the segment tables, locked */
	MemoryContext cxt;
	int			nsegs;
	ProbeSegment segs[QUEUE_SEGMENTS];
	FifoProbeStats stats;
} Probe;

static Probe probe = {0};

PG_FUNCTION_INFO_V1(queue_fifo_head);

/*
 * Starts the probe of one claim statement of a FIFO queue: locks its
 * tables as a query of the parent table would (the parent, then every
 * segment).
 */
void
fifo_probe_begin(int64 queue_id)
{
	Oid			parent = storage_relid(queue_id);

	memset(&probe, 0, sizeof(probe));
	if (OidIsValid(parent))
		LockRelationOid(parent, AccessShareLock);
	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
	{
		probe.relids[seg] = segment_relid(queue_id, seg);
		if (OidIsValid(probe.relids[seg]))
			LockRelationOid(probe.relids[seg], AccessShareLock);
	}
	probe.active = true;
	probe.queue_id = queue_id;
	probe.cxt = AllocSetContextCreate(CurrentMemoryContext, "queue FIFO probe",
									  ALLOCSET_SMALL_SIZES);
}

/* Ends the probe of a statement that ran: closes what the calls opened. */
FifoProbeStats
fifo_probe_end(void)
{
	FifoProbeStats stats = probe.stats;

	for (int i = 0; i < probe.nsegs; i++)
	{
		ProbeSegment *s = &probe.segs[i];

		index_endscan(s->earlier);
		index_endscan(s->leased);
		ExecDropSingleTupleTableSlot(s->slot);
		index_close(s->group_index, NoLock);
		index_close(s->leased_index, NoLock);
		table_close(s->table, NoLock);
	}
	if (probe.cxt != NULL)
		MemoryContextDelete(probe.cxt);
	memset(&probe, 0, sizeof(probe));
	return stats;
}

/*
 * Forgets the probe of a statement that failed: the abort that follows
 * releases what it opened.
 */
void
fifo_probe_abandon(void)
{
	memset(&probe, 0, sizeof(probe));
}

/* An index of a segment table, by the name storage_create_tables gave it. */
static Relation
open_segment_index(int64 queue_id, int seg, const char *suffix)
{
	char		name[NAMEDATALEN];
	Oid			relid;

	snprintf(name, sizeof(name), "s%lld_%d_%s", (long long) queue_id, seg, suffix);
	relid = get_relname_relid(name, get_namespace_oid(QUEUE_INTERNAL_SCHEMA, false));
	if (!OidIsValid(relid))
		elog(ERROR, "index queue_internal.%s of a FIFO queue is missing", name);
	return index_open(relid, AccessShareLock);
}

/*
 * The first call of a statement: the live segments, their floors and index
 * scans, with the statement's snapshot.
 */
static void
probe_open_segments(void)
{
	MemoryContext old = MemoryContextSwitchTo(probe.cxt);
	Snapshot	snapshot = GetActiveSnapshot();
	SegmentRing ring = segment_ring(probe.queue_id);

	for (int64 g = ring.tail; g <= ring.head; g++)
	{
		int			seg = (int) (g % QUEUE_SEGMENTS);
		Oid			relid = probe.relids[seg];
		ProbeSegment *s = &probe.segs[probe.nsegs];

		if (!OidIsValid(relid))
			continue;
		s->floor = segment_floor(probe.queue_id, seg);
		s->table = table_open(relid, NoLock);	/* locked by fifo_probe_begin */
		s->group_index = open_segment_index(probe.queue_id, seg, "group");
		s->leased_index = open_segment_index(probe.queue_id, seg, "leased");
		s->slot = table_slot_create(s->table, NULL);
		s->earlier = index_beginscan(s->table, s->group_index, snapshot, 3, 0);
		s->leased = index_beginscan(s->table, s->leased_index, snapshot, 2, 0);
		probe.nsegs++;
	}
	probe.opened = true;
	MemoryContextSwitchTo(old);
}

/* A scan key on column attno of a FIFO index (group_key text, id bigint). */
static void
key_init(ScanKey key, Relation index, AttrNumber attno, StrategyNumber strategy,
		 RegProcedure proc, Datum value)
{
	ScanKeyEntryInitialize(key, 0, attno, strategy, InvalidOid,
						   index->rd_indcollation[attno - 1], proc, value);
}

/* Whether a segment holds a live message of the group with an id below id. */
static bool
earlier_in(ProbeSegment *s, Datum group_key, int64 id)
{
	ScanKeyData keys[3];

	if (id <= s->floor)
		return false;
	key_init(&keys[0], s->group_index, 1, BTEqualStrategyNumber, F_TEXTEQ, group_key);
	key_init(&keys[1], s->group_index, 2, BTGreaterEqualStrategyNumber, F_INT8GE,
			 Int64GetDatum(s->floor));
	key_init(&keys[2], s->group_index, 2, BTLessStrategyNumber, F_INT8LT, Int64GetDatum(id));
	index_rescan(s->earlier, keys, 3, NULL, 0);
	return index_getnext_slot(s->earlier, ForwardScanDirection, s->slot);
}

/* Whether a segment holds a message of the group above id that is leased now. */
static bool
leased_in(ProbeSegment *s, Datum group_key, int64 id, TimestampTz now)
{
	ScanKeyData keys[2];

	key_init(&keys[0], s->leased_index, 1, BTEqualStrategyNumber, F_TEXTEQ, group_key);
	key_init(&keys[1], s->leased_index, 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(id));
	index_rescan(s->leased, keys, 2, NULL, 0);
	while (index_getnext_slot(s->leased, ForwardScanDirection, s->slot))
	{
		bool		visible_isnull;
		bool		receipt_isnull;
		TimestampTz visible_at = DatumGetTimestampTz(slot_getattr(s->slot, ATT_VISIBLE_AT,
																  &visible_isnull));

		(void) slot_getattr(s->slot, ATT_RECEIPT, &receipt_isnull);
		if (!receipt_isnull && visible_at > now)
			return true;
	}
	return false;
}

/*
 * Whether the message is its group's head; see the header comment.  The
 * scans run in the probe's memory: they keep what they allocate (killed
 * items, for one) until they end, and the caller's memory is reset for
 * every row.
 */
static bool
is_head(Datum group_key, int64 id, TimestampTz now)
{
	MemoryContext old = MemoryContextSwitchTo(probe.cxt);
	bool		head = true;

	for (int i = 0; i < probe.nsegs && head; i++)
		head = !earlier_in(&probe.segs[i], group_key, id);
	for (int i = 0; i < probe.nsegs && head; i++)
		head = !leased_in(&probe.segs[i], group_key, id, now);
	MemoryContextSwitchTo(old);
	return head;
}

/* The tag of a group's lock. */
static void
group_lock_tag(LOCKTAG *tag, int64 queue_id, text *group_key)
{
	uint32		hash = DatumGetUInt32(hash_any((const unsigned char *) VARDATA_ANY(group_key),
											   VARSIZE_ANY_EXHDR(group_key)));

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) queue_id, hash, GROUP_LOCK_TAG);
}

/*
 * queue_internal.fifo_head(queue_id, group_key, id, now) returns bool:
 * takes the group's lock and says true when message id is the group's
 * head; true for a message without a group key.  Runs only inside a claim
 * statement of that queue, which calls it for every candidate (so that
 * max_id tells how far the claim looked).
 */
Datum
queue_fifo_head(PG_FUNCTION_ARGS)
{
	int64		queue_id = PG_GETARG_INT64(0);
	int64		id = PG_GETARG_INT64(2);
	TimestampTz now = PG_GETARG_TIMESTAMPTZ(3);
	text	   *group_key;
	LOCKTAG		tag;
	LockAcquireResult got;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3) ||
		!probe.active || probe.queue_id != queue_id)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("queue_internal.fifo_head() runs only inside a claim of its queue")));
	probe.stats.calls++;
	probe.stats.max_id = Max(probe.stats.max_id, id);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(true);
	group_key = PG_GETARG_TEXT_PP(1);
	group_lock_tag(&tag, queue_id, group_key);
	got = LockAcquire(&tag, ExclusiveLock, false, true);
	if (got == LOCKACQUIRE_NOT_AVAIL)
		PG_RETURN_BOOL(false);
	if (!probe.opened)
		probe_open_segments();
	if (is_head(PointerGetDatum(group_key), id, now))
		PG_RETURN_BOOL(true);
	probe.stats.misses++;
	if (got == LOCKACQUIRE_OK)
		LockRelease(&tag, ExclusiveLock, false);
	PG_RETURN_BOOL(false);
}
