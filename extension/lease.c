/*
 * lease.c
 *    Leases taken by the current transaction and not yet written.
 *
 * A read locks the messages it hands out (FOR UPDATE SKIP LOCKED) but does
 * not write their lease (visible_at, attempts + 1, receipt) at once: it
 * records it here and writes it just before the transaction commits, for
 * the messages the transaction did not acknowledge meanwhile.  A consumer
 * that reads and acks in one transaction so pays one lock and one delete per
 * message, as a plain DELETE ... SKIP LOCKED does, instead of a lock, an
 * update and a delete.  Nothing else can tell the difference: the row lock
 * keeps other readers off until the commit, and a rollback undoes the lease
 * either way.
 *
 * Operations on a message leased here: ack deletes it and marks the lease
 * consumed; anything else (nack, set_visibility, archive) first writes the
 * queue's pending leases (lease_flush) and then works on the rows as usual.
 * A later read in the same transaction skips the messages leased here, since
 * SKIP LOCKED does not skip rows locked by the transaction itself.
 *
 * Savepoints: a lease belongs to the level that read it, a consumption to
 * the level that acked it; aborting a savepoint drops the leases read in it
 * and revives those acked in it (their delete is undone); a lease written
 * early (lease_flush) inside a savepoint that is rolled back becomes
 * unwritten again, to be written at commit.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "queue.h"

typedef struct PendingLease
{
	int64		queue_id;
	int			nest_level;		/* of the read */
	int			written_level;	/* 0: not written yet; else the level that wrote it */
	int64		receipt;
	TimestampTz visible_at;
	int			n;
	int64	   *ids;
	int		   *consumed_level; /* 0: not acked; else the level of the ack */
} PendingLease;

static List *leases = NIL;		/* of PendingLease, in TopTransactionContext */

/* Records the lease of messages a read just locked and handed out. */
void
lease_record(int64 queue_id, int64 receipt, TimestampTz visible_at, int n, const int64 *ids)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingLease *l = palloc(sizeof(PendingLease));

	l->queue_id = queue_id;
	l->nest_level = GetCurrentTransactionNestLevel();
	l->written_level = 0;
	l->receipt = receipt;
	l->visible_at = visible_at;
	l->n = n;
	l->ids = palloc(sizeof(int64) * n);
	memcpy(l->ids, ids, sizeof(int64) * n);
	l->consumed_level = palloc0(sizeof(int) * n);
	leases = lappend(leases, l);
	MemoryContextSwitchTo(old);
}

/* Whether the transaction holds unwritten leases at all. */
bool
lease_any(void)
{
	ListCell   *lc;

	foreach(lc, leases)
	{
		if (((PendingLease *) lfirst(lc))->written_level == 0)
			return true;
	}
	return false;
}

/* Whether the transaction holds unwritten leases on the queue. */
bool
lease_pending(int64 queue_id)
{
	ListCell   *lc;

	foreach(lc, leases)
	{
		PendingLease *l = lfirst(lc);

		if (l->queue_id == queue_id && l->written_level == 0)
			return true;
	}
	return false;
}

/*
 * Looks a message up among the queue's unwritten, unconsumed leases: MATCH
 * when (id, receipt) is one (and then consumes it), OTHER when the message is
 * leased here under another receipt, NONE when it is not leased here.
 */
LeaseMatch
lease_consume(int64 queue_id, int64 id, int64 receipt)
{
	ListCell   *lc;

	foreach(lc, leases)
	{
		PendingLease *l = lfirst(lc);

		if (l->queue_id != queue_id || l->written_level != 0)
			continue;
		for (int i = 0; i < l->n; i++)
		{
			if (l->ids[i] != id || l->consumed_level[i] != 0)
				continue;
			if (l->receipt != receipt)
				return LEASE_OTHER;
			l->consumed_level[i] = GetCurrentTransactionNestLevel();
			return LEASE_MATCH;
		}
	}
	return LEASE_NONE;
}

/* The ids of the queue's leases, consumed or not, and more (*n of them). */
int64 *
lease_ids(int64 queue_id, const int64 *more, int nmore, int *nids)
{
	int			n = nmore;
	int64	   *ids;
	ListCell   *lc;

	foreach(lc, leases)
	{
		PendingLease *l = lfirst(lc);

		if (l->queue_id == queue_id)
			n += l->n;
	}
	ids = palloc(sizeof(int64) * Max(n, 1));
	n = 0;
	foreach(lc, leases)
	{
		PendingLease *l = lfirst(lc);

		if (l->queue_id == queue_id)
		{
			memcpy(ids + n, l->ids, sizeof(int64) * l->n);
			n += l->n;
		}
	}
	memcpy(ids + n, more, sizeof(int64) * nmore);
	*nids = n + nmore;
	return ids;
}

/* Writes one lease's unconsumed messages; the caller is in the owner context. */
static void
write_lease(const PendingLease *l)
{
	int64	   *ids = palloc(sizeof(int64) * Max(l->n, 1));
	int			n = 0;
	int64		lowest = PG_INT64_MAX;
	Datum		args[3];
	StorageRows written;

	for (int i = 0; i < l->n; i++)
	{
		if (l->consumed_level[i] == 0)
		{
			ids[n++] = l->ids[i];
			lowest = Min(lowest, l->ids[i]);
		}
	}
	/* nothing left to lease, or the queue was dropped since the read */
	if (n == 0 || !OidIsValid(storage_relid(l->queue_id)))
		return;
	args[0] = storage_id_array(ids, n);
	args[1] = TimestampTzGetDatum(l->visible_at);
	args[2] = Int64GetDatum(l->receipt);
	written = storage_by_id(STMT_WRITE_LEASE, l->queue_id, lowest, args, NULL, (uint64) n);
	pending_hidden(l->queue_id, l->visible_at, (int32) written.processed, 0);
}

/*
 * Writes the unwritten leases of one queue (queue_id > 0) or of all queues
 * (0).  They stay listed, marked with the level that wrote them, so that a
 * rolled-back savepoint can undo the writing (lease_at_subxact_end).
 */
void
lease_flush(int64 queue_id)
{
	bool		pushed = false;
	ListCell   *lc;
	OwnerContext ctx;

	if (queue_id > 0 ? !lease_pending(queue_id) : !lease_any())
		return;
	/* at commit no statement is running, so there is no snapshot to use */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	owner_context_enter(&ctx);
	foreach(lc, leases)
	{
		PendingLease *l = lfirst(lc);

		if (l->written_level != 0 || (queue_id > 0 && l->queue_id != queue_id))
			continue;
		write_lease(l);
		l->written_level = GetCurrentTransactionNestLevel();
	}
	owner_context_exit(&ctx);
	if (pushed)
		PopActiveSnapshot();
}

/* Forgets every lease when the transaction ends (its locks go with it). */
void
lease_at_xact_end(void)
{
	leases = NIL;
}

/* A committed savepoint hands its leases and acks to its parent; an aborted one undoes them. */
void
lease_at_subxact_end(bool commit, int level)
{
	ListCell   *lc;

	foreach(lc, leases)
	{
		PendingLease *l = lfirst(lc);

		if (!commit && l->nest_level >= level)
		{
			leases = foreach_delete_current(leases, lc);
			continue;
		}
		if (l->nest_level >= level)
			l->nest_level = level - 1;
		if (l->written_level >= level)
			l->written_level = commit ? level - 1 : 0;
		for (int i = 0; i < l->n; i++)
		{
			if (l->consumed_level[i] >= level)
				l->consumed_level[i] = commit ? level - 1 : 0;
		}
	}
}
