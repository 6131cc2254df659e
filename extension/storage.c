/*
 * storage.c
 *    A queue's tables and every statement that touches them.
 *
 * Queue 17 keeps its messages in the segment tables queue_internal.s17_0
 * .. s17_3, children of the empty parent queue_internal.q17 (segment.c owns
 * the ring: which segment takes new rows, where reads start, recycling),
 * and its archive in queue_internal.a17; names come from the numeric id
 * alone, never from the user's name.  Callers speak of queues and ids
 * only: storage_send, storage_claim, storage_by_id and storage_move pick
 * the segments.  Sends, the calls every producer makes, write their rows
 * and index entries directly (storage_send), as logical replication's
 * apply does, without a statement.  Each statement is prepared once per
 * backend, per queue and segment (and per dead-letter or target queue
 * where one is involved), and kept with SPI_keepplan, so the hot paths
 * never parse SQL.  The plan cache lives in TopMemoryContext;
 * PostgreSQL's plan cache revalidates the plans when the tables change (a
 * recycle's TRUNCATE, for one).  Callers of the statements run inside
 * owner_context_enter(), so they run as the extension's owner with
 * search_path pinned; storage_send, which runs none, needs no such context.
 *
 * Reading: a claim locks the oldest visible messages with FOR UPDATE SKIP
 * LOCKED and returns them, segment by segment from the oldest, each from
 * where its live messages start; their lease is written at commit
 * (lease.c).  Statements on given ids try the segment the id most likely
 * lives in first.  Statements that pick rows to change select them once, in
 * an ARRAY() sub-select (an IN (sub-select) may be re-run by the planner and
 * touch more rows than asked for).
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "compat.h"
#include "queue.h"

typedef struct PlanKey
{
	int64		queue_id;
	int64		other_id;		/* dead-letter or target queue, else 0 */
	int32		stmt;
	int32		seg;			/* segment of the queue, -1: none */
	int32		other_seg;		/* segment of the other queue, -1: none */
} PlanKey;

typedef struct PlanEntry
{
	PlanKey		key;
	SPIPlanPtr	plan;
} PlanEntry;

static HTAB *plan_cache = NULL;

/*
 * Statement texts name their tables with placeholders: {T} the queue's
 * segment, {P} its parent (all segments), {A} its archive, {Q} its id, {O}
 * the other queue's segment and {OQ} the other queue's id.
 */

/* The row a lease-checked update changes, locked, with its old visible_at. */
#define LEASED_ROW "(SELECT id, visible_at FROM {T}" \
	" WHERE id = $1 AND receipt = $2 FOR UPDATE) AS old"

/* The columns of queue.message, in order, as returned by reads. */
#define MESSAGE_COLUMNS "id, payload, headers, group_key, enqueued_at, visible_at, attempts," \
	" last_error, receipt, priority::integer"

/*
 * A FIFO queue's claim takes message m only as the head of its group, with
 * the group's lock (fifo_head.c).  The lock closes the window between a
 * reader locking a head and its lease (or its drain batch) committing.
 * These statements run between fifo_probe_begin and fifo_probe_end
 * (claim_segment).
 */
#define FIFO_HEAD " AND queue_internal.fifo_head({Q}, m.group_key, m.id, m.visible_at, $1)"

/*
 * The claims: oldest first from one segment, or by priority from all.  The
 * order names the table's columns: an unqualified "priority" would be the
 * output column priority::integer, which no index serves, and the claim
 * would filter (and lock the FIFO groups of) every visible row, then sort.
 */
#define CLAIM_SQL(from, where) "SELECT " MESSAGE_COLUMNS " FROM " from " m" \
	" WHERE " where " AND visible_at <= $1 AND id <> ALL ($2)"
#define CLAIM_TAIL(order) " ORDER BY " order " LIMIT $3 FOR UPDATE SKIP LOCKED"
#define CLAIM_ARGS 4, {TIMESTAMPTZOID, INT8ARRAYOID, INT4OID, INT8OID}
#define CLAIM_IDS_ARGS 4, {TIMESTAMPTZOID, INT8ARRAYOID, INT4OID, INT8ARRAYOID}
#define CLAIM_KEYS_ARGS 5, {TIMESTAMPTZOID, INT8ARRAYOID, INT4OID, TEXTARRAYOID, INT4OID}

typedef struct StatementDef
{
	const char *sql;			/* with the placeholders above */
	int			nargs;
	Oid			argtypes[7];
} StatementDef;

static const StatementDef statements[STMT__COUNT] = {
	[STMT_CLAIM] = {
		CLAIM_SQL("{T}", "id >= $4") CLAIM_TAIL("m.id"),
		CLAIM_ARGS
	},
	[STMT_CLAIM_IDS] = {
		CLAIM_SQL("{T}", "id = ANY ($4)") CLAIM_TAIL("m.id"),
		CLAIM_IDS_ARGS
	},
	[STMT_CLAIM_IDS_FIFO] = {
		CLAIM_SQL("{T}", "id = ANY ($4)") FIFO_HEAD CLAIM_TAIL("m.id"),
		CLAIM_IDS_ARGS
	},
	/* $4 is not used: the claims share their parameters */
	[STMT_CLAIM_PRIORITY] = {
		CLAIM_SQL("{P}", "priority > 0") CLAIM_TAIL("m.priority DESC, m.id"),
		CLAIM_ARGS
	},
	/*
	 * The first $3 heads, by priority, among the first $5 prioritized
	 * messages (see storage_claim), chosen before any group lock is taken:
	 * the sort by priority would otherwise run the lock on every candidate.
	 * The row comparisons can only be index conditions on the FIFO indexes,
	 * never on the primary key, whatever the table's statistics when planned.
	 */
	[STMT_CLAIM_PRIORITY_FIFO] = {
		CLAIM_SQL("{P}", "m.id = ANY (ARRAY("
				  "SELECT h.id FROM {P} h WHERE h.id = ANY (ARRAY("
				  "  SELECT id FROM {P} WHERE priority > 0 AND visible_at <= $1 AND id <> ALL ($2)"
				  "  ORDER BY priority DESC, id LIMIT $5))"
				  " AND (h.group_key IS NULL OR"
				  "  NOT EXISTS (SELECT 1 FROM {P} e WHERE e.group_key = h.group_key"
				  "   AND (e.group_key, e.id) < (h.group_key, h.id))"
				  "  AND NOT EXISTS (SELECT 1 FROM {P} e WHERE e.group_key = h.group_key"
				  "   AND (e.group_key, e.id) > (h.group_key, h.id)"
				  "   AND e.receipt IS NOT NULL AND e.visible_at > $1))"
				  " ORDER BY h.priority DESC, h.id LIMIT $3))")
		FIFO_HEAD CLAIM_TAIL("m.priority DESC, m.id"),
		5, {TIMESTAMPTZOID, INT8ARRAYOID, INT4OID, INT8OID, INT8OID}
	},
	/*
	 * A fair queue's turns: up to $3 group keys with a visible message, in
	 * key order after $2 (and up to $4 when given), found by skipping from
	 * key to key through the group index rather than reading every message.
	 */
	[STMT_FAIR_KEYS] = {
		"WITH RECURSIVE g(k) AS ("
		" (SELECT group_key FROM {P} WHERE group_key > $2 COLLATE \"C\" AND visible_at <= $1"
		"  ORDER BY group_key LIMIT 1)"
		" UNION ALL"
		" SELECT (SELECT group_key FROM {P} WHERE group_key > g.k AND visible_at <= $1"
		"  ORDER BY group_key LIMIT 1)"
		" FROM g WHERE g.k IS NOT NULL AND ($4::text IS NULL OR g.k < $4 COLLATE \"C\"))"
		" SELECT k FROM g WHERE k IS NOT NULL AND ($4::text IS NULL OR k <= $4 COLLATE \"C\")"
		" LIMIT $3",
		4, {TIMESTAMPTZOID, TEXTOID, INT4OID, TEXTOID}
	},
	/* up to $5 messages for each key of $4, in the keys' order */
	[STMT_CLAIM_FAIR] = {
		"SELECT c.* FROM unnest($4::text[]) WITH ORDINALITY AS k(key, n),"
		" LATERAL (" CLAIM_SQL("{P}", "m.group_key = k.key COLLATE \"C\"")
		" ORDER BY m.priority DESC, m.id"
		"  LIMIT $5 FOR UPDATE OF m SKIP LOCKED) c"
		" ORDER BY k.n, c.priority DESC, c.id LIMIT $3",
		CLAIM_KEYS_ARGS
	},
	/*
	 * The head of each key of $4 in a FIFO queue: its first message, if
	 * that is visible and the head (FIFO_HEAD).  Only the first is looked
	 * at, so a group in flight costs one probe.
	 */
	[STMT_CLAIM_FAIR_FIFO] = {
		"SELECT c.* FROM unnest($4::text[]) WITH ORDINALITY AS k(key, n),"
		" LATERAL (" CLAIM_SQL("{P}", "m.id = (SELECT e.id FROM {P} e"
							   " WHERE e.group_key = k.key COLLATE \"C\""
							   " ORDER BY e.group_key, e.id LIMIT 1)")
		FIFO_HEAD "  FOR UPDATE OF m SKIP LOCKED) c"
		" ORDER BY k.n LIMIT $3",
		CLAIM_KEYS_ARGS
	},
	[STMT_ANY_PRIORITIZED] = {
		"SELECT 1 FROM {P} WHERE priority > 0 LIMIT 1",
		0, {0}
	},
	/*
	 * The runs that follow a FIFO claim's heads ($3 the groups, $4 their
	 * heads): each group's next $5 messages, locked where no other
	 * transaction holds them, next to the same messages as the statement's
	 * snapshot lists them; a run is cut at the first that is missing from
	 * the locked ones, not visible in its latest version, or held here ($2).
	 */
	[STMT_CLAIM_RUN] = {
		"WITH locked AS (SELECT m.* FROM unnest($3::text[], $4::bigint[]) AS g(k, head)"
		"  CROSS JOIN LATERAL (SELECT " MESSAGE_COLUMNS " FROM {P}"
		"   WHERE group_key = g.k COLLATE \"C\" AND id > g.head ORDER BY id LIMIT $5"
		"   FOR UPDATE SKIP LOCKED) m),"
		" next AS (SELECT s.id, s.group_key FROM unnest($3::text[], $4::bigint[]) AS g(k, head)"
		"  CROSS JOIN LATERAL (SELECT id, group_key FROM {P}"
		"   WHERE group_key = g.k COLLATE \"C\" AND id > g.head ORDER BY id LIMIT $5) s)"
		" SELECT id, payload, headers, group_key, enqueued_at, visible_at, attempts, last_error,"
		" receipt, priority FROM (SELECT l.*, bool_and(l.id IS NOT NULL AND l.visible_at <= $1"
		"  AND l.id <> ALL ($2)) OVER (PARTITION BY n.group_key ORDER BY n.id) AS ok"
		"  FROM next n LEFT JOIN locked l ON l.id = n.id) x WHERE ok ORDER BY id",
		5, {TIMESTAMPTZOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT4OID}
	},
	/*
	 * A nack of message $1 (receipt $2) gives back the messages of its group
	 * that the same read took after it: visible again at $3 (behind it), the
	 * attempt their read counted taken back.
	 */
	[STMT_GIVE_BACK_RUN] = {
		"UPDATE {P} m SET visible_at = $3, receipt = NULL, attempts = greatest(m.attempts - 1, 0)"
		" FROM (SELECT id, visible_at FROM {P} WHERE receipt = $2 AND id > $1"
		"  AND group_key = (SELECT group_key FROM {P} WHERE id = $1) FOR UPDATE) AS old"
		" WHERE m.id = old.id RETURNING old.visible_at",
		3, {INT8OID, INT8OID, TIMESTAMPTZOID}
	},
	[STMT_CLAIM_UNGROUPED] = {
		CLAIM_SQL("{P}", "group_key IS NULL") CLAIM_TAIL("m.priority DESC, m.id"),
		CLAIM_ARGS
	},
	[STMT_WRITE_LEASE] = {
		"UPDATE {T} SET visible_at = $2, attempts = attempts + 1, receipt = $3"
		" WHERE id = ANY ($1)",
		3, {INT8ARRAYOID, TIMESTAMPTZOID, INT8OID}
	},
	[STMT_DELETE_IDS] = {
		"DELETE FROM {T} WHERE id = ANY ($1) RETURNING id",
		1, {INT8ARRAYOID}
	},
	[STMT_DEAD_LETTER] = {
		"WITH dead AS (DELETE FROM {P} WHERE id = ANY ($1)"
		" RETURNING id, attempts, enqueued_at, group_key, last_error, headers, payload, priority)"
		" INSERT INTO {O}"
		" (id, visible_at, attempts, enqueued_at, group_key, last_error, origin, headers, payload,"
		"  priority)"
		" SELECT id, $2, attempts, enqueued_at, group_key, last_error, {Q}, headers, payload,"
		" priority FROM dead RETURNING id, priority",
		2, {INT8ARRAYOID, TIMESTAMPTZOID}
	},
	[STMT_FAIL] = {
		"UPDATE {T} m SET attempts = u.attempts, last_error = u.error,"
		" visible_at = u.visible_at, receipt = NULL"
		" FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::timestamptz[])"
		" AS u(id, attempts, error, visible_at) WHERE m.id = u.id",
		4, {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID}
	},
	[STMT_ACK] = {
		"DELETE FROM {T} WHERE id = $1 AND receipt = $2 RETURNING visible_at",
		2, {INT8OID, INT8OID}
	},
	[STMT_ACK_BATCH] = {
		"DELETE FROM {T} m USING unnest($1::bigint[], $2::bigint[]) AS u(id, receipt)"
		" WHERE m.id = u.id AND m.receipt = u.receipt RETURNING m.id, m.visible_at",
		2, {INT8ARRAYOID, INT8ARRAYOID}
	},
	[STMT_NACK] = {
		"UPDATE {T} m SET visible_at = $3, receipt = NULL,"
		" last_error = coalesce($4, m.last_error) FROM " LEASED_ROW
		" WHERE m.id = old.id RETURNING old.visible_at",
		4, {INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID}
	},
	[STMT_SET_VISIBILITY] = {
		"UPDATE {T} m SET visible_at = $3 FROM " LEASED_ROW
		" WHERE m.id = old.id RETURNING old.visible_at",
		3, {INT8OID, INT8OID, TIMESTAMPTZOID}
	},
	[STMT_ARCHIVE] = {
		"WITH done AS (DELETE FROM {T} WHERE id = $1 AND receipt = $2"
		" RETURNING id, payload, headers, group_key, enqueued_at, attempts, last_error, visible_at),"
		" kept AS (INSERT INTO {A}"
		" (id, payload, headers, group_key, enqueued_at, archived_at, attempts, last_error)"
		" SELECT id, payload, headers, group_key, enqueued_at, $3, attempts, last_error FROM done)"
		" SELECT visible_at FROM done",
		3, {INT8OID, INT8OID, TIMESTAMPTZOID}
	},
	[STMT_PRUNE_ARCHIVE] = {
		"DELETE FROM {A} WHERE archived_at < $1",
		1, {TIMESTAMPTZOID}
	},
	[STMT_FIRST_VISIBLE] = {
		"SELECT enqueued_at FROM {T} WHERE id >= $2 AND visible_at <= $1 ORDER BY id LIMIT 1",
		2, {TIMESTAMPTZOID, INT8OID}
	},
	[STMT_COUNT_HIDDEN] = {
		"SELECT floor(extract(epoch FROM visible_at))::bigint,"
		" count(*) FILTER (WHERE receipt IS NOT NULL)::integer,"
		" count(*) FILTER (WHERE receipt IS NULL)::integer"
		" FROM {P} WHERE visible_at > $1 GROUP BY 1",
		1, {TIMESTAMPTZOID}
	},
	[STMT_LIST_ARCHIVE] = {
		"SELECT id, payload, headers, group_key, enqueued_at, archived_at, attempts, last_error"
		" FROM {A} ORDER BY archived_at, id",
		0, {0}
	},
	[STMT_REDRIVE] = {
		"WITH moved AS (DELETE FROM {P} WHERE id = ANY (ARRAY("
		"  SELECT id FROM {P} WHERE ($1 OR origin = {OQ}) AND visible_at <= $3"
		"  ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))"
		" RETURNING id, enqueued_at, group_key, last_error, headers, payload, priority)"
		" INSERT INTO {O}"
		" (id, visible_at, attempts, enqueued_at, group_key, last_error, headers, payload,"
		"  priority)"
		" SELECT id, $3, 0, enqueued_at, group_key, last_error, headers, payload, priority"
		" FROM moved RETURNING id, priority",
		3, {BOOLOID, INT8OID, TIMESTAMPTZOID}
	},
};

/* A statement's text with its table placeholders filled in. */
static char *
statement_text(const char *tmpl, const PlanKey *key)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const char *p = tmpl; *p; p++)
	{
		if (strncmp(p, "{T}", 3) == 0)
			appendStringInfo(&buf, "queue_internal.s%lld_%d", (long long) key->queue_id, key->seg);
		else if (strncmp(p, "{P}", 3) == 0)
			appendStringInfo(&buf, "queue_internal.q%lld", (long long) key->queue_id);
		else if (strncmp(p, "{A}", 3) == 0)
			appendStringInfo(&buf, "queue_internal.a%lld", (long long) key->queue_id);
		else if (strncmp(p, "{Q}", 3) == 0)
			appendStringInfo(&buf, "%lld", (long long) key->queue_id);
		else if (strncmp(p, "{O}", 3) == 0)
			appendStringInfo(&buf, "queue_internal.s%lld_%d", (long long) key->other_id, key->other_seg);
		else if (strncmp(p, "{OQ}", 4) == 0)
		{
			appendStringInfo(&buf, "%lld", (long long) key->other_id);
			p += 3;
			continue;
		}
		else
		{
			appendStringInfoChar(&buf, *p);
			continue;
		}
		p += 2;
	}
	return buf.data;
}

/*
 * The prepared statement stmt for a queue's segment (and another queue's
 * segment it moves to).
 */
static SPIPlanPtr
segment_plan(StorageStatement stmt, int64 queue_id, int seg, int64 other_id, int other_seg)
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
	key.seg = seg;
	key.other_seg = other_seg;
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
	plan = SPI_prepare_cursor(statement_text(def->sql, &key),
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

/* The prepared statement stmt for a queue as a whole (its parent or archive). */
SPIPlanPtr
storage_plan(StorageStatement stmt, int64 queue_id, int64 other_id)
{
	return segment_plan(stmt, queue_id, -1, other_id, -1);
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
storage_create_tables(int64 queue_id, bool logged, bool fifo, bool fair)
{
	const char *kind = logged ? "" : "UNLOGGED ";
	long long	id = (long long) queue_id;

	/*
	 * Group keys compare byte by byte (COLLATE "C"): FIFO and fair claims
	 * walk the group indexes for every message they take, where a
	 * linguistic collation costs many times more a comparison; and a
	 * fair queue's turns go in the same order in every database.
	 */
	run_ddl(psprintf("CREATE %sTABLE queue_internal.q%lld ("
					 " id bigint PRIMARY KEY DEFAULT nextval('queue_internal.message_id_seq'),"
					 " visible_at timestamptz NOT NULL,"
					 " attempts integer NOT NULL DEFAULT 0,"
					 " receipt bigint,"
					 " enqueued_at timestamptz NOT NULL,"
					 " origin bigint,"
					 " priority smallint NOT NULL DEFAULT 0,"
					 " group_key text COLLATE \"C\","
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
	/*
	 * The segments: children of q<id>, each with its own primary key, an
	 * index of its prioritized messages (empty, and free to keep, when none
	 * is), in a FIFO queue the indexes that find a group's earlier and
	 * leased messages, and in a fair queue those that find the group keys
	 * and a key's next message; both find the next message without a key
	 * (claim_fair).
	 */
	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
	{
		run_ddl(psprintf("CREATE %sTABLE queue_internal.s%lld_%d (PRIMARY KEY (id))"
						 " INHERITS (queue_internal.q%lld) WITH (fillfactor = 85)",
						 kind, id, seg, id));
		run_ddl(psprintf("CREATE INDEX ON queue_internal.s%lld_%d (priority DESC, id)"
						 " WHERE priority > 0", id, seg));
		/* named: fifo_head.c opens them by name */
		if (fifo)
		{
			run_ddl(psprintf("CREATE INDEX s%lld_%d_group ON queue_internal.s%lld_%d"
							 " (group_key, id) WHERE group_key IS NOT NULL", id, seg, id, seg));
			run_ddl(psprintf("CREATE INDEX s%lld_%d_leased ON queue_internal.s%lld_%d"
							 " (group_key, id) WHERE receipt IS NOT NULL", id, seg, id, seg));
		}
		if (!fifo && !fair)
			continue;
		/* FIFO's group index serves a fair FIFO queue: order within a group is by id */
		if (!fifo)
			run_ddl(psprintf("CREATE INDEX ON queue_internal.s%lld_%d"
							 " (group_key, priority DESC, id) WHERE group_key IS NOT NULL",
							 id, seg));
		run_ddl(psprintf("CREATE INDEX ON queue_internal.s%lld_%d (priority DESC, id)"
						 " WHERE group_key IS NULL", id, seg));
	}
	run_ddl(psprintf("INSERT INTO queue_internal.segment_ring (queue_id, head, tail)"
					 " VALUES (%lld, 0, 0)", id));
}

/* Turns a queue's tables into logged or unlogged ones (a rewrite of each). */
void
storage_set_logged(int64 queue_id, bool logged)
{
	const char *kind = logged ? "LOGGED" : "UNLOGGED";
	long long	id = (long long) queue_id;

	run_ddl(psprintf("ALTER TABLE queue_internal.q%lld SET %s", id, kind));
	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
		run_ddl(psprintf("ALTER TABLE queue_internal.s%lld_%d SET %s", id, seg, kind));
	run_ddl(psprintf("ALTER TABLE queue_internal.a%lld SET %s", id, kind));
}

void
storage_drop_tables(int64 queue_id)
{
	long long	id = (long long) queue_id;

	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
		run_ddl(psprintf("DROP TABLE queue_internal.s%lld_%d", id, seg));
	run_ddl(psprintf("DROP TABLE queue_internal.q%lld, queue_internal.a%lld", id, id));
	run_ddl(psprintf("DELETE FROM queue_internal.segment_ring WHERE queue_id = %lld", id));
	segment_dropped(queue_id);
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

/* Empties a queue's segments (TRUNCATE recurses) and returns how many messages they held. */
int64
storage_truncate(int64 queue_id)
{
	int64		n;

	run_ddl(psprintf("LOCK TABLE queue_internal.q%lld IN ACCESS EXCLUSIVE MODE",
					 (long long) queue_id));
	n = storage_count(queue_id);
	run_ddl(psprintf("TRUNCATE queue_internal.q%lld", (long long) queue_id));
	segment_forget(queue_id);
	return n;
}

/* The OID of a queue's message table (the parent of its segments). */
Oid
storage_relid(int64 queue_id)
{
	char		name[NAMEDATALEN];

	snprintf(name, sizeof(name), "q%lld", (long long) queue_id);
	return get_relname_relid(name, get_namespace_oid(QUEUE_INTERNAL_SCHEMA, false));
}

/* ---- statements over segments -------------------------------------------- */

static void
run_plan(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "queue statement failed: %s", SPI_result_code_string(rc));
}

/* The highest priority in column 2 of the last statement's rows. */
static int32
highest_priority(void)
{
	int32		max = 0;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull && DatumGetInt16(d) > max)
			max = DatumGetInt16(d);
	}
	return max;
}

/* The lowest id in column 1 of the last statement's rows. */
static int64
lowest_id(void)
{
	int64		min = PG_INT64_MAX;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull && DatumGetInt64(d) < min)
			min = DatumGetInt64(d);
	}
	return min;
}

/* Appends the last statement's rows to r (which has room for max). */
static void
rows_append(StorageRows *r, int max)
{
	r->processed += SPI_processed;
	if (SPI_tuptable == NULL)
		return;
	if (r->ntables < (int) lengthof(r->tables))
		r->tables[r->ntables++] = SPI_tuptable;
	r->tupdesc = SPI_tuptable->tupdesc;
	for (uint64 i = 0; i < SPI_processed && r->ntuples < max; i++)
		r->tuples[r->ntuples++] = SPI_tuptable->vals[i];
}

/*
 * Appends a claim statement's rows to r (rows_append) and their ids to ids,
 * the rows the claim holds.
 */
static void
claimed_append(StorageRows *r, int limit, int64 *ids, int *nids)
{
	int			first = r->ntuples;

	rows_append(r, limit);
	for (int i = first; i < r->ntuples; i++)
	{
		bool		isnull;

		ids[(*nids)++] = DatumGetInt64(heap_getattr(r->tuples[i], MSG_COL_ID, r->tupdesc, &isnull));
	}
}

/*
 * The sequence every queue's message ids come from, looked up again when
 * the extension's catalog is a new one (the extension dropped and created
 * again in this backend's life).
 */
static Oid
message_id_seq(void)
{
	static Oid	seq = InvalidOid;
	static Oid	seq_catalog = InvalidOid;
	Oid			catalog = catalog_relid();

	if (catalog != seq_catalog)
	{
		seq = get_relname_relid("message_id_seq",
								get_namespace_oid(QUEUE_INTERNAL_SCHEMA, false));
		seq_catalog = catalog;
	}
	return seq;
}

/*
 * Inserts messages into the queue's head segment: the heap rows in one
 * multi-insert (as COPY writes them: one WAL record and one buffer lock per
 * page rather than per row), then each row's index entries (partial ones
 * where their predicates hold; segment_indexes.c keeps the indexes'
 * descriptions), without planning or running a statement.
 * values and nulls describe what the messages share: visible_at,
 * enqueued_at, group_key, headers, (payload, unused here) and priority, in
 * that order; payloads holds one per message.  ids[i] is message i's id,
 * or 0 for the sequence's next, which is written back: ids rise in the
 * payloads' order.  Runs as the caller, in or out of the owner context:
 * nothing here checks privileges (the caller's queue_open did) or resolves
 * a name through search_path.
 */
void
storage_send(int64 queue_id, const Datum *values, const char *nulls,
			 const Datum *payloads, int npayloads, int64 *ids)
{
	int			seg = segment_for_insert(queue_id);
	Relation	rel = table_open(segment_relid(queue_id, seg), NoLock);	/* locked */
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * Max(npayloads, 1));
	Oid			seq = message_id_seq();
	int64		lowest = PG_INT64_MAX;

	if (RelationGetDescr(rel)->natts != SEG_NATTS)
		elog(ERROR, "segment table %s has %d columns, not %d",
			 RelationGetRelationName(rel), RelationGetDescr(rel)->natts, SEG_NATTS);
	for (int i = 0; i < npayloads; i++)
	{
		Datum	   *v;
		bool	   *n;

		if (ids[i] == 0)
			ids[i] = nextval_internal(seq, false);
		lowest = Min(lowest, ids[i]);
		slots[i] = table_slot_create(rel, NULL);
		v = slots[i]->tts_values;
		n = slots[i]->tts_isnull;
		memset(n, false, sizeof(bool) * SEG_NATTS);
		v[SEG_ATT_ID - 1] = Int64GetDatum(ids[i]);
		v[SEG_ATT_VISIBLE_AT - 1] = values[0];
		v[SEG_ATT_ATTEMPTS - 1] = Int32GetDatum(0);
		n[SEG_ATT_RECEIPT - 1] = true;
		v[SEG_ATT_ENQUEUED_AT - 1] = values[1];
		n[SEG_ATT_ORIGIN - 1] = true;
		v[SEG_ATT_PRIORITY - 1] = Int16GetDatum((int16) DatumGetInt32(values[5]));
		v[SEG_ATT_GROUP_KEY - 1] = values[2];
		n[SEG_ATT_GROUP_KEY - 1] = nulls[2] == 'n';
		n[SEG_ATT_LAST_ERROR - 1] = true;
		v[SEG_ATT_HEADERS - 1] = values[3];
		n[SEG_ATT_HEADERS - 1] = nulls[3] == 'n';
		v[SEG_ATT_PAYLOAD - 1] = payloads[i];
		ExecStoreVirtualTuple(slots[i]);
	}
	table_multi_insert(rel, slots, npayloads, GetCurrentCommandId(true), 0, NULL);

	InitResultRelInfo(rri, rel, 1, NULL, 0);
	segment_indexes_open(rri, slots, npayloads, estate);
	for (int i = 0; i < npayloads; i++)
	{
		queue_insert_index_tuples(rri, slots[i], estate);
		ResetPerTupleExprContext(estate);
		ExecDropSingleTupleTableSlot(slots[i]);
	}
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	/* what runs next in the transaction sees the rows, as after an SPI insert */
	CommandCounterIncrement();

	if (npayloads == 0)
		return;
	segment_note(queue_id, seg, lowest, DatumGetTimestampTz(values[0]));
	if (DatumGetInt32(values[5]) > 0)
		segment_note_priority(queue_id, seg);
	segment_touch(queue_id);
}

/*
 * Moves rows from a queue into another queue's head segment (STMT_DEAD_LETTER,
 * STMT_REDRIVE, RETURNING the ids and priorities moved).  Returns how many
 * moved.
 */
uint64
storage_move(StorageStatement stmt, int64 queue_id, int64 target_id, Datum *values,
			 const char *nulls)
{
	int			seg = segment_for_insert(target_id);
	uint64		moved;

	run_plan(segment_plan(stmt, queue_id, -1, target_id, seg), values, nulls);
	moved = SPI_processed;
	if (moved > 0)
		segment_note(target_id, seg, lowest_id(), DT_NOBEGIN);
	if (moved > 0 && highest_priority() > 0)
		segment_note_priority(target_id, seg);
	segment_touch(target_id);
	return moved;
}

/* Whether a claim statement filters with FIFO_HEAD, which needs a probe. */
static bool
claims_heads(StorageStatement stmt)
{
	return stmt == STMT_CLAIM_IDS_FIFO ||
		stmt == STMT_CLAIM_PRIORITY_FIFO || stmt == STMT_CLAIM_FAIR_FIFO;
}

/*
 * Runs one claim statement on a segment (or all, seg -1) and adds what it
 * locked to r and ids; fifth is for the statements that take five
 * parameters.
 */
static void
claim_segment(StorageStatement stmt, int64 queue_id, int seg, TimestampTz now, int64 *ids,
			  int *nids, Datum fourth, Datum fifth, StorageRows *r, int limit)
{
	SPIPlanPtr	plan = segment_plan(stmt, queue_id, seg, 0, -1);
	Datum		args[5];

	args[0] = TimestampTzGetDatum(now);
	args[1] = storage_id_array(ids, *nids);
	args[2] = Int32GetDatum(limit - r->ntuples);
	args[3] = fourth;
	args[4] = fifth;
	if (claims_heads(stmt))
	{
		fifo_probe_begin(queue_id, ids, *nids);
		PG_TRY();
		{
			run_plan(plan, args, NULL);
		}
		PG_CATCH();
		{
			fifo_probe_abandon();
			PG_RE_THROW();
		}
		PG_END_TRY();
		fifo_probe_end();
	}
	else
		run_plan(plan, args, NULL);
	claimed_append(r, limit, ids, nids);
}

/* Frees the rows once the caller has copied what it needs. */
void
storage_rows_free(StorageRows *rows)
{
	for (int i = 0; i < rows->ntables; i++)
		SPI_freetuptable(rows->tables[i]);
	rows->ntables = 0;
	rows->ntuples = 0;
}

/* The due stragglers a claim asked for and did not get. */
static int
missed_ids(const int64 *due, int ndue, const int64 *got, int ngot, int64 *missed)
{
	int			n = 0;

	for (int i = 0; i < ndue; i++)
	{
		bool		found = false;

		for (int j = 0; j < ngot && !found; j++)
			found = got[j] == due[i];
		if (!found)
			missed[n++] = due[i];
	}
	return n;
}

/*
 * Up to limit group keys of a fair queue with a visible message, in key
 * order from where the last claim stopped, wrapping around to the first key.
 */
static int
fair_keys(int64 queue_id, TimestampTz now, Datum *keys, int limit)
{
	char		cursor[FAIR_CURSOR_BYTES];
	int			nkeys = 0;

	segment_fair_cursor(queue_id, cursor);
	for (int pass = 0; pass < 2 && nkeys < limit; pass++)
	{
		Datum		args[4];
		char		nulls[4] = {' ', ' ', ' ', 'n'};

		if (pass == 1 && cursor[0] == '\0')
			break;
		args[0] = TimestampTzGetDatum(now);
		args[1] = CStringGetTextDatum(pass == 0 ? cursor : "");
		args[2] = Int32GetDatum(limit - nkeys);
		/* the second pass wraps around: from the first key up to the cursor */
		args[3] = CStringGetTextDatum(cursor);
		nulls[3] = pass == 0 ? 'n' : ' ';
		run_plan(storage_plan(STMT_FAIR_KEYS, queue_id, 0), args, nulls);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			keys[nkeys++] = PointerGetDatum(PG_DETOAST_DATUM_COPY(
				SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	return nkeys;
}

/*
 * A fair queue's claim: turns round-robin across group keys.  The first
 * round takes one message (the highest priority, then the oldest; in a FIFO
 * queue, the head) of every key with a visible message, then one without a
 * key; the next claim's first round starts after the last key this one
 * served.  Later rounds, while the batch has room and the last round took
 * something, share the room evenly between the keys that were served (and
 * again one turn without a key).  A FIFO queue has one round for its keys
 * (one message a group at a time), then fills the batch with messages
 * without a key.
 */
static void
claim_fair(int64 queue_id, bool fifo, TimestampTz now, int64 *ids, int *nids, StorageRows *r,
		   int limit)
{
	Datum	   *keys = palloc(sizeof(Datum) * limit);
	int			nkeys = fair_keys(queue_id, now, keys, limit - r->ntuples);
	Datum		key_array = PointerGetDatum(construct_array(keys, nkeys, TEXTOID, -1, false,
															  TYPALIGN_INT));
	int			served = nkeys;

	if (nkeys > 0)
		segment_set_fair_cursor(queue_id, text_to_cstring(DatumGetTextPP(keys[nkeys - 1])));
	for (int round = 0; r->ntuples < limit; round++)
	{
		int			before = r->ntuples;
		bool		keyed = served > 0 && (round == 0 || !fifo);
		int			per_key = round == 0 ? 1 : Max(1, (limit - r->ntuples) / served);

		if (keyed)
		{
			claim_segment(fifo ? STMT_CLAIM_FAIR_FIFO : STMT_CLAIM_FAIR, queue_id, -1, now,
						  ids, nids, key_array, Int32GetDatum(per_key), r, limit);
			if (round == 0)
				served = r->ntuples - before;
		}
		/* one turn for the messages without a key, or the rest of the batch */
		if (r->ntuples < limit)
			claim_segment(STMT_CLAIM_UNGROUPED, queue_id, -1, now, ids, nids, Int64GetDatum(0), 0,
						  r, keyed ? r->ntuples + 1 : limit);
		if (r->ntuples == before || (fifo && round > 0))
			break;
	}
}

/*
 * Whether the queue holds any message with a priority that this
 * transaction can see.
 */
static bool
any_prioritized(int64 queue_id)
{
	run_plan(storage_plan(STMT_ANY_PRIORITIZED, queue_id, 0), NULL, NULL);
	return SPI_processed > 0;
}

/* Groups a FIFO claim looks at one by one when other readers hold the rest */
#define FIFO_TAKEN_GROUPS	10

/* The descriptor of the rows the claims return (MESSAGE_COLUMNS). */
static TupleDesc
message_desc(void)
{
	static TupleDesc desc = NULL;

	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		TupleDesc	d = CreateTemplateTupleDesc(10);

		TupleDescInitEntry(d, 1, "id", INT8OID, -1, 0);
		TupleDescInitEntry(d, 2, "payload", JSONBOID, -1, 0);
		TupleDescInitEntry(d, 3, "headers", JSONBOID, -1, 0);
		TupleDescInitEntry(d, 4, "group_key", TEXTOID, -1, 0);
		TupleDescInitEntry(d, 5, "enqueued_at", TIMESTAMPTZOID, -1, 0);
		TupleDescInitEntry(d, 6, "visible_at", TIMESTAMPTZOID, -1, 0);
		TupleDescInitEntry(d, 7, "attempts", INT4OID, -1, 0);
		TupleDescInitEntry(d, 8, "last_error", TEXTOID, -1, 0);
		TupleDescInitEntry(d, 9, "receipt", INT8OID, -1, 0);
		TupleDescInitEntry(d, 10, "priority", INT4OID, -1, 0);
		MemoryContextSwitchTo(old);
		desc = d;
	}
	return desc;
}

/*
 * A row of a segment table as the claims return it (MESSAGE_COLUMNS), in
 * the current memory context.
 */
HeapTuple
storage_message_tuple(TupleTableSlot *row)
{
	static const AttrNumber columns[] = {
		SEG_ATT_ID, SEG_ATT_PAYLOAD, SEG_ATT_HEADERS, SEG_ATT_GROUP_KEY, SEG_ATT_ENQUEUED_AT,
		SEG_ATT_VISIBLE_AT, SEG_ATT_ATTEMPTS, SEG_ATT_LAST_ERROR, SEG_ATT_RECEIPT,
		SEG_ATT_PRIORITY
	};
	Datum		values[lengthof(columns)];
	bool		nulls[lengthof(columns)];

	slot_getallattrs(row);
	for (int i = 0; i < (int) lengthof(columns); i++)
	{
		values[i] = row->tts_values[columns[i] - 1];
		nulls[i] = row->tts_isnull[columns[i] - 1];
	}
	values[MSG_COL_PRIORITY - 1] = Int32GetDatum(DatumGetInt16(values[MSG_COL_PRIORITY - 1]));
	return heap_form_tuple(message_desc(), values, nulls);
}

/*
 * A FIFO claim of one segment, in id order from from (fifo_claim_scan):
 * adds the rows it locked to r and their ids to ids.
 */
static FifoScanEnd
claim_fifo(FifoScan *scan, int64 queue_id, int seg, TimestampTz now, int64 *ids, int *nids,
		   int64 from, StorageRows *r, int limit)
{
	int			first = r->ntuples;
	int			ntaken = 0;
	FifoScanEnd end = fifo_claim_scan(scan, queue_id, seg, from, now, ids, *nids,
									  limit - first, r->tuples + first, &ntaken);

	r->ntuples += ntaken;
	r->processed += ntaken;
	if (ntaken > 0)
		r->tupdesc = message_desc();
	for (int i = first; i < r->ntuples; i++)
	{
		bool		isnull;

		ids[(*nids)++] = DatumGetInt64(heap_getattr(r->tuples[i], MSG_COL_ID, r->tupdesc, &isnull));
	}
	return end;
}

/*
 * Locks visible messages until r holds limit, highest priority first and
 * oldest first within a priority, skipping those locked by others and the
 * ids (rows this transaction holds: SKIP LOCKED does not skip them); in a
 * FIFO queue, only the heads of groups (FIFO_HEAD).  Messages with a
 * priority come first, from all segments at once (only when some segment
 * may hold one).  Then segments are read from the oldest; in each, the
 * stragglers whose time has come first, then from where its live messages
 * start (in a FIFO queue, until a segment's scan found mostly groups in
 * flight, or ended among groups it had met: the next segment's rows of
 * those groups are not heads either; the later segments' own groups wait
 * behind the older messages then, or are found one by one when a claim
 * gets nothing).  A segment being recycled is skipped, not waited for
 * (the priority claim and the FIFO head test, which read every segment,
 * wait for a recycle's TRUNCATE instead: a probe locks them all).  The ids
 * of what it locks are added to ids.
 */
static void
claim_heads(const QueueMeta *meta, TimestampTz now, int64 *ids, int *nids, StorageRows *r,
			int limit)
{
	int64		queue_id = meta->id;
	bool		fifo = meta->fifo;
	SegmentRing ring = segment_ring(queue_id);
	bool		unknown;
	bool		searched = true;	/* every visible message was looked at */
	bool		taken = false;		/* some were left to other readers */
	bool		in_flight = false;	/* a segment's were mostly groups in flight */
	bool		met_all = false;	/* a segment's scan ended among groups it met */
	int			before = r->ntuples;
	FifoScan   *groups = NULL;	/* met by the FIFO scans of the segments */
	int			met = 0;		/* groups they met */

	if (segment_prioritized(queue_id, &unknown))
	{
		claim_segment(fifo ? STMT_CLAIM_PRIORITY_FIFO : STMT_CLAIM_PRIORITY, queue_id, -1, now,
					  ids, nids, Int64GetDatum(0), Int64GetDatum(FIFO_SCAN_ROWS * limit), r,
					  limit);
		/* after a start: one look tells whether the queue holds any at all */
		if (unknown && r->ntuples == before && !any_prioritized(queue_id))
			segment_priority_none(queue_id);
		searched = false;
	}
	for (int64 g = ring.tail; g <= ring.head && r->ntuples < limit; g++)
	{
		int			seg = (int) (g % QUEUE_SEGMENTS);
		int64		due[64];
		int			ndue = segment_due(queue_id, seg, now, due, lengthof(due));
		int64		from;
		bool		scan = segment_scan_from(queue_id, seg, &from);

		if (ndue == 0 && !scan)
			continue;
		if (!ConditionalLockRelationOid(segment_relid(queue_id, seg), RowShareLock))
		{
			searched = false;
			continue;
		}
		if (ndue > 0)
		{
			int			first = *nids;
			int64		missed[64];
			int			nmissed;

			claim_segment(fifo ? STMT_CLAIM_IDS_FIFO : STMT_CLAIM_IDS, queue_id, seg, now, ids, nids,
						  storage_id_array(due, ndue), 0, r, limit);
			nmissed = missed_ids(due, ndue, ids + first, *nids - first, missed);
			segment_recheck(queue_id, seg, missed, nmissed);
		}
		if (scan && r->ntuples < limit && !in_flight && !met_all)
		{
			if (fifo)
			{
				FifoScanEnd end;

				if (groups == NULL)
					groups = fifo_scan_create();
				end = claim_fifo(groups, queue_id, seg, now, ids, nids, from, r, limit);

				in_flight = end == FIFO_SCAN_IN_FLIGHT;
				searched &= !in_flight;
				taken |= end == FIFO_SCAN_TAKEN || end == FIFO_SCAN_MET;
				met_all = end == FIFO_SCAN_MET;
			}
			else
				claim_segment(STMT_CLAIM, queue_id, seg, now, ids, nids, Int64GetDatum(from), 0,
							  r, limit);
			segment_after_read(queue_id, seg);
		}
	}
	if (groups != NULL)
	{
		met = fifo_scan_groups(groups);
		fifo_scan_free(groups);
	}

	/*
	 * A FIFO claim reads messages in order but takes only heads of groups,
	 * so when few groups have a deliverable head, an unbounded scan would
	 * walk the whole backlog of the groups in flight, probing every message.
	 * It reads a few windows (fifo_claim_scan; the priority claim looks at
	 * FIFO_SCAN_ROWS prioritized messages per message asked for) instead,
	 * and what it could not fill there it takes group by group, skipping
	 * through the group index (claim_fair), at a cost that grows with the
	 * groups, not the messages: as many groups as the batch has room for
	 * when the windows stopped at groups in flight, or when other readers
	 * were taking what the windows met and the claim got nothing (a short
	 * read is fine, an empty one would wait).  But when the windows met
	 * more groups than the batch wanted, every one of them another
	 * reader's, nearly every group is held, and each group looked at is
	 * most likely one more: then it looks at FIFO_TAKEN_GROUPS only.  The
	 * groups looked at move on with every look (the fair cursor), so each
	 * is reached in turn.
	 */
	if (fifo && r->ntuples < limit && !searched)
		claim_fair(queue_id, true, now, ids, nids, r, limit);
	else if (fifo && taken && r->ntuples == before)
		claim_fair(queue_id, true, now, ids, nids, r,
				   met >= limit - before ? Min(limit, before + FIFO_TAKEN_GROUPS) : limit);
}

/*
 * Adds to r the messages that follow, in their groups, the heads r holds
 * from first on: up to per_group - 1 a group, in id order, each only if
 * every message of the group between it and the head is taken too.  A run
 * ends at a message that is not visible (delayed, or given back with a
 * delay), that this transaction holds, or that another transaction has
 * locked; what follows such a message may be locked here, but is not
 * returned (the group's lock keeps other readers off it anyway).  The
 * groups' locks, taken with their heads, cover the runs.
 */
static void
claim_runs(int64 queue_id, TimestampTz now, int64 *ids, int *nids, StorageRows *r, int first,
		   int per_group, int limit)
{
	int			n = r->ntuples - first;
	Datum	   *keys = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *heads = palloc(sizeof(Datum) * Max(n, 1));
	int			ngroups = 0;
	Datum		args[5];

	for (int i = first; i < r->ntuples; i++)
	{
		bool		isnull;
		Datum		key = heap_getattr(r->tuples[i], MSG_COL_GROUP_KEY, r->tupdesc, &isnull);

		if (isnull)
			continue;
		keys[ngroups] = key;
		heads[ngroups++] = heap_getattr(r->tuples[i], MSG_COL_ID, r->tupdesc, &isnull);
	}
	if (ngroups == 0)
		return;
	args[0] = TimestampTzGetDatum(now);
	args[1] = storage_id_array(ids, *nids);
	args[2] = PointerGetDatum(construct_array(keys, ngroups, TEXTOID, -1, false, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(heads, ngroups, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[4] = Int32GetDatum(per_group - 1);
	run_plan(storage_plan(STMT_CLAIM_RUN, queue_id, 0), args, NULL);
	claimed_append(r, limit, ids, nids);
}

/*
 * Locks up to limit visible messages (claim_heads), skipping the exclude
 * ids.  With per_group above 1, a claim of a FIFO queue that is not fair
 * takes up to per_group consecutive messages of a group: the heads of
 * enough groups to fill the batch that way, then their runs (claim_runs);
 * when runs came up short, the heads of as many more groups as there is
 * room for, and their runs.  Fewer groups then hold the batch, which
 * leaves the others to other readers.
 */
StorageRows
storage_claim(const QueueMeta *meta, TimestampTz now, const int64 *exclude, int nexclude,
			  int limit, int per_group)
{
	StorageRows r = {0};
	int64	   *ids = palloc(sizeof(int64) * (nexclude + limit + 1));
	int			nids = nexclude;

	r.tuples = palloc(sizeof(HeapTuple) * limit);
	memcpy(ids, exclude, sizeof(int64) * nexclude);
	segment_touch(meta->id);
	if (meta->fair)
		claim_fair(meta->id, meta->fifo, now, ids, &nids, &r, limit);
	else if (!meta->fifo || per_group == 1)
		claim_heads(meta, now, ids, &nids, &r, limit);
	else
	{
		int			groups = (limit + per_group - 1) / per_group;
		int			heads;

		claim_heads(meta, now, ids, &nids, &r, groups);
		heads = r.ntuples;
		if (heads > 0)
			claim_runs(meta->id, now, ids, &nids, &r, 0, per_group, limit);
		/* groups shorter than per_group left room: the heads of more, and their runs */
		if (heads == groups && r.ntuples < limit)
		{
			int			first = r.ntuples;

			claim_heads(meta, now, ids, &nids, &r, limit);
			if (r.ntuples > first)
				claim_runs(meta->id, now, ids, &nids, &r, first, per_group, limit);
		}
	}
	return r;
}

/*
 * Runs a statement on given ids (the first parameter holds one id or an
 * array of them) in the segments that may hold them, oldest first, until it
 * has processed expect rows: first from near the segment probe_id was sent
 * to, then, if rows are still missing, in every live segment (deletes and
 * lease-checked updates may run twice on a segment: a second run finds
 * nothing more).  A lease write runs once on every live segment: its rows
 * are locked by this transaction, so no recycle can move them, and a
 * second run would count an attempt twice.
 */
StorageRows
storage_by_id(StorageStatement stmt, int64 queue_id, int64 probe_id, Datum *values,
			  const char *nulls, uint64 expect)
{
	StorageRows r = {0};
	int			max = (int) Min(expect, (uint64) PG_INT32_MAX / sizeof(HeapTuple));

	r.tuples = palloc(sizeof(HeapTuple) * Max(max, 1));
	for (int pass = (stmt == STMT_WRITE_LEASE ? 1 : 0); pass < 2 && r.processed < expect; pass++)
	{
		int			segs[QUEUE_SEGMENTS];
		int			nsegs = segment_probe_order(queue_id, probe_id, pass == 1, segs);

		for (int i = 0; i < nsegs && r.processed < expect; i++)
		{
			run_plan(segment_plan(stmt, queue_id, segs[i], 0, -1), values, nulls);
			/* a row made visible sooner: reads must not skip it */
			if (SPI_processed > 0 && (stmt == STMT_NACK || stmt == STMT_SET_VISIBILITY))
				segment_note(queue_id, segs[i], DatumGetInt64(values[0]),
							 DatumGetTimestampTz(values[2]));
			/* FIFO claims look for leased messages where one was written */
			if (SPI_processed > 0 && stmt == STMT_WRITE_LEASE)
				segment_note_lease(queue_id, segs[i]);
			rows_append(&r, max);
		}
	}
	segment_touch(queue_id);
	return r;
}

/* The enqueued_at of the oldest visible message; false when there is none. */
bool
storage_first_visible(int64 queue_id, TimestampTz now, TimestampTz *enqueued_at)
{
	SegmentRing ring = segment_ring(queue_id);

	for (int64 g = ring.tail; g <= ring.head; g++)
	{
		int			seg = (int) (g % QUEUE_SEGMENTS);
		Datum		args[2];
		int64		from;
		bool		isnull;

		if (!segment_scan_from(queue_id, seg, &from))
			continue;
		args[0] = TimestampTzGetDatum(now);
		args[1] = Int64GetDatum(from);
		if (SPI_execute_plan(segment_plan(STMT_FIRST_VISIBLE, queue_id, seg, 0, -1),
							 args, NULL, true, 1) == SPI_OK_SELECT && SPI_processed > 0)
		{
			*enqueued_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															 SPI_tuptable->tupdesc, 1, &isnull));
			return true;
		}
	}
	return false;
}

/* Bytes on disk of a queue's messages: every segment with its indexes and TOAST. */
int64
storage_bytes(int64 queue_id)
{
	int64		bytes = 0;
	Oid			parent = storage_relid(queue_id);

	if (OidIsValid(parent))
		bytes += DatumGetInt64(DirectFunctionCall1(pg_total_relation_size, ObjectIdGetDatum(parent)));
	for (int seg = 0; seg < QUEUE_SEGMENTS; seg++)
	{
		Oid			relid = segment_relid(queue_id, seg);

		if (OidIsValid(relid))
			bytes += DatumGetInt64(DirectFunctionCall1(pg_total_relation_size, ObjectIdGetDatum(relid)));
	}
	return bytes;
}
