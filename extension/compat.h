/*
 * compat.h
 *    Every shim between the PostgreSQL majors queue supports (13 to 17).
 *
 * Code elsewhere calls the names defined here and never tests
 * PG_VERSION_NUM itself, so that a new major touches this file alone.
 */
#ifndef QUEUE_COMPAT_H
#define QUEUE_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM >= 150000
#include "common/pg_prng.h"
#define queue_random_int64()	pg_prng_int64(&pg_global_prng_state)
#define queue_reserve_guc_prefix(prefix)	MarkGUCPrefixReserved(prefix)
#define QUEUE_HAS_SHMEM_REQUEST_HOOK 1
#else
#define queue_random_int64()	((int64) (((uint64) random() << 32) ^ (uint64) random()))
#define queue_reserve_guc_prefix(prefix)	EmitWarningsOnPlaceholders(prefix)
#endif



#if PG_VERSION_NUM >= 160000
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "utils/acl.h"
#define queue_proc_aclcheck(proc, role, mode) \
	object_aclcheck(ProcedureRelationId, (proc), (role), (mode))
#define queue_database_aclcheck(db, role, mode) \
	object_aclcheck(DatabaseRelationId, (db), (role), (mode))
#define queue_database_ownercheck(db, role) \
	object_ownercheck(DatabaseRelationId, (db), (role))
#define queue_extension_ownercheck(ext, role) \
	object_ownercheck(ExtensionRelationId, (ext), (role))
#else
#include "utils/acl.h"
#define queue_proc_aclcheck(proc, role, mode)	pg_proc_aclcheck((proc), (role), (mode))
#define queue_database_aclcheck(db, role, mode)	pg_database_aclcheck((db), (role), (mode))
#define queue_database_ownercheck(db, role)	pg_database_ownercheck((db), (role))
#define queue_extension_ownercheck(ext, role)	pg_extension_ownercheck((ext), (role))
#endif

/*
 * ExecInsertIndexTuples took its result relation from the EState until
 * PostgreSQL 14, and gained onlySummarizing in 16.
 */
#if PG_VERSION_NUM >= 160000
#define queue_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#elif PG_VERSION_NUM >= 140000
#define queue_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#else
#define queue_insert_index_tuples(rri, slot, estate) \
	((estate)->es_result_relation_info = (rri), \
	 ExecInsertIndexTuples((slot), (estate), false, NULL, NIL))
#endif

/* ProcessUtility_hook gained readOnlyTree in PostgreSQL 14. */
#if PG_VERSION_NUM >= 140000
#define QUEUE_UTILITY_ARGS \
	PlannedStmt *pstmt, const char *queryString, bool readOnlyTree, \
	ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *queryEnv, \
	DestReceiver *dest, QueryCompletion *qc
#define QUEUE_UTILITY_PASS \
	pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc
#else
#define QUEUE_UTILITY_ARGS \
	PlannedStmt *pstmt, const char *queryString, \
	ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *queryEnv, \
	DestReceiver *dest, QueryCompletion *qc
#define QUEUE_UTILITY_PASS \
	pstmt, queryString, context, params, queryEnv, dest, qc
#endif

#if PG_VERSION_NUM < 150000
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"

#define MAT_SRF_USE_EXPECTED_DESC 0x01

/* PostgreSQL 15's helper for a function that returns a materialized set. */
static inline void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	TupleDesc	tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) == TYPEFUNC_COMPOSITE)
		tupdesc = CreateTupleDescCopy(tupdesc);
	else
	{
		tupdesc = CreateTemplateTupleDesc(1);
		TupleDescInitEntry(tupdesc, 1, "result",
						   get_fn_expr_rettype(fcinfo->flinfo), -1, 0);
	}
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(old);
}
#endif

#endif							/* QUEUE_COMPAT_H */
