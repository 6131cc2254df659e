/*
 * queue.h
 *    Declarations shared by the files of the queue extension.
 *
 * Each section names the file that owns it.
 */
#ifndef QUEUE_H
#define QUEUE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "postmaster/bgworker.h"
#include "storage/lockdefs.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/tuplestore.h"

#define QUEUE_INTERNAL_SCHEMA	"queue_internal"
#define QUEUE_NAME_MAXLEN		48

/* queue.c: settings */
extern int	queue_max_payload_size;
extern int	queue_max_queues;
extern int	queue_segment_size;	/* kB */
extern int	queue_segment_age;	/* ms */
extern int	queue_max_workers;
extern int	queue_max_consumers;
extern int	queue_worker_idle_timeout;
extern int	queue_maintenance_interval;
extern bool queue_allow_superuser_consumers;

/* validate.c: argument checks shared by every SQL-callable function */
extern void require_not_null(FunctionCallInfo fcinfo, int argno, const char *argname);
extern int64 interval_usecs(const Interval *iv, const char *argname);
extern Datum usecs_interval(int64 usecs);
extern char *queue_name_arg(FunctionCallInfo fcinfo, int argno, const char *argname);
extern int64 interval_arg_usecs(FunctionCallInfo fcinfo, int argno, const char *argname,
								int64 min_usecs, int64 max_usecs, int64 default_usecs);
extern int32 batch_size_arg(FunctionCallInfo fcinfo, int argno, const char *argname);
extern int64 required_int8_arg(FunctionCallInfo fcinfo, int argno, const char *argname);
extern void check_payload_size(Datum payload, Datum headers, bool headers_null);
extern int32 max_attempts_arg(FunctionCallInfo fcinfo, int argno);
extern char **reset_names_arg(FunctionCallInfo fcinfo, int argno, int *n);

#define QUEUE_MAX_BATCH				10000
#define QUEUE_MAX_VISIBILITY_USECS	(INT64CONST(12) * USECS_PER_HOUR)
#define QUEUE_MAX_DELAY_USECS		(INT64CONST(7) * USECS_PER_DAY)
#define QUEUE_MAX_WAIT_USECS		(INT64CONST(1) * USECS_PER_HOUR)
#define QUEUE_MAX_ATTEMPTS_LIMIT	1000
#define QUEUE_MAX_PRIORITY			32767	/* priorities run from 0 (the default) */
#define QUEUE_MIN_DEDUP_WINDOW_USECS	USECS_PER_SEC
#define QUEUE_DEFAULT_DEDUP_WINDOW_USECS	(INT64CONST(5) * USECS_PER_MINUTE)
#define QUEUE_MAX_RETENTION_USECS	(INT64CONST(3650) * USECS_PER_DAY)

/*
 * Queue ids are unique only within one database and one installation of the
 * extension (they restart after DROP EXTENSION), so a slot is keyed by all
 * three; the catalog table's OID stands for the installation.
 */
typedef struct SlotKey
{
	Oid			database;
	Oid			catalog;
	int64		queue_id;
} SlotKey;

/* shmem.c: per-queue counters and wakeups in shared memory */
typedef struct QueueCounters
{
	bool		tracked;		/* false when the shared table is full */
	bool		messages_known; /* false until counted since server start */
	bool		hidden_known;	/* in_flight and delayed are right */
	int64		messages;
	int64		in_flight;
	int64		delayed;
	int64		sent;
	int64		acked;
	int64		dead;
} QueueCounters;

extern void shmem_init(void);
extern void require_preloaded(void);
extern void pending_sent(int64 queue_id, int64 n);
extern void pending_removed(int64 queue_id, int64 n, bool acked);
extern void pending_dead_lettered(int64 from_queue_id, int64 to_queue_id, int64 n);
extern void pending_moved(int64 from_queue_id, int64 to_queue_id, int64 n);
extern void pending_wake(int64 queue_id);
extern void pending_locked(int64 queue_id);
extern void pending_purged(int64 queue_id);
extern void pending_created(int64 queue_id);
extern void pending_dropped(int64 queue_id);
extern bool pending_touches(int64 queue_id);
extern uint64 wakeup_sequence(int64 queue_id);
extern void wakeup_wait(int64 queue_id, uint64 seen, TimestampTz deadline);
extern QueueCounters counters_read(int64 queue_id);
extern bool counters_hidden_known(int64 queue_id);
extern void counters_set_initial(int64 queue_id, int64 messages, int nseconds,
								 const int64 *seconds, const int32 *in_flight,
								 const int32 *delayed);
extern void pending_hidden(int64 queue_id, TimestampTz visible_at, int32 in_flight,
						   int32 delayed);

/* hidden.c: hidden (in flight, delayed) messages by the second they reappear */
extern Size hidden_shmem_size(void);
extern int	hidden_lock_count(void);
extern void hidden_shmem_startup(LWLockPadded *locks);
extern int64 hidden_second(TimestampTz visible_at);
extern bool hidden_apply(const SlotKey *slot, int64 second, int32 in_flight, int32 delayed);
extern void hidden_read(const SlotKey *slot, int64 *in_flight, int64 *delayed);
extern void hidden_forget(const SlotKey *slot);
extern int64 hidden_next_second(const SlotKey *slot);

/* catalog.c: the queue catalog, cached per backend, and privileges */
typedef enum QueuePrivilege
{
	QUEUE_PRIV_SEND = 1 << 0,
	QUEUE_PRIV_READ = 1 << 1,
	QUEUE_PRIV_ADMIN = 1 << 2
} QueuePrivilege;

typedef struct QueueMeta
{
	char		name[NAMEDATALEN];	/* hash key: must be first */
	int64		id;
	bool		logged;
	int64		visibility_usecs;
	int32		max_attempts;	/* 0: no limit */
	int64		dead_letter_id; /* 0: none */
	int64		retention_usecs;	/* -1: keep archived messages for ever */
	int64		dedup_window_usecs;
	bool		fifo;			/* one message of a group at a time, in order */
	bool		fair;			/* round-robin across group keys */
	Oid			owner;
	int			nsenders;
	Oid		   *senders;
	int			nreaders;
	Oid		   *readers;
	int			nadmins;
	Oid		   *admins;
} QueueMeta;

typedef struct OwnerContext
{
	Oid			saved_userid;
	int			saved_sec_context;
	int			guc_level;
	bool		spi_connected;
} OwnerContext;

extern const QueueMeta *queue_lookup(const char *name, bool missing_ok);
extern const QueueMeta *queue_lookup_by_id(int64 id);
extern const QueueMeta *queue_lock(const QueueMeta *meta, LOCKMODE mode);
extern bool queue_has_privilege(const QueueMeta *meta, int privileges);
extern void queue_require_privilege(const QueueMeta *meta, int privileges);
extern const QueueMeta *queue_open(FunctionCallInfo fcinfo, int argno, const char *argname,
								   int privileges);
extern void require_writable(FunctionCallInfo fcinfo);
extern void owner_context_enter(OwnerContext *ctx);
extern void owner_context_exit(OwnerContext *ctx);
extern void catalog_changed(void);
extern void run_sql(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls);
extern SPIPlanPtr keep_plan(const char *sql, int nargs, Oid *argtypes);
extern Oid	catalog_relid(void);

/* storage.c: per-queue tables and the cached statements that touch them */
typedef enum StorageStatement
{
	STMT_CLAIM,
	STMT_WRITE_LEASE,
	STMT_DELETE_IDS,
	STMT_DEAD_LETTER,
	STMT_FAIL,
	STMT_ACK,
	STMT_ACK_BATCH,
	STMT_NACK,
	STMT_SET_VISIBILITY,
	STMT_ARCHIVE,
	STMT_PRUNE_ARCHIVE,
	STMT_FIRST_VISIBLE,
	STMT_COUNT_HIDDEN,
	STMT_LIST_ARCHIVE,
	STMT_REDRIVE,
	STMT_CLAIM_IDS,
	STMT_CLAIM_IDS_FIFO,
	STMT_CLAIM_PRIORITY,
	STMT_CLAIM_PRIORITY_FIFO,
	STMT_FAIR_KEYS,
	STMT_CLAIM_FAIR,
	STMT_CLAIM_FAIR_FIFO,
	STMT_CLAIM_UNGROUPED,
	STMT_ANY_PRIORITIZED,
	STMT_CLAIM_RUN,
	STMT_GIVE_BACK_RUN,
	STMT__COUNT
} StorageStatement;

/* Column numbers of a segment table (the parent's order, storage.c creates it). */
#define SEG_ATT_ID			1
#define SEG_ATT_VISIBLE_AT	2
#define SEG_ATT_ATTEMPTS	3
#define SEG_ATT_RECEIPT		4
#define SEG_ATT_ENQUEUED_AT	5
#define SEG_ATT_ORIGIN		6
#define SEG_ATT_PRIORITY	7
#define SEG_ATT_GROUP_KEY	8
#define SEG_ATT_LAST_ERROR	9
#define SEG_ATT_HEADERS		10
#define SEG_ATT_PAYLOAD		11
#define SEG_NATTS			11

/* Column positions of the rows STMT_CLAIM returns (queue.message's order). */
#define MSG_COL_ID			1
#define MSG_COL_GROUP_KEY	4
#define MSG_COL_VISIBLE_AT	6
#define MSG_COL_ATTEMPTS	7
#define MSG_COL_RECEIPT		9
#define MSG_COL_PRIORITY	10
#define MSG_NCOLS			10

/* Rows returned by a statement run over several segments, in SPI memory. */
typedef struct StorageRows
{
	uint64		processed;		/* rows the statements processed */
	int			ntuples;		/* rows they returned */
	HeapTuple  *tuples;
	TupleDesc	tupdesc;
	int			ntables;		/* SPI tuple tables holding them */
	SPITupleTable *tables[2 * 4 + 1];	/* two per segment, one over all */
} StorageRows;

extern SPIPlanPtr storage_plan(StorageStatement stmt, int64 queue_id, int64 other_id);
extern Datum storage_id_array(const int64 *ids, int n);
extern void storage_create_tables(int64 queue_id, bool logged, bool fifo, bool fair);
extern void storage_set_logged(int64 queue_id, bool logged);
extern void storage_drop_tables(int64 queue_id);
extern int64 storage_truncate(int64 queue_id);
extern int64 storage_count(int64 queue_id);
extern Oid	storage_relid(int64 queue_id);
extern void storage_send(int64 queue_id, const Datum *values, const char *nulls,
						 const Datum *payloads, int npayloads, int64 *ids);
extern StorageRows storage_claim(const QueueMeta *meta, TimestampTz now,
								 const int64 *exclude, int nexclude, int limit, int per_group);
extern StorageRows storage_by_id(StorageStatement stmt, int64 queue_id, int64 probe_id,
								 Datum *values, const char *nulls, uint64 expect);
extern uint64 storage_move(StorageStatement stmt, int64 queue_id, int64 target_id,
						   Datum *values, const char *nulls);
extern void storage_rows_free(StorageRows *rows);
extern HeapTuple storage_message_tuple(TupleTableSlot *row);
extern bool storage_first_visible(int64 queue_id, TimestampTz now, TimestampTz *enqueued_at);
extern int64 storage_bytes(int64 queue_id);

/* segment_indexes.c: the indexes a direct send writes entries into */
extern void segment_indexes_open(ResultRelInfo *rri, TupleTableSlot **slots, int nslots,
								 EState *estate);

/* fifo_head.c: whether a claim of a FIFO queue may take a message */
#define FIFO_SCAN_ROWS	4		/* visible messages a scan looks at per message wanted */
#define FIFO_WINDOWS	4		/* windows of them it reads at most, each twice the last */

typedef enum FifoScanEnd
{
	FIFO_SCAN_ALL,				/* the batch is full, or it met every visible
								 * message of the segment */
	FIFO_SCAN_IN_FLIGHT,		/* what it met was mostly not heads */
	FIFO_SCAN_TAKEN,			/* what it met other readers were taking */
	FIFO_SCAN_MET				/* the same, and at the end only groups it
								 * had met before */
} FifoScanEnd;

/* The groups a claim's scans met, over the segments it scans. */
typedef struct FifoScan FifoScan;

extern FifoScan *fifo_scan_create(void);
extern int	fifo_scan_groups(FifoScan *scan);
extern void fifo_scan_free(FifoScan *scan);
extern void fifo_probe_begin(int64 queue_id, const int64 *held, int nheld);
extern void fifo_probe_end(void);
extern void fifo_probe_abandon(void);
extern FifoScanEnd fifo_claim_scan(FifoScan *scan, int64 queue_id, int seg, int64 from,
								   TimestampTz now, const int64 *held, int nheld, int limit,
								   HeapTuple *taken, int *ntaken);

/* segment.c: the ring of segment tables, scan hints and recycling */
#define QUEUE_SEGMENTS	4
#define STRAGGLERS		32		/* hidden rows listed below a segment's scan_from */

typedef struct SegmentRing
{
	bool		tracked;		/* kept in shared memory (else read from the catalog) */
	int64		head;			/* generation that takes new rows */
	int64		tail;			/* oldest live generation */
} SegmentRing;

extern Size segment_shmem_size(void);
extern void segment_shmem_startup(LWLock *lock);
extern SegmentRing segment_ring(int64 queue_id);
extern Oid	segment_relid(int64 queue_id, int seg);
extern int	segment_for_insert(int64 queue_id);
extern void segment_note(int64 queue_id, int seg, int64 id, TimestampTz visible_at);
extern void segment_note_priority(int64 queue_id, int seg);
extern void segment_note_lease(int64 queue_id, int seg);
extern bool segment_maybe_leased(int64 queue_id, int seg);
extern bool segment_prioritized(int64 queue_id, bool *unknown);
extern void segment_priority_none(int64 queue_id);
#define FAIR_CURSOR_BYTES 64
extern void segment_fair_cursor(int64 queue_id, char *key);
extern void segment_set_fair_cursor(int64 queue_id, const char *key);
extern bool segment_scan_from(int64 queue_id, int seg, int64 *scan_from);
extern int64 segment_floor(int64 queue_id, int seg);
extern bool segment_below(int64 queue_id, int seg, int64 *scan_from, int64 *ids, int *nids);
extern int	segment_due(int64 queue_id, int seg, TimestampTz now, int64 *ids, int max);
extern void segment_recheck(int64 queue_id, int seg, const int64 *ids, int n);
extern void segment_after_read(int64 queue_id, int seg);
extern int	segment_probe_order(int64 queue_id, int64 id, bool from_tail, int *segs);
extern void segment_forget(int64 queue_id);
extern void segment_dropped(int64 queue_id);
extern void segment_touch(int64 queue_id);
extern void segment_pre_commit(void);
extern void segment_at_xact_end(bool commit);
extern void segment_at_subxact_end(bool commit, int level);
extern bool segment_count(int64 queue_id, int32 *segments);
extern int	storage_maintain(int64 queue_id, bool force);

/* lease.c: leases taken by this transaction, written at its commit */
typedef enum LeaseMatch
{
	LEASE_NONE,					/* not leased by this transaction */
	LEASE_MATCH,				/* leased here with this receipt: now consumed */
	LEASE_OTHER					/* leased here with another receipt */
} LeaseMatch;

extern void lease_record(int64 queue_id, int64 receipt, TimestampTz visible_at, int n,
						 const int64 *ids);
extern bool lease_any(void);
extern bool lease_pending(int64 queue_id);
extern LeaseMatch lease_consume(int64 queue_id, int64 id, int64 receipt);
extern int64 *lease_ids(int64 queue_id, const int64 *more, int nmore, int *n);
extern void lease_flush(int64 queue_id);
extern void lease_at_xact_end(void);
extern void lease_at_subxact_end(bool commit, int level);

/* queue_admin.c: the first count of a queue after a start */
extern void queue_count_once(const QueueMeta *meta);

/* message.c: the claim a drain worker shares with read, and its settlement */
typedef struct FailedMessage
{
	int64		id;
	int32		attempts;		/* deliveries so far, this one included */
	const char *error;
	TimestampTz visible_at;		/* when it may be delivered again */
	bool		dead;			/* out of attempts: to the dead-letter queue */
} FailedMessage;

extern int	claim_messages(const QueueMeta *meta, int max_messages, const int64 *held,
						   int nheld, Tuplestorestate *store, TupleDesc desc);
extern void settle_messages(const QueueMeta *meta, const int64 *done, int ndone,
							const FailedMessage *failed, int nfailed);
extern int	claim_leased(const QueueMeta *meta, int max_messages, int64 visibility_usecs,
						 Tuplestorestate *store, TupleDesc desc);
extern bool settle_leased(const QueueMeta *meta, int64 id, int64 receipt,
						  const FailedMessage *failed);

/* consumer.c: the consumer catalog as the SQL API and the workers see it */
#define CONSUMER_RATE_WINDOW	11	/* seconds of history behind observed_rate */

typedef struct ConsumerConfig
{
	int64		id;
	char		name[NAMEDATALEN];
	int64		queue_id;
	Oid			handler;
	Oid			owner;
	int32		batch_size;
	int64		batch_window_usecs;
	int32		max_concurrency;
	double		rate_limit;		/* 0: none */
	int32		max_attempts;	/* 0: the queue's */
	int64		retry_backoff_usecs;
	int64		max_retry_backoff_usecs;
	int64		handler_timeout_usecs;
	bool		paused;
	TimestampTz created_at;
} ConsumerConfig;

extern int	consumer_catalog_load(int64 only_id, ConsumerConfig **configs);
extern Oid	message_type_oid(void);
extern void consumer_check_handler(Oid handler, Oid role);
extern Oid	consumer_catalog_relid(void);
extern char *consumer_owned_by(Oid role);

/* dedup.c: deduplication keys */
extern bool dedup_reserve(const QueueMeta *meta, Datum key, TimestampTz now, int64 *id);
extern void dedup_prune(int64 queue_id, bool logged);
extern void dedup_forget(int64 queue_id, bool logged);
extern void dedup_set_logged(int64 queue_id, bool logged);

/* maintain.c: the housekeeping of a database's queues */
extern void queue_maintain_database(void);

/* registry.c: consumers and drain workers in shared memory */
typedef enum WorkerState
{
	WORKER_STARTING,
	WORKER_WAITING,
	WORKER_CLAIMING,
	WORKER_HANDLING,
	WORKER_COMMITTING,
	WORKER_MAINTAINING
} WorkerState;

typedef struct ConsumerSlot
{
	bool		in_use;
	Oid			database;
	Oid			catalog;		/* the consumer catalog's OID: one installation */
	int64		consumer_id;
	char		name[NAMEDATALEN];
	SlotKey		queue;
	Oid			owner;
	int32		max_concurrency;
	bool		paused;
	/* the launcher's own bookkeeping */
	uint64		idle_seq;		/* queue's wakeup sequence when a worker went idle */
	bool		seen_idle;
	bool		want_more;		/* a worker found a full batch: add one */
	TimestampTz wake_at;		/* a hidden message is visible again then */
	TimestampTz next_start;		/* start no worker before (backoff) */
	int			start_failures;
	int32		careful;		/* messages left to run one by one, counted first */
	/* shared by the consumer's workers, under mutex */
	slock_t		mutex;
	double		rate_limit;
	int32		batch_size;
	double		tokens;
	TimestampTz refilled_at;
	int64		batches;
	int64		messages;
	int64		failures;
	char		last_error[256];
	TimestampTz last_error_at;
	int64		rate_second[CONSUMER_RATE_WINDOW];
	int32		rate_count[CONSUMER_RATE_WINDOW];
} ConsumerSlot;

typedef struct WorkerSlot
{
	bool		in_use;
	bool		maintenance;	/* a maintenance worker, not a drain worker */
	uint32		generation;
	pid_t		pid;
	Oid			database;
	Oid			catalog;
	int64		consumer_id;
	TimestampTz started_at;
	bool		worked;			/* connected: not a failed start */
	bool		failed;			/* ended by an error: back off */
	bool		stopping;		/* stopped on purpose: not a failure */
	bool		exited;			/* gone or going: only the launcher frees the slot */
	slock_t		mutex;			/* guards the fields below */
	WorkerState state;
	TimestampTz batch_started_at;
	int32		batch_messages;
	int64		batches;
	int64		messages;
} WorkerSlot;

extern Size registry_shmem_size(void);
extern void registry_shmem_startup(LWLock *lock);
extern bool registry_ready(void);
extern TimestampTz registry_started_at(void);
extern int	registry_nconsumers(void);
extern int	registry_nworkers(void);
extern ConsumerSlot *registry_consumer(int index);
extern WorkerSlot *registry_worker(int index);
extern void registry_lock(bool exclusive);
extern void registry_unlock(void);
extern ConsumerSlot *registry_find_consumer(Oid database, Oid catalog, int64 consumer_id);
extern void registry_set_launcher(bool running);
extern pid_t registry_launcher_pid(void);
extern void registry_poke_launcher(void);
extern void registry_request_maintenance(Oid database);
extern void registry_request_maintenance_all(void);
extern Oid	registry_next_maintenance(bool *all);
extern int	registry_replace_database(Oid database, Oid catalog, int n,
									  const ConsumerSlot *fresh);
extern void registry_forget_database(Oid database);
extern bool registry_consumer_of_owner(Oid role, Oid skip_database, char *name,
									   Oid *database);
extern void registry_note_database(Oid database, bool installed);
extern int	registry_databases(Oid *databases, int max);
extern void registry_stop_database(Oid database);
extern void registry_stop_database_done(Oid database, bool dropped, bool maintain);
extern bool registry_database_blocked(Oid database);
extern int	registry_count_workers(const ConsumerSlot *consumer);
extern int	registry_reserve_worker(Oid database, const ConsumerSlot *consumer);
extern void registry_release_worker(int index, uint32 generation);
extern WorkerSlot *registry_attach_worker(int index, uint32 generation);
extern bool registry_worker_is_surplus(const WorkerSlot *me, const ConsumerSlot *consumer);
extern void worker_set_state(WorkerSlot *w, WorkerState state, int batch_messages);
extern const char *worker_state_name(WorkerState state);
extern int	consumer_take_tokens(ConsumerSlot *c, int want, int64 *wait_usecs);
extern void consumer_return_tokens(ConsumerSlot *c, int unused);
extern void consumer_count_batch(ConsumerSlot *c, int handled, int failed, const char *error);
extern void consumer_note_error(ConsumerSlot *c, const char *error);
extern void copy_clipped(char *dst, const char *src, int size);
extern double consumer_observed_rate(ConsumerSlot *c);

/* launcher.c, drain.c and maintenance.c: the background workers */
extern void launcher_register(void);
extern void bgworker_begin_xact(void);
extern void bgworker_commit_xact(void);
extern void maintenance_worker_run(WorkerSlot *me);

/* shmem.c, for the launcher and the workers: a queue's slot by key */
extern SlotKey queue_slot_key(int64 queue_id);
extern uint64 wakeup_sequence_key(const SlotKey *key);
extern void wakeup_wait_key(const SlotKey *key, uint64 seen, TimestampTz deadline);
extern bool queue_has_work(const SlotKey *key, uint64 since_seq, bool poke_launcher);
extern TimestampTz queue_next_visible(const SlotKey *key);


#endif							/* QUEUE_H */
