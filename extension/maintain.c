/*
 * maintain.c
 *    Housekeeping of one database's queues, run by the maintenance worker
 *    the launcher starts every queue.maintenance_interval (drain.c): what
 *    must happen even when nobody calls the queue's functions.
 *
 * Today that is pruning archives past their retention (archive prunes too,
 * but an archive nobody adds to would otherwise keep its old messages for
 * ever), deleting expired deduplication keys, and recycling segments
 * (storage_maintain: backends that use a queue do it too, just before they
 * commit, but an idle queue's last segment would otherwise wait for them).  Each queue is maintained on its own and a failure is logged and
 * skipped, so one broken queue does not stop the others' housekeeping.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "queue.h"

typedef struct QueueChore
{
	int64		id;
	int64		retention_usecs;	/* -1: keep for ever */
	bool		logged;
} QueueChore;

/* The queues of this database and what each needs. */
static int
list_queues(QueueChore **chores)
{
	OwnerContext ctx;
	int			n;

	owner_context_enter(&ctx);
	if (SPI_execute("SELECT id, retention, logged FROM queue_internal.queue ORDER BY id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the queues");
	n = (int) SPI_processed;
	*chores = SPI_palloc(sizeof(QueueChore) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		Datum		d;

		(*chores)[i].id = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		(*chores)[i].retention_usecs = isnull ? -1 :
			interval_usecs(DatumGetIntervalP(d), "retention");
		(*chores)[i].logged = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
	}
	owner_context_exit(&ctx);
	return n;
}

static void
maintain_queue(const QueueChore *q)
{
	OwnerContext ctx;

	owner_context_enter(&ctx);
	if (q->retention_usecs >= 0)
	{
		Datum		cutoff = TimestampTzGetDatum(GetCurrentTimestamp() - q->retention_usecs);

		if (SPI_execute_plan(storage_plan(STMT_PRUNE_ARCHIVE, q->id, 0), &cutoff, NULL,
							 false, 0) < 0)
			elog(ERROR, "could not prune the archive of queue %lld", (long long) q->id);
	}
	dedup_prune(q->id, q->logged);
	/* recycles a drained segment, starts a new one when due (segment.c) */
	(void) storage_maintain(q->id, false);
	owner_context_exit(&ctx);
}

/*
 * Maintains every queue of the current database, each in a subtransaction
 * of the caller's transaction.
 */
void
queue_maintain_database(void)
{
	QueueChore *chores;
	int			n = list_queues(&chores);
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	for (int i = 0; i < n; i++)
	{
		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			maintain_queue(&chores[i]);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			EmitErrorReport();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
}
