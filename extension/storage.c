/*
 * storage.c
 *    A queue's tables and every statement that touches them.
 *
 * Queue 17 keeps its messages in queue_internal.q17 and its archive in
 * queue_internal.a17; names come from the numeric id alone, never from the
 * user's name.  Each statement is prepared once per backend, per queue (and
 * per dead-letter or target queue where one is involved), and kept with
 * SPI_keepplan, so the hot paths never parse SQL.  The plan cache lives in
 * TopMemoryContext; PostgreSQL's plan cache revalidates the plans when the
 * tables change.  Callers run inside owner_context_enter(), so the
 * statements run as the extension's owner with search_path pinned.
 *
 * Reading: a claim locks the oldest visible messages with FOR UPDATE SKIP
 * LOCKED and returns them; their lease is written at commit (lease.c).
 * Statements that pick rows to change select them once, in an ARRAY()
 * sub-select (an IN (sub-select) may be re-run by the planner and touch more
 * rows than asked for).
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "queue.h"

typedef struct PlanKey
{
	int64		queue_id;
	int64		other_id;		/* dead-letter or target queue, else 0 */
	int32		stmt;
} PlanKey;

typedef struct PlanEntry
{
	PlanKey		key;
	SPIPlanPtr	plan;
} PlanEntry;

static HTAB *plan_cache = NULL;

/* The row a lease-checked update changes, locked, with its old visible_at. */
#define LEASED_ROW "(SELECT id, visible_at FROM queue_internal.q%1$lld" \
	" WHERE id = $1 AND receipt = $2 FOR UPDATE) AS old"

/* The columns of queue.message, in order, as returned by reads. */
#define MESSAGE_COLUMNS "id, payload, headers, group_key, enqueued_at, visible_at, attempts, last_error, receipt"

typedef struct StatementDef
{
	const char *sql;			/* %1$lld: queue id, %2$lld: other queue id */
	int			nargs;
	Oid			argtypes[6];
} StatementDef;

static const StatementDef statements[STMT__COUNT] = {
	[STMT_SEND] = {
		"INSERT INTO queue_internal.q%1$lld (visible_at, enqueued_at, group_key, headers, payload)"
		" VALUES ($1, $2, $3, $4, $5) RETURNING id",
		5, {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, JSONBOID, JSONBOID}
	},
	[STMT_SEND_BATCH] = {
		"INSERT INTO queue_internal.q%1$lld (visible_at, enqueued_at, group_key, headers, payload)"
		" SELECT $1, $2, $3, $4, p FROM unnest($5::jsonb[]) WITH ORDINALITY AS u(p, n)"
		" ORDER BY n RETURNING id",
		5, {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, JSONBOID, JSONBARRAYOID}
	},
	[STMT_SEND_WITH_ID] = {
		"INSERT INTO queue_internal.q%1$lld (visible_at, enqueued_at, group_key, headers, payload, id)"
		" VALUES ($1, $2, $3, $4, $5, $6)",
		6, {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, JSONBOID, JSONBOID, INT8OID}
	},
	[STMT_CLAIM] = {
		"SELECT " MESSAGE_COLUMNS " FROM queue_internal.q%1$lld"
		" WHERE visible_at <= $1 AND id <> ALL ($2)"
		" ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
		3, {TIMESTAMPTZOID, INT8ARRAYOID, INT4OID}
	},
	[STMT_WRITE_LEASE] = {
		"UPDATE queue_internal.q%1$lld SET visible_at = $2, attempts = attempts + 1, receipt = $3"
		" WHERE id = ANY ($1)",
		3, {INT8ARRAYOID, TIMESTAMPTZOID, INT8OID}
	},
	[STMT_DELETE_IDS] = {
		"DELETE FROM queue_internal.q%1$lld WHERE id = ANY ($1) RETURNING id",
		1, {INT8ARRAYOID}
	},
	[STMT_DEAD_LETTER] = {
		"WITH dead AS (DELETE FROM queue_internal.q%1$lld WHERE id = ANY ($1)"
		" RETURNING id, attempts, enqueued_at, group_key, last_error, headers, payload)"
		" INSERT INTO queue_internal.q%2$lld"
		" (id, visible_at, attempts, enqueued_at, group_key, last_error, origin, headers, payload)"
		" SELECT id, $2, attempts, enqueued_at, group_key, last_error, %1$lld, headers, payload"
		" FROM dead",
		2, {INT8ARRAYOID, TIMESTAMPTZOID}
	},
	[STMT_FAIL] = {
		"UPDATE queue_internal.q%1$lld m SET attempts = u.attempts, last_error = u.error,"
		" visible_at = u.visible_at, receipt = NULL"
		" FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::timestamptz[])"
		" AS u(id, attempts, error, visible_at) WHERE m.id = u.id",
		4, {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID}
	},
	[STMT_ACK] = {
		"DELETE FROM queue_internal.q%1$lld WHERE id = $1 AND receipt = $2 RETURNING visible_at",
		2, {INT8OID, INT8OID}
	},
	[STMT_ACK_BATCH] = {
		"DELETE FROM queue_internal.q%1$lld m USING unnest($1::bigint[], $2::bigint[]) AS u(id, receipt)"
		" WHERE m.id = u.id AND m.receipt = u.receipt RETURNING m.id, m.visible_at",
		2, {INT8ARRAYOID, INT8ARRAYOID}
	},
	[STMT_NACK] = {
		"UPDATE queue_internal.q%1$lld m SET visible_at = $3, receipt = NULL,"
		" last_error = coalesce($4, m.last_error) FROM " LEASED_ROW
		" WHERE m.id = old.id RETURNING old.visible_at",
		4, {INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID}
	},
	[STMT_SET_VISIBILITY] = {
		"UPDATE queue_internal.q%1$lld m SET visible_at = $3 FROM " LEASED_ROW
		" WHERE m.id = old.id RETURNING old.visible_at",
		3, {INT8OID, INT8OID, TIMESTAMPTZOID}
	},
	[STMT_ARCHIVE] = {
		"WITH done AS (DELETE FROM queue_internal.q%1$lld WHERE id = $1 AND receipt = $2"
		" RETURNING id, payload, headers, group_key, enqueued_at, attempts, last_error, visible_at),"
		" kept AS (INSERT INTO queue_internal.a%1$lld"
		" (id, payload, headers, group_key, enqueued_at, archived_at, attempts, last_error)"
		" SELECT id, payload, headers, group_key, enqueued_at, $3, attempts, last_error FROM done)"
		" SELECT visible_at FROM done",
		3, {INT8OID, INT8OID, TIMESTAMPTZOID}
	},
	[STMT_PRUNE_ARCHIVE] = {
		"DELETE FROM queue_internal.a%1$lld WHERE archived_at < $1",
		1, {TIMESTAMPTZOID}
	},
	[STMT_FIRST_VISIBLE] = {
		"SELECT enqueued_at FROM queue_internal.q%1$lld WHERE visible_at <= $1 ORDER BY id LIMIT 1",
		1, {TIMESTAMPTZOID}
	},
	[STMT_COUNT_HIDDEN] = {
		"SELECT floor(extract(epoch FROM visible_at))::bigint,"
		" count(*) FILTER (WHERE receipt IS NOT NULL)::integer,"
		" count(*) FILTER (WHERE receipt IS NULL)::integer"
		" FROM queue_internal.q%1$lld WHERE visible_at > $1 GROUP BY 1",
		1, {TIMESTAMPTZOID}
	},
	[STMT_LIST_ARCHIVE] = {
		"SELECT id, payload, headers, group_key, enqueued_at, archived_at, attempts, last_error"
		" FROM queue_internal.a%1$lld ORDER BY archived_at, id",
		0, {0}
	},
	[STMT_REDRIVE] = {
		"WITH moved AS (DELETE FROM queue_internal.q%1$lld WHERE id = ANY (ARRAY("
		"  SELECT id FROM queue_internal.q%1$lld WHERE ($1 OR origin = %2$lld) AND visible_at <= $3"
		"  ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))"
		" RETURNING id, enqueued_at, group_key, last_error, headers, payload)"
		" INSERT INTO queue_internal.q%2$lld"
		" (id, visible_at, attempts, enqueued_at, group_key, last_error, headers, payload)"
		" SELECT id, $3, 0, enqueued_at, group_key, last_error, headers, payload FROM moved",
		3, {BOOLOID, INT8OID, TIMESTAMPTZOID}
	},
};

/* The prepared statement stmt for a queue (and another queue it moves to). */
SPIPlanPtr
storage_plan(StorageStatement stmt, int64 queue_id, int64 other_id)
{
	PlanKey		key;
	PlanEntry  *entry;
	bool		found;
	SPIPlanPtr	plan;
	const StatementDef *def = &statements[stmt];

	if (plan_cache == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(PlanKey);
		info.entrysize = sizeof(PlanEntry);
		plan_cache = hash_create("queue statement cache", 128, &info,
								 HASH_ELEM | HASH_BLOBS);
	}
	memset(&key, 0, sizeof(key));
	key.queue_id = queue_id;
	key.other_id = other_id;
	key.stmt = stmt;
	entry = hash_search(plan_cache, &key, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->plan;

	/*
	 * Always the generic plan: the planner prices "LIMIT $n" at a tenth of
	 * the table and unnest() at ten rows, so the plan cache would otherwise
	 * judge every custom plan cheaper and plan the statement on every call.
	 * The generic plans have the shapes we want (primary key scans), which
	 * enable_seqscan = off in the owner context keeps so even for a table
	 * that was empty when it was planned.
	 */
	plan = SPI_prepare_cursor(psprintf(def->sql, (long long) queue_id, (long long) other_id),
							  def->nargs, (Oid *) def->argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "could not prepare queue statement %d: %s",
			 (int) stmt, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep queue statement %d", (int) stmt);
	entry = hash_search(plan_cache, &key, HASH_ENTER, &found);
	entry->plan = plan;
	return plan;
}

/* Message ids as the bigint[] parameter of a statement. */
Datum
storage_id_array(const int64 *ids, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	return PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

static void
run_ddl(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "queue storage statement failed: %s", SPI_result_code_string(rc));
}

/*
 * Creates a queue's message and archive tables.  fillfactor leaves room on
 * each page so that a lease write (visible_at, attempts, receipt, none of
 * them indexed) can stay heap-only.  The room is a compromise: a lease
 * written for a batch of 100 messages finds it for only about a third of
 * them at 85, but 50, which fits them all, made batch sends about 30%
 * slower (twice the pages to extend), and a consumer that acks in the
 * transaction that read writes no lease at all (lease.c).
 */
void
storage_create_tables(int64 queue_id, bool logged)
{
	const char *kind = logged ? "" : "UNLOGGED ";
	long long	id = (long long) queue_id;

	run_ddl(psprintf("CREATE %sTABLE queue_internal.q%lld ("
					 " id bigint PRIMARY KEY DEFAULT nextval('queue_internal.message_id_seq'),"
					 " visible_at timestamptz NOT NULL,"
					 " attempts integer NOT NULL DEFAULT 0,"
					 " receipt bigint,"
					 " enqueued_at timestamptz NOT NULL,"
					 " origin bigint,"
					 " group_key text,"
					 " last_error text,"
					 " headers jsonb,"
					 " payload jsonb NOT NULL"
					 ") WITH (fillfactor = 85)", kind, id));
	run_ddl(psprintf("CREATE %sTABLE queue_internal.a%lld ("
					 " id bigint PRIMARY KEY,"
					 " archived_at timestamptz NOT NULL,"
					 " enqueued_at timestamptz NOT NULL,"
					 " attempts integer NOT NULL,"
					 " group_key text,"
					 " last_error text,"
					 " headers jsonb,"
					 " payload jsonb NOT NULL)", kind, id));
	run_ddl(psprintf("CREATE INDEX ON queue_internal.a%lld (archived_at)", id));
}

/* Turns a queue's tables into logged or unlogged ones (a rewrite of each). */
void
storage_set_logged(int64 queue_id, bool logged)
{
	const char *kind = logged ? "LOGGED" : "UNLOGGED";
	long long	id = (long long) queue_id;

	run_ddl(psprintf("ALTER TABLE queue_internal.q%lld SET %s", id, kind));
	run_ddl(psprintf("ALTER TABLE queue_internal.a%lld SET %s", id, kind));
}

void
storage_drop_tables(int64 queue_id)
{
	run_ddl(psprintf("DROP TABLE queue_internal.q%lld, queue_internal.a%lld",
					 (long long) queue_id, (long long) queue_id));
}

/*
 * Counts a queue's messages; the caller holds a lock that keeps writers out.
 * Not read-only, so that the count takes a snapshot after that lock was
 * granted rather than the calling statement's older one.
 */
int64
storage_count(int64 queue_id)
{
	bool		isnull;
	int			rc = SPI_execute(psprintf("SELECT count(*) FROM queue_internal.q%lld",
										  (long long) queue_id), false, 1);

	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the messages of queue %lld", (long long) queue_id);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Empties a queue's message table and returns how many messages it held. */
int64
storage_truncate(int64 queue_id)
{
	int64		n;

	run_ddl(psprintf("LOCK TABLE queue_internal.q%lld IN ACCESS EXCLUSIVE MODE",
					 (long long) queue_id));
	n = storage_count(queue_id);
	run_ddl(psprintf("TRUNCATE queue_internal.q%lld", (long long) queue_id));
	return n;
}

/* The OID of a queue's message table. */
Oid
storage_relid(int64 queue_id)
{
	char		name[NAMEDATALEN];

	snprintf(name, sizeof(name), "q%lld", (long long) queue_id);
	return get_relname_relid(name, get_namespace_oid(QUEUE_INTERNAL_SCHEMA, false));
}
