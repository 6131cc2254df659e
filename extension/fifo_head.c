/*
 * fifo_head.c
 *    Whether a claim of a FIFO queue may take a message: the message is the
 *    head of its group, and the group's lock is free.  And the claim's scan
 *    of a segment in id order, which tests and locks the heads it meets.
 *
 * A message is its group's head when no earlier message of the group is
 * left (in flight, delayed, failed, or locked by a reader: any of them
 * holds the group back) and no later one is leased (one can be, when
 * concurrent senders committed out of id order or a redrive brought an old
 * id back).  A claim of a FIFO queue (storage.c) reads each segment in id
 * order from where its reads start with fifo_claim_scan; its other
 * statements (stragglers by id, priorities, group by group) filter their
 * candidates with queue_internal.fifo_head(queue_id, group_key, id,
 * visible_at, now).
 *
 * Earlier messages.  The scan tests every row it meets, hidden ones
 * included, and remembers the groups of the rows it met, so that within
 * its segment the rows between where it started and the candidate cost
 * nothing to look at: its snapshot showed them all.  Below where it
 * started lie only rows deleted for good and the segment's stragglers
 * (hidden rows, listed: segment_below), whose groups are looked up once
 * per scan; that holds unless a write reported a row below the start since
 * it was read, in which case, and in every other segment, the test probes
 * the group index from the segment's floor (segment_floor: no live row
 * below it), which skips the dead index entries the group's acknowledged
 * messages leave until the segment is recycled.  The groups met are kept
 * over the segments one claim scans (FifoScan): a group met in one holds
 * its rows in the next back, as its probe would.
 * Later leased messages: a probe of the leased index above the candidate's
 * id, only in segments into which a lease may have been written
 * (segment_maybe_leased).  The probes are index scans opened once per
 * probe, not sub-selects (an Append over every segment per candidate).
 *
 * The group lock lets one reader at a time take a group's messages: a
 * transaction-level lock in PostgreSQL's lock manager with an advisory tag
 * of its own (field4 GROUP_LOCK_TAG; SQL's advisory lock functions use 1 and
 * 2), so it shows in pg_locks as an advisory lock and never meets one taken
 * by the application.  It lasts until the reader's transaction ends: by
 * then the messages it took are leased (lease.c writes leases before the
 * commit), deleted, or handed back, and the group's next reader sees that.
 * The group key is hashed: two groups that share a hash share a lock, which
 * costs parallelism, never order.  The lock is tried before the probes,
 * since it is the cheap test that fails for the heads other readers are
 * taking (the scan passes over a row another transaction was locking or
 * changing without even that: row_busy); when the head test then fails, it
 * is released at once.  A group whose lock the transaction held already
 * (it took a message of the group before, or of a group with the same
 * hash) is always probed in full.
 *
 * Locks and snapshot: a probe (a claim statement, between fifo_probe_begin
 * and fifo_probe_end, or a scan) first locks every segment table of the
 * queue, as a query of the parent would, before it takes its snapshot: no
 * recycle can then move rows out of that snapshot's sight.  The first test
 * reads the ring, the floors and what lies below the scan's start (after
 * the snapshot: a row written below them is reported before its commit)
 * and begins the index scans with the snapshot.  The end closes them; a
 * probe that fails abandons them to the abort.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

#include "queue.h"

#define GROUP_LOCK_TAG	0x5155	/* "QU" */

/* One live segment table, its two FIFO indexes and their scans. */
typedef struct ProbeSegment
{
	int			seg;
	Relation	table;
	Relation	group_index;	/* (group_key, id) WHERE group_key IS NOT NULL */
	Relation	leased_index;	/* (group_key, id) WHERE receipt IS NOT NULL */
	IndexScanDesc earlier;
	IndexScanDesc leased;
	TupleTableSlot *slot;
	int64		floor;			/* no live row below this id */
	bool		scan_covers;	/* the scan meets, or remembers, its rows */
	bool		maybe_leased;	/* else no lease was written into it */
} ProbeSegment;

/* A group the scan met: the first (lowest) id it met it at. */
typedef struct SeenGroup
{
	uint64		hash;			/* of the group key: hash key */
	int64		first_id;
	bool		taken;			/* another reader held the group's lock then */
} SeenGroup;

/*
 * The groups a claim's id order scans met, over the segments it scans: a
 * group met in one holds back its rows in the next.
 */
struct FifoScan
{
	HTAB	   *seen;			/* SeenGroup by hash */
};

/* What the head tests of a probe saw. */
typedef struct ProbeStats
{
	int			visible;		/* visible candidates met */
	int			misses;			/* of them: group free, message not its head */
} ProbeStats;

/* The probe of the claim statement, or the scan, that is running. */
typedef struct Probe
{
	bool		active;
	bool		opened;			/* the first call has opened the segments */
	int64		queue_id;
	Oid			relids[QUEUE_SEGMENTS]; /* the segment tables, locked */
	int			scan_seg;		/* the segment scanned in id order, or -1 */
	int64		scan_from;		/* where that scan starts */
	HTAB	   *seen;			/* SeenGroup by hash: the groups it met */
	int64	   *held;			/* rows this transaction holds, sorted */
	int			nheld;
	MemoryContext cxt;
	int			nsegs;
	ProbeSegment segs[QUEUE_SEGMENTS];
	ProbeStats	stats;
} Probe;

static Probe probe = {0};

PG_FUNCTION_INFO_V1(queue_fifo_head);

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* A claim's memory of the groups its scans met, in the caller's memory. */
FifoScan *
fifo_scan_create(void)
{
	FifoScan   *scan = palloc(sizeof(FifoScan));
	HASHCTL		info;

	info.keysize = sizeof(uint64);
	info.entrysize = sizeof(SeenGroup);
	info.hcxt = CurrentMemoryContext;
	scan->seen = hash_create("queue FIFO groups met", 256, &info,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return scan;
}

/* How many groups a claim's scans met. */
int
fifo_scan_groups(FifoScan *scan)
{
	return (int) hash_get_num_entries(scan->seen);
}

void
fifo_scan_free(FifoScan *scan)
{
	hash_destroy(scan->seen);
	pfree(scan);
}

/*
 * Starts a probe: locks the queue's tables as a query of the parent table
 * would (the parent, then every segment).  A scan of segment scan_seg in id
 * order from scan_from (fifo_claim_scan) remembers the groups it meets in
 * seen; the claim statements pass -1 and NULL.  held lists the rows this
 * transaction holds already, which the head test refuses.
 */
static void
probe_start(int64 queue_id, int scan_seg, int64 scan_from, HTAB *seen, const int64 *held,
			int nheld)
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
	probe.scan_seg = scan_seg;
	probe.scan_from = scan_from;
	probe.cxt = AllocSetContextCreate(CurrentMemoryContext, "queue FIFO probe",
									  ALLOCSET_SMALL_SIZES);
	probe.seen = seen;
	probe.held = MemoryContextAlloc(probe.cxt, sizeof(int64) * Max(nheld, 1));
	memcpy(probe.held, held, sizeof(int64) * nheld);
	qsort(probe.held, nheld, sizeof(int64), int64_cmp);
	probe.nheld = nheld;
}

/*
 * Starts the probe of one claim statement of a FIFO queue, before the
 * statement takes its snapshot.
 */
void
fifo_probe_begin(int64 queue_id, const int64 *held, int nheld)
{
	probe_start(queue_id, -1, 0, NULL, held, nheld);
}

/* Whether this transaction holds the row already. */
static bool
held_here(int64 id)
{
	return probe.nheld > 0 &&
		bsearch(&id, probe.held, probe.nheld, sizeof(int64), int64_cmp) != NULL;
}

/* Ends the probe of a statement that ran: closes what the calls opened. */
void
fifo_probe_end(void)
{
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

/* The hash the scan remembers a group by. */
static uint64
group_hash(Datum group_key)
{
	text	   *key = DatumGetTextPP(group_key);

	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(key),
							   VARSIZE_ANY_EXHDR(key), 0);
}

/*
 * Remembers that the scan met the group at id (the first time counts), and
 * says whether it met the group before id.  Two groups that share a hash
 * hold each other back: parallelism, never order.
 */
static SeenGroup *
seen_meet(Datum group_key, int64 id, bool *before)
{
	uint64		hash = group_hash(group_key);
	bool		found;
	SeenGroup  *g = hash_search(probe.seen, &hash, HASH_ENTER, &found);

	if (!found)
	{
		g->first_id = id;
		g->taken = false;
	}
	*before = g->first_id < id;
	return g;
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
 * Remembers the groups of the stragglers below the scan's start that the
 * statement's snapshot shows, looked up by id.
 */
static void
seen_add_stragglers(ProbeSegment *s, const int64 *ids, int nids, Snapshot snapshot)
{
	Relation	pkey = index_open(RelationGetPrimaryKeyIndex(s->table), AccessShareLock);
	IndexScanDesc scan = index_beginscan(s->table, pkey, snapshot, 1, 0);

	for (int i = 0; i < nids; i++)
	{
		ScanKeyData key;
		bool		isnull;
		bool		before;
		Datum		group_key;

		if (ids[i] >= probe.scan_from)
			continue;			/* the scan meets it */
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(ids[i]));
		index_rescan(scan, &key, 1, NULL, 0);
		if (!index_getnext_slot(scan, ForwardScanDirection, s->slot))
			continue;
		group_key = slot_getattr(s->slot, SEG_ATT_GROUP_KEY, &isnull);
		if (!isnull)
			(void) seen_meet(group_key, ids[i], &before);
	}
	index_endscan(scan);
	index_close(pkey, NoLock);
}

/*
 * Whether the scan can stand in for the earlier-message probe of its
 * segment: when below its start only rows deleted for good and stragglers
 * are left (whose groups it remembers now).
 */
static bool
scan_covers(ProbeSegment *s, Snapshot snapshot)
{
	int64		scan_from;
	int64		strag[STRAGGLERS];
	int			nstrag;

	if (!segment_below(probe.queue_id, s->seg, &scan_from, strag, &nstrag) ||
		scan_from < probe.scan_from)
		return false;
	seen_add_stragglers(s, strag, nstrag, snapshot);
	return true;
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
		s->seg = seg;
		s->floor = segment_floor(probe.queue_id, seg);
		s->maybe_leased = segment_maybe_leased(probe.queue_id, seg);
		s->table = table_open(relid, NoLock);	/* locked by fifo_probe_begin */
		s->group_index = open_segment_index(probe.queue_id, seg, "group");
		s->leased_index = open_segment_index(probe.queue_id, seg, "leased");
		s->slot = table_slot_create(s->table, NULL);
		s->earlier = index_beginscan(s->table, s->group_index, snapshot, 3, 0);
		s->leased = index_beginscan(s->table, s->leased_index, snapshot, 2, 0);
		s->scan_covers = seg == probe.scan_seg && scan_covers(s, snapshot);
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

/*
 * Whether a segment holds a live message of the group with an id below id;
 * with scanned, not looked for where the scan covers the segment.
 */
static bool
earlier_in(ProbeSegment *s, Datum group_key, int64 id, bool scanned)
{
	ScanKeyData keys[3];

	if (id <= s->floor || (scanned && s->scan_covers))
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

	if (!s->maybe_leased)
		return false;
	key_init(&keys[0], s->leased_index, 1, BTEqualStrategyNumber, F_TEXTEQ, group_key);
	key_init(&keys[1], s->leased_index, 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(id));
	index_rescan(s->leased, keys, 2, NULL, 0);
	while (index_getnext_slot(s->leased, ForwardScanDirection, s->slot))
	{
		bool		visible_isnull;
		bool		receipt_isnull;
		TimestampTz visible_at = DatumGetTimestampTz(slot_getattr(s->slot, SEG_ATT_VISIBLE_AT,
																  &visible_isnull));

		(void) slot_getattr(s->slot, SEG_ATT_RECEIPT, &receipt_isnull);
		if (!receipt_isnull && visible_at > now)
			return true;
	}
	return false;
}

/*
 * Whether the message is its group's head; see the header comment.  With
 * scanned, the scan's memory of the groups it met stands in for the probe
 * of its own segment's rows from its start.  The scans run in the probe's
 * memory: they keep what they allocate (killed items, for one) until they
 * end, and the caller's memory is reset for every row.
 */
static bool
is_head(Datum group_key, int64 id, TimestampTz now, bool scanned)
{
	MemoryContext old = MemoryContextSwitchTo(probe.cxt);
	bool		head = true;

	for (int i = 0; i < probe.nsegs && head; i++)
		head = !earlier_in(&probe.segs[i], group_key, id, scanned);
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
 * The test of one row with a group key: takes the group's lock and says
 * whether the message is deliverable now, as its group's head.  *fresh
 * says whether the lock was taken now (else the transaction held it).
 * busy says that another transaction was locking or changing the row.
 */
static bool
test_row(int64 queue_id, Datum group_key, int64 id, TimestampTz visible_at, TimestampTz now,
		 bool busy, bool *fresh)
{
	LOCKTAG		tag;
	LockAcquireResult got;
	bool		scan = probe.seen != NULL;
	SeenGroup  *seen = NULL;
	bool		before = false;

	if (scan)
		seen = seen_meet(group_key, id, &before);
	if (visible_at > now || held_here(id))
		return false;

	/*
	 * An earlier row the scan met holds the group back, whoever holds it,
	 * and the lock need not be tried: a miss, unless another reader was
	 * taking the group (which the lock told when the scan met it first).
	 */
	if (before)
	{
		probe.stats.misses += !seen->taken;
		return false;
	}
	if (busy)
	{
		if (seen != NULL)
			seen->taken = true;
		return false;
	}
	group_lock_tag(&tag, queue_id, DatumGetTextPP(group_key));
	got = LockAcquire(&tag, ExclusiveLock, false, true);
	if (got == LOCKACQUIRE_NOT_AVAIL)
	{
		if (seen != NULL)
			seen->taken = true;
		return false;
	}
	*fresh = got == LOCKACQUIRE_OK;

	/*
	 * The scan stands in for the probe of its segment only when this
	 * transaction holds no row of the group (it would hold the group's
	 * lock): a row it holds may lie where the scan does not go.
	 */
	if (is_head(group_key, id, now, scan && *fresh))
		return true;
	probe.stats.misses++;
	if (*fresh)
		LockRelease(&tag, ExclusiveLock, false);
	return false;
}

/*
 * The head test of one row met (group_key NULL when it has none): whether
 * it may be taken now.
 */
static bool
test_message(int64 queue_id, Datum group_key, bool ungrouped, int64 id, TimestampTz visible_at,
			 TimestampTz now, bool busy, bool *fresh)
{
	if (!probe.opened)
		probe_open_segments();
	probe.stats.visible += visible_at <= now;
	*fresh = false;
	if (ungrouped)
		return visible_at <= now && !busy && !held_here(id);
	return test_row(queue_id, group_key, id, visible_at, now, busy, fresh);
}

/*
 * queue_internal.fifo_head(queue_id, group_key, id, visible_at, now)
 * returns bool: whether message id may be taken now (visible; without a
 * group key, or its group's head, with the group's lock taken).  Runs only
 * inside a claim statement of that queue, between fifo_probe_begin and
 * fifo_probe_end.
 */
Datum
queue_fifo_head(PG_FUNCTION_ARGS)
{
	int64		queue_id = PG_GETARG_INT64(0);
	bool		fresh;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4) ||
		!probe.active || probe.queue_id != queue_id)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("queue_internal.fifo_head() runs only inside a claim of its queue")));
	PG_RETURN_BOOL(test_message(queue_id, PG_GETARG_DATUM(1), PG_ARGISNULL(1),
								PG_GETARG_INT64(2), PG_GETARG_TIMESTAMPTZ(3),
								PG_GETARG_TIMESTAMPTZ(4), false, &fresh));
}

/*
 * Locks a row the scan met, as FOR UPDATE SKIP LOCKED would, but only the
 * version the scan's snapshot shows: one changed since was changed by
 * whoever held it, and is left to the next read.
 */
static bool
lock_row(Relation table, TupleTableSlot *slot, TupleTableSlot *locked, Snapshot snapshot)
{
	TM_FailureData tmfd;
	TM_Result	result = table_tuple_lock(table, &slot->tts_tid, snapshot, locked,
										  GetCurrentCommandId(true), LockTupleExclusive,
										  LockWaitSkip, 0, &tmfd);

	if (result == TM_Invisible)
		elog(ERROR, "queue FIFO claim met a row its snapshot does not show");
	return result == TM_Ok;
}

/*
 * Whether another transaction was locking or changing the row the scan met
 * when the scan's snapshot was taken: another reader's, most likely, whose
 * group's lock would not be free either.  A hint, read without the buffer's
 * content lock, which spares the scan the lock manager for the heads other
 * readers hold; a head it passes over wrongly is left to the next read, and
 * the group's later rows with it (the scan met the group).
 */
static bool
row_busy(TupleTableSlot *slot, Snapshot snapshot)
{
	HeapTupleHeader tuple = ExecFetchSlotHeapTuple(slot, false, NULL)->t_data;
	TransactionId xmax = HeapTupleHeaderGetRawXmax(tuple);

	if ((tuple->t_infomask & (HEAP_XMAX_INVALID | HEAP_XMAX_IS_MULTI)) ||
		!TransactionIdIsNormal(xmax))
		return false;
	return XidInMVCCSnapshot(xmax, snapshot) && !TransactionIdIsCurrentTransactionId(xmax);
}

/* Gives back the lock of a group whose head was not taken after all. */
static void
group_unlock(int64 queue_id, Datum group_key)
{
	LOCKTAG		tag;

	group_lock_tag(&tag, queue_id, DatumGetTextPP(group_key));
	LockRelease(&tag, ExclusiveLock, false);
}

/*
 * The scan of fifo_claim_scan: meets the segment's rows in id order from
 * where reads start, tests each (hidden ones too: it remembers every group
 * it meets), locks the heads, and counts its windows of visible rows.
 */
static FifoScanEnd
scan_heads(int64 queue_id, int seg, TimestampTz now, int limit, HeapTuple *taken, int *ntaken)
{
	Snapshot	snapshot = GetActiveSnapshot();
	Relation	table = table_open(probe.relids[seg], NoLock);	/* locked by probe_start */
	Relation	pkey = index_open(RelationGetPrimaryKeyIndex(table), AccessShareLock);
	IndexScanDesc scan = index_beginscan(table, pkey, snapshot, 1, 0);
	TupleTableSlot *slot = table_slot_create(table, NULL);
	TupleTableSlot *lock_slot = table_slot_create(table, NULL);
	MemoryContext row_cxt = AllocSetContextCreate(CurrentMemoryContext, "queue FIFO row",
												  ALLOCSET_SMALL_SIZES);
	ScanKeyData key;
	int			window = FIFO_SCAN_ROWS * limit;
	int			windows = 1;
	ProbeStats	at_start = {0};
	long		groups_at_start = hash_get_num_entries(probe.seen);
	FifoScanEnd end = FIFO_SCAN_ALL;

	ScanKeyInit(&key, 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(probe.scan_from));
	index_rescan(scan, &key, 1, NULL, 0);
	while (*ntaken < limit && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old = MemoryContextSwitchTo(row_cxt);
		bool		ungrouped;
		bool		isnull;
		bool		fresh;
		int64		id = DatumGetInt64(slot_getattr(slot, SEG_ATT_ID, &isnull));
		TimestampTz visible_at = DatumGetTimestampTz(slot_getattr(slot, SEG_ATT_VISIBLE_AT,
																  &isnull));
		Datum		group_key = slot_getattr(slot, SEG_ATT_GROUP_KEY, &ungrouped);

		CHECK_FOR_INTERRUPTS();
		if (test_message(queue_id, group_key, ungrouped, id, visible_at, now,
						 row_busy(slot, snapshot), &fresh))
		{
			if (lock_row(table, slot, lock_slot, snapshot))
			{
				MemoryContextSwitchTo(old);
				taken[(*ntaken)++] = storage_message_tuple(lock_slot);
			}
			else if (fresh)
				group_unlock(queue_id, group_key);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(row_cxt);

		/*
		 * A window whose messages were mostly not heads (their groups in
		 * flight) ends the scan: a larger one would likely hold more of the
		 * same.  When other readers were taking what it met, it reads on,
		 * with a window twice as large, as long as it meets new groups (for
		 * a quarter of the window's messages at least): the later messages
		 * of groups it met are not heads.
		 */
		if (probe.stats.visible - at_start.visible == window && *ntaken < limit)
		{
			if ((probe.stats.misses - at_start.misses) * 2 >= window)
			{
				end = FIFO_SCAN_IN_FLIGHT;
				break;
			}
			if ((hash_get_num_entries(probe.seen) - groups_at_start) * 4 < window)
			{
				end = FIFO_SCAN_MET;
				break;
			}
			if (windows++ == FIFO_WINDOWS)
			{
				end = FIFO_SCAN_TAKEN;
				break;
			}
			at_start = probe.stats;
			groups_at_start = hash_get_num_entries(probe.seen);
			window *= 2;
		}
	}
	MemoryContextDelete(row_cxt);
	ExecDropSingleTupleTableSlot(lock_slot);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(pkey, NoLock);
	table_close(table, NoLock);
	return end;
}

/*
 * A FIFO claim of one segment in id order, from where its reads start
 * (from): locks up to limit heads of groups, with their groups' locks, and
 * adds their rows to taken, as the claims return them
 * (storage_message_tuple), in the caller's memory.  It looks at FIFO_SCAN_ROWS visible messages
 * per message wanted, then at windows twice as large while other readers
 * were taking what it met and it met new groups (FIFO_WINDOWS in all).
 * Says why it ended.
 *
 * One snapshot serves the whole scan, so that the groups it met stand in
 * for the probes of its segment below each candidate.  The rows are locked
 * here, not by a statement's FOR UPDATE: a statement would have to bound
 * its scan beforehand (the window), and read on with a statement (and a
 * snapshot) of its own.  A row is locked in the version the snapshot
 * showed, so that version is the one taken.
 */
FifoScanEnd
fifo_claim_scan(FifoScan *scan, int64 queue_id, int seg, int64 from, TimestampTz now,
				const int64 *held, int nheld, int limit, HeapTuple *taken, int *ntaken)
{
	FifoScanEnd end;

	probe_start(queue_id, seg, from, scan->seen, held, nheld);
	PG_TRY();
	{
		CommandCounterIncrement();
		PushActiveSnapshot(GetTransactionSnapshot());
		end = scan_heads(queue_id, seg, now, limit, taken, ntaken);
		fifo_probe_end();
		PopActiveSnapshot();
	}
	PG_CATCH();
	{
		fifo_probe_abandon();
		PG_RE_THROW();
	}
	PG_END_TRY();
	return end;
}
