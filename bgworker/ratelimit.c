/*
 * ratelimit.c
 *    A consumer's rate limit: a token bucket in the consumer's registry slot,
 *    shared by all of its workers, holding at most one batch.
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "queue.h"

/*
 * Takes "want" tokens (at most a batch) from the consumer's bucket, or
 * none.  The bucket holds at most one batch and refills at rate_limit per
 * second, so a consumer never runs more than its rate over any window
 * longer than one batch's worth, and its batches stay full.  Returns the
 * tokens granted; when none, *wait_usecs says how long until they are
 * there.
 */
int
consumer_take_tokens(ConsumerSlot *c, int want, int64 *wait_usecs)
{
	TimestampTz now = GetCurrentTimestamp();
	int			granted;

	*wait_usecs = 0;
	SpinLockAcquire(&c->mutex);
	if (c->rate_limit <= 0)
	{
		SpinLockRelease(&c->mutex);
		return want;
	}
	c->tokens = Min((double) c->batch_size,
					c->tokens + c->rate_limit * (double) (now - c->refilled_at) / USECS_PER_SEC);
	c->refilled_at = now;
	want = Min(want, c->batch_size);
	granted = c->tokens >= want ? want : 0;
	if (granted == 0)
		*wait_usecs = (int64) ((want - c->tokens) * USECS_PER_SEC / c->rate_limit) + 1;
	else
		c->tokens -= granted;
	SpinLockRelease(&c->mutex);
	return Max(granted, 0);
}

/* Gives back tokens a claim did not use. */
void
consumer_return_tokens(ConsumerSlot *c, int unused)
{
	SpinLockAcquire(&c->mutex);
	if (c->rate_limit > 0)
		c->tokens = Min((double) c->batch_size, c->tokens + unused);
	SpinLockRelease(&c->mutex);
}

