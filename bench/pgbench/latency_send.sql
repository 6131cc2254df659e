-- The sender of the drain latency benchmark (bench/drain.sh): one message a
-- transaction, in autocommit, so that the statement's clock_timestamp() is
-- taken just before its commit and the statement returns just after it.
-- n numbers the messages 1, 2, ... (pgbench variables live on across a
-- client's transactions), so that each lines up with pgbench's log line.
\set n :n + 1
SELECT queue.send('bench_latency', jsonb_build_object('n', :n::int, 'sent_at', clock_timestamp()));
