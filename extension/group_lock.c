/*
 * group_lock.c
 *    The lock of a FIFO queue's message group: while a reader holds it, no
 *    other reader takes a message of that group.
 *
 * A claim of a FIFO queue takes a message only as the head of its group
 * (storage.c, FIFO_HEAD) and only when it can also take the group's lock at
 * once.  The lock lasts until the reader's transaction ends: by then the
 * messages it took are leased (lease.c writes leases before the commit),
 * deleted, or handed back, and the group's next reader sees that.  It is a
 * transaction-level lock in PostgreSQL's lock manager with an advisory tag
 * of its own (field4 GROUP_LOCK_TAG; SQL's advisory lock functions use 1 and
 * 2), so it shows in pg_locks as an advisory lock and never meets one taken
 * by the application.  The group key is hashed: two groups that share a
 * hash share a lock, which costs parallelism, never order.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"

#include "queue.h"

#define GROUP_LOCK_TAG	0x5155	/* "QU" */

PG_FUNCTION_INFO_V1(queue_try_group_lock);

/* queue_internal.try_group_lock(queue_id, group_key) returns bool */
Datum
queue_try_group_lock(PG_FUNCTION_ARGS)
{
	int64		queue_id = PG_GETARG_INT64(0);
	text	   *key = PG_GETARG_TEXT_PP(1);
	uint32		hash = DatumGetUInt32(hash_any((const unsigned char *) VARDATA_ANY(key),
											   VARSIZE_ANY_EXHDR(key)));
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) queue_id, hash, GROUP_LOCK_TAG);
	PG_RETURN_BOOL(LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL);
}
