/*
 * segment_indexes.c
 *    The indexes a direct send (storage_send) writes entries into.
 *
 * A send inserts its rows without an INSERT statement, so nothing prepares
 * the segment table's index descriptions for it.  ExecOpenIndices would
 * build them again for every call, and ExecInsertIndexTuples would plan and
 * compile each partial index's predicate again, though the indexes of a
 * segment table never change while it holds rows.  This file keeps, for
 * the segment tables of the last queue sent to, each index's IndexInfo with
 * its predicate and expressions compiled once, and opens for a call only
 * the indexes some of its rows belong in: a send of priority 0 leaves the
 * priority index alone, as it leaves the FIFO and fair indexes of a message
 * without a group key.
 *
 * A relcache invalidation of a table (an index created or dropped, a
 * VACUUM or ANALYZE updating its pg_class row) or of all tables makes its
 * entry be built again at the next send.  Since the caller holds the
 * table's RowExclusiveLock, which conflicts with CREATE and DROP INDEX,
 * the set cannot change while a send uses it.
 */
#include "postgres.h"

#include "access/genam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "optimizer/optimizer.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "queue.h"

typedef struct CachedIndexes
{
	Oid			relid;			/* segment table, InvalidOid: unused */
	bool		valid;			/* false once invalidated */
	MemoryContext cxt;			/* holds what follows */
	int			nindexes;
	Oid		   *index_oids;
	IndexInfo **infos;			/* predicates and expressions compiled */
} CachedIndexes;

static CachedIndexes cached[QUEUE_SEGMENTS];
static int	next_victim = 0;
/* counts invalidations, so that a build overtaken by one is not trusted */
static uint64 invalidations = 0;

static void
indexes_inval_callback(Datum arg pg_attribute_unused(), Oid relid)
{
	invalidations++;
	for (int i = 0; i < QUEUE_SEGMENTS; i++)
	{
		if (!OidIsValid(relid) || cached[i].relid == relid)
			cached[i].valid = false;
	}
}

/*
 * Describes one index for inserts across transactions: what
 * ExecInsertIndexTuples would otherwise compile into the EState of each
 * call is compiled here, in the entry's context.
 */
static IndexInfo *
describe_index(Relation index)
{
	IndexInfo  *info = BuildIndexInfo(index);

	if (info->ii_Predicate != NIL)
		info->ii_PredicateState =
			ExecInitQual((List *) expression_planner((Expr *) info->ii_Predicate), NULL);
	if (info->ii_Expressions != NIL)
	{
		ListCell   *lc;

		foreach(lc, info->ii_Expressions)
			info->ii_ExpressionsState =
				lappend(info->ii_ExpressionsState,
						ExecInitExpr(expression_planner((Expr *) lfirst(lc)), NULL));
	}
	return info;
}

/* Fills an entry with the indexes of rel, a locked segment table. */
static void
build_entry(CachedIndexes *entry, Relation rel)
{
	List	   *oids;
	ListCell   *lc;
	MemoryContext old;
	int			i = 0;

	if (entry->cxt == NULL)
		entry->cxt = AllocSetContextCreate(CacheMemoryContext, "queue segment indexes",
										   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(entry->cxt);
	entry->relid = InvalidOid;
	entry->valid = false;
	old = MemoryContextSwitchTo(entry->cxt);
	oids = RelationGetIndexList(rel);
	entry->nindexes = list_length(oids);
	entry->index_oids = palloc(sizeof(Oid) * Max(entry->nindexes, 1));
	entry->infos = palloc(sizeof(IndexInfo *) * Max(entry->nindexes, 1));
	foreach(lc, oids)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);

		entry->index_oids[i] = lfirst_oid(lc);
		entry->infos[i++] = describe_index(index);
		index_close(index, RowExclusiveLock);
	}
	MemoryContextSwitchTo(old);
	entry->relid = RelationGetRelid(rel);
}

/* The entry of rel, built when missing or invalidated. */
static CachedIndexes *
entry_for(Relation rel)
{
	static bool callback_registered = false;
	Oid			relid = RelationGetRelid(rel);
	CachedIndexes *entry = NULL;
	uint64		before;

	for (int i = 0; i < QUEUE_SEGMENTS; i++)
	{
		if (cached[i].relid == relid)
		{
			if (cached[i].valid)
				return &cached[i];
			entry = &cached[i];
		}
	}
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(indexes_inval_callback, (Datum) 0);
		callback_registered = true;
	}
	if (entry == NULL)
	{
		entry = &cached[next_victim];
		next_victim = (next_victim + 1) % QUEUE_SEGMENTS;
	}
	before = invalidations;
	build_entry(entry, rel);
	/* an invalidation met while building: used this once, built again next time */
	entry->valid = (invalidations == before);
	return entry;
}

/* Whether any of the rows belongs in the index (all do unless it is partial). */
static bool
index_wanted(IndexInfo *info, TupleTableSlot **slots, int nslots, EState *estate)
{
	ExprContext *econtext = GetPerTupleExprContext(estate);
	bool		wanted = false;

	if (!info->ii_ReadyForInserts)
		return false;
	if (info->ii_PredicateState == NULL)
		return true;
	for (int i = 0; i < nslots && !wanted; i++)
	{
		econtext->ecxt_scantuple = slots[i];
		wanted = ExecQual(info->ii_PredicateState, econtext);
		ResetExprContext(econtext);
	}
	return wanted;
}

/*
 * Opens into rri, as ExecOpenIndices would, the indexes of its relation
 * (a segment table the caller has locked) that at least one of the rows
 * in slots belongs in.  ExecInsertIndexTuples then inserts each row where
 * it belongs, and ExecCloseIndices closes them.
 */
void
segment_indexes_open(ResultRelInfo *rri, TupleTableSlot **slots, int nslots, EState *estate)
{
	CachedIndexes *entry = entry_for(rri->ri_RelationDesc);
	int			n = 0;

	rri->ri_IndexRelationDescs = palloc(sizeof(Relation) * Max(entry->nindexes, 1));
	rri->ri_IndexRelationInfo = palloc(sizeof(IndexInfo *) * Max(entry->nindexes, 1));
	for (int i = 0; i < entry->nindexes; i++)
	{
		if (!index_wanted(entry->infos[i], slots, nslots, estate))
			continue;
		rri->ri_IndexRelationDescs[n] = index_open(entry->index_oids[i], RowExclusiveLock);
		rri->ri_IndexRelationInfo[n++] = entry->infos[i];
	}
	rri->ri_NumIndices = n;
}
