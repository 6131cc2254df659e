-- An external consumer that archives instead of acking: the good messages of
-- its batch go to the queue's archive (found there by the final check), the
-- poison ones are left to their lease.
WITH r AS (SELECT * FROM queue.read('soak_ext', 5, visibility_timeout => '5 seconds'))
SELECT count(*) FILTER (WHERE queue.archive('soak_ext', id, receipt))
  FROM r WHERE NOT (payload->>'poison')::boolean;
