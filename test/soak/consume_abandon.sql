-- A consumer that dies after its read: leases up to 5 messages for 1 second
-- and never comes back.  They are delivered again once the lease runs out.
SELECT count(*) FROM queue.read('soak_ext', 5, visibility_timeout => '1 second');
