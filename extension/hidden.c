/*
 * hidden.c
 *    How many of a queue's messages are hidden (in flight or delayed), kept
 *    in shared memory by the second at which they become visible again.
 *
 * A hidden message is counted in the bucket (queue, second of visible_at).
 * Every change of a message's visible_at is recorded by the transaction that
 * makes it (-1 in the old second's bucket, +1 in the new one) and applied at
 * commit.  Only buckets of seconds after the current one count, so time
 * turns hidden messages visible without anyone touching them (up to a second
 * early), and a lease that ran out earlier in the current second is not
 * counted twice when the message is read again.  The current second's bucket
 * is kept all the same, to tell a waiting reader that something reappears
 * before the second ends.  Deltas that reach a bucket whose second has
 * passed are dropped: since a message's +1 always commits before its -1 can,
 * the only mismatches this allows are in buckets that no longer count.  Such
 * buckets are removed whenever the counts are read.
 *
 * Locking: the bucket table is partitioned; a change takes one partition's
 * LWLock, a read or a reset takes them all in order.  A queue's counts are
 * valid only once counted from its table after a server start (see
 * hidden_reset); a full table marks the queue's counts unknown instead.
 */
#include "postgres.h"

#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "queue.h"

#define HIDDEN_PARTITIONS		16
#define HIDDEN_BUCKETS_PER_QUEUE 64

typedef struct HiddenKey
{
	SlotKey		slot;
	int64		second;			/* visible_at / USECS_PER_SEC */
} HiddenKey;

typedef struct HiddenBucket
{
	HiddenKey	key;
	int32		in_flight;
	int32		delayed;
} HiddenBucket;

static HTAB *bucket_hash = NULL;
static LWLock *partition_locks[HIDDEN_PARTITIONS];

static long
hidden_capacity(void)
{
	return (long) queue_max_queues * HIDDEN_BUCKETS_PER_QUEUE;
}

Size
hidden_shmem_size(void)
{
	return hash_estimate_size(hidden_capacity(), sizeof(HiddenBucket));
}

int
hidden_lock_count(void)
{
	return HIDDEN_PARTITIONS;
}

/* Attaches to the bucket table; locks are the tranche's locks from the first. */
void
hidden_shmem_startup(LWLockPadded *locks)
{
	HASHCTL		info;

	for (int i = 0; i < HIDDEN_PARTITIONS; i++)
		partition_locks[i] = &locks[i].lock;
	info.keysize = sizeof(HiddenKey);
	info.entrysize = sizeof(HiddenBucket);
	info.num_partitions = HIDDEN_PARTITIONS;
	bucket_hash = ShmemInitHash("queue hidden buckets", hidden_capacity(), hidden_capacity(),
								&info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
}

static int64
current_second(void)
{
	return GetCurrentTimestamp() / USECS_PER_SEC;
}

int64
hidden_second(TimestampTz visible_at)
{
	return visible_at / USECS_PER_SEC;
}

/*
 * Applies one committed change to a bucket; returns false when the table is
 * full and the queue's counts are no longer right.  Must not throw: it runs
 * after the commit.
 */
bool
hidden_apply(const SlotKey *slot, int64 second, int32 in_flight, int32 delayed)
{
	HiddenKey	key;
	uint32		hash;
	LWLock	   *lock;
	HiddenBucket *bucket;
	bool		found;

	if (second < current_second())
		return true;
	memset(&key, 0, sizeof(key));
	key.slot = *slot;
	key.second = second;
	hash = get_hash_value(bucket_hash, &key);
	lock = partition_locks[hash % HIDDEN_PARTITIONS];

	LWLockAcquire(lock, LW_EXCLUSIVE);
	bucket = hash_search_with_hash_value(bucket_hash, &key, hash, HASH_ENTER_NULL, &found);
	if (bucket != NULL)
	{
		if (!found)
			bucket->in_flight = bucket->delayed = 0;
		bucket->in_flight += in_flight;
		bucket->delayed += delayed;
		if (bucket->in_flight == 0 && bucket->delayed == 0)
			hash_search_with_hash_value(bucket_hash, &key, hash, HASH_REMOVE, NULL);
	}
	LWLockRelease(lock);
	return bucket != NULL;
}

static void
lock_all(void)
{
	for (int i = 0; i < HIDDEN_PARTITIONS; i++)
		LWLockAcquire(partition_locks[i], LW_EXCLUSIVE);
}

static void
unlock_all(void)
{
	for (int i = HIDDEN_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(partition_locks[i]);
}

/*
 * Sums a queue's hidden messages (slot NULL: none) and removes every
 * expired bucket, or, with forget, every bucket of that queue.
 */
static void
scan_buckets(const SlotKey *slot, bool forget, int64 *in_flight, int64 *delayed)
{
	int64		now = current_second();
	HASH_SEQ_STATUS status;
	HiddenBucket *bucket;

	*in_flight = *delayed = 0;
	lock_all();
	hash_seq_init(&status, bucket_hash);
	while ((bucket = hash_seq_search(&status)) != NULL)
	{
		bool		mine = slot != NULL &&
			memcmp(&bucket->key.slot, slot, sizeof(SlotKey)) == 0;

		if (bucket->key.second < now || (mine && forget))
			hash_search(bucket_hash, &bucket->key, HASH_REMOVE, NULL);
		else if (mine && bucket->key.second > now)
		{
			*in_flight += bucket->in_flight;
			*delayed += bucket->delayed;
		}
	}
	unlock_all();
}

/* A queue's messages hidden right now: in flight, and delayed. */
void
hidden_read(const SlotKey *slot, int64 *in_flight, int64 *delayed)
{
	scan_buckets(slot, false, in_flight, delayed);
}

/* Drops a queue's buckets (it was dropped, purged or is about to be recounted). */
void
hidden_forget(const SlotKey *slot)
{
	int64		in_flight;
	int64		delayed;

	scan_buckets(slot, true, &in_flight, &delayed);
}

/*
 * The second by whose end the queue's next hidden message will be visible
 * again, or -1 when it has none.
 */
int64
hidden_next_second(const SlotKey *slot)
{
	int64		now = current_second();
	int64		next = -1;
	HASH_SEQ_STATUS status;
	HiddenBucket *bucket;

	for (int i = 0; i < HIDDEN_PARTITIONS; i++)
		LWLockAcquire(partition_locks[i], LW_SHARED);
	hash_seq_init(&status, bucket_hash);
	while ((bucket = hash_seq_search(&status)) != NULL)
	{
		if (bucket->key.second >= now && (next < 0 || bucket->key.second < next) &&
			memcmp(&bucket->key.slot, slot, sizeof(SlotKey)) == 0)
			next = bucket->key.second;
	}
	unlock_all();
	return next;
}
