/*
 * catalog.c
 *    The queue catalog (queue_internal.queue) as the rest of the extension
 *    sees it: a per-backend cache of each queue's settings and grants, the
 *    privilege checks made against it, and the owner context in which the
 *    extension touches its own tables.
 *
 * The cache maps a queue name to its QueueMeta.  Every function that
 * changes the catalog calls catalog_changed(), which queues a relcache
 * invalidation of the catalog table; all backends (this one at its next
 * command, the others when the change commits) then drop their whole cache.
 *
 * Privileges are checked as the calling role, before the switch to the
 * owner context: the superuser, the queue's owner and members of its
 * administrators may do everything; senders may send; readers may read,
 * acknowledge, return and archive.  Only then does owner_context_enter()
 * switch to the extension's owner with search_path pinned to pg_catalog,
 * pg_temp, so that nothing the caller planted in a schema is ever resolved.
 * A send without a deduplication key needs no switch: storage_send runs no
 * SQL and resolves no name.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "queue.h"

static HTAB *meta_cache = NULL;
static MemoryContext meta_context = NULL;
static uint64 inval_count = 0;	/* bumped by every catalog invalidation */
static Oid	cached_catalog_relid = InvalidOid;
static Oid	cached_owner = InvalidOid;
static SPIPlanPtr lookup_plan = NULL;	/* by name */
static SPIPlanPtr lookup_by_id_plan = NULL;

#define META_COLUMNS "id, name, logged, visibility_timeout, max_attempts, " \
	"dead_letter_queue, retention, owner, senders, readers, admins, dedup_window, fifo, fair"

static void
catalog_inval_callback(Datum arg pg_attribute_unused(), Oid relid)
{
	if (relid == InvalidOid || relid == cached_catalog_relid)
	{
		inval_count++;
		if (meta_context != NULL)
			MemoryContextReset(meta_context);
		meta_cache = NULL;
		cached_catalog_relid = InvalidOid;
		cached_owner = InvalidOid;
	}
}

static void
ensure_cache(void)
{
	static bool callback_registered = false;
	HASHCTL		info;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(catalog_inval_callback, (Datum) 0);
		callback_registered = true;
	}
	if (meta_context == NULL)
		meta_context = AllocSetContextCreate(CacheMemoryContext,
											 "queue catalog cache",
											 ALLOCSET_SMALL_SIZES);
	if (meta_cache != NULL)
		return;
	info.keysize = NAMEDATALEN;
	info.entrysize = sizeof(QueueMeta);
	info.hcxt = meta_context;
	meta_cache = hash_create("queue catalog cache", 64, &info,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

static Oid
internal_namespace(void)
{
	Oid			nsp = get_namespace_oid(QUEUE_INTERNAL_SCHEMA, true);

	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"queue\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION queue.")));
	return nsp;
}

/* The OID of queue_internal.queue. */
Oid
catalog_relid(void)
{
	ensure_cache();
	if (!OidIsValid(cached_catalog_relid))
		cached_catalog_relid = get_relname_relid("queue", internal_namespace());
	return cached_catalog_relid;
}

/* The extension's owner: the owner of its internal schema. */
static Oid
extension_owner(void)
{
	HeapTuple	tup;

	(void) catalog_relid();
	if (OidIsValid(cached_owner))
		return cached_owner;
	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(internal_namespace()));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for schema %s", QUEUE_INTERNAL_SCHEMA);
	cached_owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return cached_owner;
}

/* Tells every backend, this one included, that the catalog changed. */
void
catalog_changed(void)
{
	CacheInvalidateRelcacheByRelid(catalog_relid());
}

/*
 * Switches to the extension's owner with a pinned search_path and connects
 * to SPI.  An error before owner_context_exit() needs no cleanup: the
 * transaction's abort restores the user and the settings.
 */
void
owner_context_enter(OwnerContext *ctx)
{
	Oid			owner = extension_owner();

	GetUserIdAndSecContext(&ctx->saved_userid, &ctx->saved_sec_context);
	SetUserIdAndSecContext(owner, ctx->saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	ctx->guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);

	/*
	 * Every statement of ours is meant to reach rows through an index.  A
	 * plan made while a queue's table was empty or never analyzed would
	 * otherwise scan the whole table until autovacuum analyzes it again.
	 */
	(void) set_config_option("enable_seqscan", "off",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	/*
	 * Nor through a bitmap: a queue's indexes are mostly entries of rows
	 * already deleted, which index scans learn to skip (killed items) and
	 * bitmap scans visit in the heap every time.
	 */
	(void) set_config_option("enable_bitmapscan", "off",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	/* the few scans left then look costly enough to compile: not worth it */
	(void) set_config_option("jit", "off",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ctx->spi_connected = true;
}

void
owner_context_exit(OwnerContext *ctx)
{
	if (ctx->spi_connected)
		SPI_finish();
	ctx->spi_connected = false;
	AtEOXact_GUC(true, ctx->guc_level);
	SetUserIdAndSecContext(ctx->saved_userid, ctx->saved_sec_context);
}

static Oid *
copy_oid_array(Datum value, int *n)
{
	ArrayType  *arr = DatumGetArrayTypeP(value);
	Datum	   *elems;
	Oid		   *oids;

	deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, NULL, n);
	oids = MemoryContextAlloc(meta_context, sizeof(Oid) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		oids[i] = DatumGetObjectId(elems[i]);
	return oids;
}

/* Fills *meta from one catalog row (in META_COLUMNS order). */
static void
meta_from_tuple(QueueMeta *meta, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;

	meta->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	meta->logged = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	meta->visibility_usecs = interval_usecs(DatumGetIntervalP(SPI_getbinval(tup, desc, 4, &isnull)),
										   "visibility_timeout");
	d = SPI_getbinval(tup, desc, 5, &isnull);
	meta->max_attempts = isnull ? 0 : DatumGetInt32(d);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	meta->dead_letter_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	meta->retention_usecs = isnull ? -1 : interval_usecs(DatumGetIntervalP(d), "retention");
	meta->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
	meta->senders = copy_oid_array(SPI_getbinval(tup, desc, 9, &isnull), &meta->nsenders);
	meta->readers = copy_oid_array(SPI_getbinval(tup, desc, 10, &isnull), &meta->nreaders);
	meta->admins = copy_oid_array(SPI_getbinval(tup, desc, 11, &isnull), &meta->nadmins);
	meta->dedup_window_usecs = interval_usecs(DatumGetIntervalP(SPI_getbinval(tup, desc, 12, &isnull)),
											  "dedup_window");
	meta->fifo = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
	meta->fair = DatumGetBool(SPI_getbinval(tup, desc, 14, &isnull));
}

/*
 * A copy of a cached entry in the caller's memory context: an invalidation
 * may reset the cache at any lock acquisition, while the caller still uses
 * what it looked up.
 */
static QueueMeta *
meta_copy(const QueueMeta *cached)
{
	QueueMeta  *meta = palloc(sizeof(QueueMeta));

	memcpy(meta, cached, sizeof(QueueMeta));
	meta->senders = palloc(sizeof(Oid) * Max(meta->nsenders, 1));
	memcpy(meta->senders, cached->senders, sizeof(Oid) * meta->nsenders);
	meta->readers = palloc(sizeof(Oid) * Max(meta->nreaders, 1));
	memcpy(meta->readers, cached->readers, sizeof(Oid) * meta->nreaders);
	meta->admins = palloc(sizeof(Oid) * Max(meta->nadmins, 1));
	memcpy(meta->admins, cached->admins, sizeof(Oid) * meta->nadmins);
	return meta;
}

/*
 * Reads one queue's row through SPI, as the owner, and caches it.  Not
 * read-only, so that it sees a queue created earlier in the same statement
 * (SELECT queue.create('dlq'), queue.create('q', dead_letter_queue => 'dlq')).
 */
static QueueMeta *
meta_load(Oid argtype, Datum arg)
{
	OwnerContext ctx;
	uint64		inval_before = inval_count;
	MemoryContext caller = CurrentMemoryContext;
	QueueMeta  *meta = NULL;
	QueueMeta	loaded;
	int			rc;

	owner_context_enter(&ctx);
	if (argtype == TEXTOID)
	{
		if (lookup_plan == NULL)
			lookup_plan = keep_plan("SELECT " META_COLUMNS
									" FROM queue_internal.queue WHERE name = $1", 1, &argtype);
		rc = SPI_execute_plan(lookup_plan, &arg, NULL, false, 1);
	}
	else
	{
		if (lookup_by_id_plan == NULL)
			lookup_by_id_plan = keep_plan("SELECT " META_COLUMNS
										  " FROM queue_internal.queue WHERE id = $1", 1, &argtype);
		rc = SPI_execute_plan(lookup_by_id_plan, &arg, NULL, false, 1);
	}
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "queue catalog lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		MemoryContext spi = MemoryContextSwitchTo(caller);

		ensure_cache();
		memset(&loaded, 0, sizeof(loaded));
		strlcpy(loaded.name, name, NAMEDATALEN);
		meta_from_tuple(&loaded, SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
		if (inval_count == inval_before)
			memcpy(hash_search(meta_cache, name, HASH_ENTER, NULL), &loaded, sizeof(QueueMeta));
		meta = meta_copy(&loaded);
		MemoryContextSwitchTo(spi);
	}
	owner_context_exit(&ctx);
	return meta;
}

/* A queue's settings by name; NULL or 42704 when there is no such queue. */
const QueueMeta *
queue_lookup(const char *name, bool missing_ok)
{
	const QueueMeta *cached = NULL;
	const QueueMeta *meta;

	ensure_cache();
	(void) catalog_relid();
	if (meta_cache != NULL)
		cached = hash_search(meta_cache, name, HASH_FIND, NULL);
	if (cached != NULL)
		meta = meta_copy(cached);
	else
		meta = meta_load(TEXTOID, CStringGetTextDatum(name));
	if (meta == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", name),
				 errhint("The queues that exist are listed in the view queue.queues.")));
	return meta;
}

/*
 * A queue's settings by id, or NULL.  The cache is keyed by name, but holds
 * few queues: a drain worker finds its queue there before every batch.
 */
const QueueMeta *
queue_lookup_by_id(int64 id)
{
	HASH_SEQ_STATUS status;
	QueueMeta  *cached;

	ensure_cache();
	(void) catalog_relid();
	if (meta_cache != NULL)
	{
		hash_seq_init(&status, meta_cache);
		while ((cached = hash_seq_search(&status)) != NULL)
		{
			if (cached->id == id)
			{
				hash_seq_term(&status);
				return meta_copy(cached);
			}
		}
	}
	return meta_load(INT8OID, Int64GetDatum(id));
}

static bool
role_listed(Oid user, int n, const Oid *roles)
{
	for (int i = 0; i < n; i++)
	{
		if (has_privs_of_role(user, roles[i]))
			return true;
	}
	return false;
}

/* Whether the current role holds every privilege in the mask on the queue. */
bool
queue_has_privilege(const QueueMeta *meta, int privileges)
{
	Oid			user = GetUserId();

	if (superuser_arg(user) || has_privs_of_role(user, meta->owner) ||
		role_listed(user, meta->nadmins, meta->admins))
		return true;
	if (privileges & QUEUE_PRIV_ADMIN)
		return false;
	if ((privileges & QUEUE_PRIV_SEND) && !role_listed(user, meta->nsenders, meta->senders))
		return false;
	if ((privileges & QUEUE_PRIV_READ) && !role_listed(user, meta->nreaders, meta->readers))
		return false;
	return true;
}

static const char *
privilege_name(int privileges)
{
	if (privileges & QUEUE_PRIV_ADMIN)
		return "administer";
	if (privileges & QUEUE_PRIV_SEND)
		return "send";
	return "read";
}

/* Raises 42501 unless the current role holds the privileges. */
void
queue_require_privilege(const QueueMeta *meta, int privileges)
{
	if (!queue_has_privilege(meta, privileges))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for queue \"%s\"", meta->name),
				 errdetail("This needs the %s privilege on the queue.", privilege_name(privileges)),
				 errhint("The queue's owner or an administrator can grant it with queue.grant().")));
}

/*
 * The usual start of an API function: the name argument validated, the queue
 * looked up and the caller's privileges checked.
 */
const QueueMeta *
queue_open(FunctionCallInfo fcinfo, int argno, const char *argname, int privileges)
{
	char	   *name;
	const QueueMeta *meta;

	require_preloaded();
	name = queue_name_arg(fcinfo, argno, argname);
	meta = queue_lock(queue_lookup(name, false), AccessShareLock);
	if (meta == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", name),
				 errdetail("It was dropped while this statement waited for it.")));
	queue_require_privilege(meta, privileges);
	return meta;
}

/*
 * Refuses a function that writes in a read-only transaction (25006), as
 * PostgreSQL's own commands are refused, rather than leaving it to the
 * extension's statements on its tables (whose text the error would show),
 * or to nothing at all: a send writes its rows without a statement.
 */
void
require_writable(FunctionCallInfo fcinfo)
{
	if (XactReadOnly)
		PreventCommandIfReadOnly(psprintf("queue.%s()", get_func_name(fcinfo->flinfo->fn_oid)));
}

/*
 * Locks a queue against a concurrent drop (which takes the same lock in
 * ACCESS EXCLUSIVE mode) until the end of the transaction, then returns its
 * settings as they are now: NULL when it was dropped meanwhile.  Without
 * the lock, a queue looked up just before a concurrent drop committed would
 * be used after its tables were gone.
 */
const QueueMeta *
queue_lock(const QueueMeta *meta, LOCKMODE mode)
{
	uint64		inval_before = inval_count;

	LockDatabaseObject(catalog_relid(), (Oid) (meta->id & 0xFFFFFFFF),
					   (int32) (meta->id >> 32), mode);
	/* taking the lock read the invalidations of what committed meanwhile */
	if (inval_count == inval_before && !IsolationUsesXactSnapshot())
		return meta;
	/*
	 * The system catalogs are read with a fresh snapshot, our catalog with
	 * the transaction's, which in REPEATABLE READ still shows a queue whose
	 * drop has committed (even before this lock): its tables tell.
	 */
	if (!OidIsValid(storage_relid(meta->id)))
		return NULL;
	return queue_lookup_by_id(meta->id);
}

/*
 * Runs a statement on the extension's catalogs (not a hot path: parsed
 * each time) in the owner context, and fails loudly on anything but
 * success.
 */
void
run_sql(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "queue catalog statement failed: %s", SPI_result_code_string(rc));
}

/* Prepares a statement once per backend and keeps its plan for good. */
SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "could not prepare queue statement: %s", SPI_result_code_string(SPI_result));
	return plan;
}
