/*
 * queue.c
 *    Entry point of the queue extension: the module magic, the GUCs and
 *    _PG_init, which only defines settings and asks each subsystem to
 *    initialise itself.
 *
 * All settings live under queue.* and are defined here, nowhere else.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "compat.h"
#include "queue.h"

PG_MODULE_MAGIC;

int			queue_max_payload_size = 1024 * 1024;
int			queue_max_queues = 1024;
int			queue_segment_size = 16 * 1024;	/* kB */
int			queue_segment_age = 60 * 1000;	/* ms */

void		_PG_init(void);

static void
define_settings(void)
{
	DefineCustomIntVariable("queue.max_payload_size",
							"Largest message accepted by send, payload and headers together.",
							"A larger message is refused with SQLSTATE 54000 before anything is written.",
							&queue_max_payload_size,
							1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_USERSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	/* a server-start setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("queue.max_queues",
								"Number of queues whose counters and wakeups fit in shared memory.",
								"Queues beyond it still work; their counters show as NULL and their waiters share one wakeup.",
								&queue_max_queues,
								1024, 16, 1000000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

	DefineCustomIntVariable("queue.segment_size",
							"Size at which a queue's current segment table is closed and a new one started.",
							"Smaller segments are recycled sooner and keep a queue smaller on disk; each recycle costs a TRUNCATE.",
							&queue_segment_size,
							16 * 1024, 8, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("queue.segment_age",
							"Age at which a queue's current segment table is closed and a new one started, if it holds anything.",
							"Bounds how long the dead rows of a slow queue wait to be recycled.",
							&queue_segment_age,
							60 * 1000, 10, 24 * 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	queue_reserve_guc_prefix("queue");
}

void
_PG_init(void)
{
	define_settings();
	if (process_shared_preload_libraries_in_progress)
		shmem_init();
}
