# 011_consumer_faults.pl: consumers when things go wrong.
#
# The handler, owned by an ordinary role, writes a ledger row per message
# per call (with its process and top-level transaction) inside the drain's
# transaction, so a row exists exactly when a message's effect committed.
#
# - A poison message in a batch of 100: the handler raises whenever the
#   poison message is in its batch.  The other 99 commit in the first drain
#   transaction, delivered once; the poison message's effect never commits,
#   it is tried max_attempts (3) times and ends in the dead-letter queue
#   with its attempts and last_error; queue.consumers counts 99 handled and
#   3 failures.
# - handler_timeout: a handler sleeping in pg_sleep(3600) is cancelled after
#   its 1 s timeout; each timeout counts as a failure (attempts + 1,
#   last_error in queue.consumers), the message ends in the dead-letter
#   queue after max_attempts, and the worker goes on handling other messages.
# - A message whose handler call kills its worker (pg_terminate_backend of
#   itself) in a batch of 5: the other 4 take effect once each, the killer
#   never; its deliveries are counted (careful mode) although its worker
#   dies, and it ends in the dead-letter queue after max_attempts (1).
# - pg_terminate_backend of the launcher while a backlog drains: the
#   running workers drain on while it is gone, a new launcher starts (new
#   pid), draining goes on to the end exactly once, and a later send gets a
#   new worker from the new launcher.
# - kill -9 of a drain worker while its handler is in the middle of a batch
#   (held at a gate, an advisory lock the test holds, so there is no race;
#   the batch's ids show in pg_locks): the postmaster restarts the server,
#   the launcher comes back and re-creates the workers, and the ledger then
#   holds every message exactly once, the killed batch's too: nothing lost,
#   nothing applied twice.
# - With too few background worker slots (max_worker_processes = 4) a
#   consumer still drains, and the shortage is logged once per backoff, not
#   in a loop.
# - A streaming standby of a primary with a consumer and messages runs no
#   launcher and no worker and handles nothing, and queue.consumers there
#   shows the consumer stopped; once promoted, its launcher starts and
#   drains the messages, each once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = queue_node(
	'faults', qq{
restart_after_crash = on
max_worker_processes = 16
queue.max_workers = 4
queue.worker_idle_timeout = '2s'
log_line_prefix = '%m [%p] %q%a '
});

sub sql { return $node->safe_psql('postgres', shift); }

sub as_app { return $node->safe_psql('postgres', "SET ROLE app;\n" . shift); }

# An array of n payloads {"n": from.., extra}; extra is SQL building a jsonb
# from g (the number), to be concatenated.
sub payloads
{
	my ($from, $n, $extra) = @_;
	$extra //= q{'{}'::jsonb};
	return qq{ARRAY(SELECT jsonb_build_object('n', g) || $extra
	                FROM generate_series($from, $from + $n - 1) g)};
}

my $t_start = time;
my $offset;

# The extension, the ledger and the handler (for the standby's primary too).
my $setup_sql = q{
CREATE EXTENSION queue;
CREATE TABLE ledger (
    consumer    text,
    id          bigint,
    n           int,
    attempts    int,
    at          timestamptz DEFAULT clock_timestamp(),
    xact        bigint DEFAULT txid_current(),
    pid         int DEFAULT pg_backend_pid());
GRANT ALL ON ledger TO app;
CREATE FUNCTION handler(msgs queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    me text := regexp_replace(current_setting('application_name'), '^queue consumer ', '');
    s float8;
BEGIN
    INSERT INTO ledger (consumer, id, n, attempts)
    SELECT me, m.id, (m.payload->>'n')::int, m.attempts FROM unnest(msgs) m;
    SELECT max((m.payload->>'sleep')::float8) INTO s FROM unnest(msgs) m;
    IF s > 0 THEN
        PERFORM pg_sleep(s);
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'gate') THEN
        -- show the batch's ids in pg_locks, then wait at the gate (0, 1)
        -- for as long as the test holds it
        PERFORM pg_advisory_xact_lock_shared(m.id) FROM unnest(msgs) m;
        PERFORM pg_advisory_xact_lock_shared(0, 1);
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'die') THEN
        -- the worker's own death, in the middle of the batch
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(10);
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'fail') THEN
        RAISE EXCEPTION 'handler failed on purpose';
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION handler(queue.message[]) OWNER TO app;
};
sql(q{CREATE ROLE app LOGIN});
sql($setup_sql);

# Creates a queue (with a dead-letter queue if asked) readable by app.
sub make_queue
{
	my ($queue, $dlq) = @_;
	if ($dlq)
	{
		sql(qq{SELECT queue.create('$dlq')});
		sql(qq{SELECT queue.create('$queue', dead_letter_queue => '$dlq')});
	}
	else
	{
		sql(qq{SELECT queue.create('$queue')});
	}
	sql(qq{SELECT queue.grant('$queue', 'all', 'app')});
	return;
}

# --- a poison message in a batch of 100 --------------------------------------------

note 'poison message';
make_queue('qpoison', 'qpoison_dlq');
# subscribed paused, so that the 100 messages are there for the first claim;
# a consumer subscribed after the start is not in careful mode
as_app(q{
BEGIN;
SELECT queue.subscribe('poison', 'qpoison', 'handler(queue.message[])', batch_size => 100,
                       max_attempts => 3, retry_backoff => '100ms', max_retry_backoff => '1s');
SELECT queue.pause('poison');
COMMIT;});
my $poison_id = (
	split /\n/,
	sql('SELECT queue.send_batch(\'qpoison\', '
		  . payloads(1, 100, q{CASE WHEN g = 37 THEN '{"fail": true}'::jsonb ELSE '{}' END})
		  . ')'))[36];
as_app(q{SELECT queue.resume('poison')});
wait_until($node,
	q{SELECT (SELECT messages FROM queue.queues WHERE queue_name = 'qpoison_dlq') = 1
	     AND (SELECT messages FROM queue.queues WHERE queue_name = 'qpoison') = 0},
	'poison: the queue empties, one message in the dead-letter queue');
is( sql(q{SELECT count(*) || ',' || count(DISTINCT id) || ',' || sum(n) FROM ledger
		  WHERE consumer = 'poison'}),
	'99,99,' . (5050 - 37),
	'poison: the 99 good messages took effect, each once, the poison message never');
is(sql(q{SELECT count(DISTINCT xact) FROM ledger WHERE consumer = 'poison'}),
	'1', 'poison: all 99 committed in one transaction, the drain of the batch of 100');
is(sql(q{SELECT min(attempts) || ',' || max(attempts) FROM ledger WHERE consumer = 'poison'}),
	'1,1', 'poison: each good message was delivered once');
my ($dl_id, $dl_n, $dl_attempts, $dl_error) = split /\|/,
  sql(q{SELECT id, payload->>'n', attempts, last_error FROM queue.read('qpoison_dlq')});
is("$dl_id|$dl_n", "$poison_id|37", 'poison: the dead letter is the poison message, same id');
# attempts counts deliveries, and this read is one more
is($dl_attempts, '4', 'poison: dead-lettered after max_attempts (3) deliveries (read shows 3 + its own)');
like($dl_error, qr/handler failed on purpose/, 'poison: with the handler\'s error as last_error');
is( sql(q{SELECT messages || ',' || failures FROM queue.consumers WHERE consumer_name = 'poison'}),
	'99,3', 'poison: queue.consumers counts 99 handled and 3 failures');
like(sql(q{SELECT last_error FROM queue.consumers WHERE consumer_name = 'poison'}),
	qr/handler failed on purpose/, 'poison: queue.consumers shows the last error');
as_app(q{SELECT queue.unsubscribe('poison')});

# --- handler_timeout cancels pg_sleep(3600) ------------------------------------------

note 'handler_timeout';
make_queue('qslow', 'qslow_dlq');
as_app(q{SELECT queue.subscribe('slow', 'qslow', 'handler(queue.message[])', batch_size => 1,
                                max_attempts => 2, retry_backoff => '10ms', handler_timeout => '1s')});
my $t_slow = time;
sql(q{SELECT queue.send('qslow', '{"n": 1, "sleep": 3600}')});
wait_until($node,
	q{SELECT count(*) = 1 FROM pg_stat_activity a JOIN queue.workers w USING (pid)
	  WHERE w.consumer_name = 'slow' AND w.state = 'handling' AND a.wait_event = 'PgSleep'},
	'timeout: the handler sleeps in pg_sleep; queue.workers shows the worker handling');
wait_until($node, q{SELECT messages = 1 FROM queue.queues WHERE queue_name = 'qslow_dlq'},
	'timeout: the message ends in the dead-letter queue');
my $slow_elapsed = time - $t_slow;
cmp_ok($slow_elapsed, '>=', 1.9,
	sprintf('timeout: it took at least two 1 s timeouts (%.1f s)', $slow_elapsed));
cmp_ok($slow_elapsed, '<', 120,
	sprintf('timeout: and nothing near the 3600 s sleep (%.1f s)', $slow_elapsed));
my ($to_attempts, $to_error) =
  split /\|/, sql(q{SELECT attempts, last_error FROM queue.read('qslow_dlq')});
is($to_attempts, '3', 'timeout: each timeout counted as an attempt (read shows 2 + its own)');
like($to_error, qr/57014.*statement timeout/, 'timeout: last_error says the statement timed out');
my ($slow_failures, $slow_error) = split /\|/,
  sql(q{SELECT failures, last_error FROM queue.consumers WHERE consumer_name = 'slow'});
is($slow_failures, '2', 'timeout: queue.consumers counts two failures');
like($slow_error, qr/statement timeout/, 'timeout: queue.consumers shows the timeout as last_error');
sql(q{SELECT queue.send('qslow', '{"n": 2}')});
wait_until($node, q{SELECT count(*) = 1 FROM ledger WHERE consumer = 'slow' AND n = 2},
	'timeout: the consumer goes on handling other messages');
as_app(q{SELECT queue.unsubscribe('slow')});

# --- a message that kills its worker ------------------------------------------------

# The worker dies in the batch, so everything rolls back, the count of the
# delivery too; careful mode (see the README) leases the messages one at a
# time after such a death, so the killer is counted and dead-lettered.
note 'a message that kills its worker';
make_queue('qkill', 'qkill_dlq');
as_app(q{SELECT queue.subscribe('killer', 'qkill', 'handler(queue.message[])', batch_size => 5,
                                max_attempts => 1, retry_backoff => '10ms', handler_timeout => '100ms')});
$offset = -s $node->logfile;
my $killer_id = (split /\n/,
	sql('SELECT queue.send_batch(\'qkill\', '
		  . payloads(1, 5, q{CASE WHEN g = 3 THEN '{"die": true}'::jsonb ELSE '{}' END})
		  . ')'))[2];
wait_until($node, q{SELECT count(*) = 4 FROM ledger WHERE consumer = 'killer'},
	'killer: the four other messages are handled');
wait_until($node, q{SELECT messages = 1 FROM queue.queues WHERE queue_name = 'qkill_dlq'},
	'killer: the message that kills its worker ends in the dead-letter queue');
is( sql(q{SELECT count(*) || ',' || count(DISTINCT id) || ',' || sum(n) FROM ledger WHERE consumer = 'killer'}),
	'4,4,12', 'killer: the others took effect once each, the killer never');
ok($node->log_contains(qr/terminating background worker "queue drain worker" due to administrator command/, $offset),
	'killer: its worker did die');
my ($k_id, $k_attempts) = split /\|/, sql(q{SELECT id, attempts FROM queue.read('qkill_dlq')});
is($k_id, $killer_id, 'killer: the dead letter is the message that killed its worker');
cmp_ok($k_attempts, '>=', 2, "killer: its deliveries were counted although its worker died ($k_attempts with this read)");
ok(!$node->log_contains(qr/terminated by signal|all server processes terminated/, $offset),
	'killer: the server did not restart');
as_app(q{SELECT queue.unsubscribe('killer')});

# --- terminating the launcher --------------------------------------------------------

note 'launcher';
make_queue('ql');
as_app(q{SELECT queue.subscribe('lc', 'ql', 'handler(queue.message[])', batch_size => 10,
                                max_concurrency => 2)});
my $launcher = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue launcher'});
like($launcher, qr/^\d+$/, 'one launcher runs');
# a backlog that takes longer to drain than the launcher takes to come back
sql('SELECT queue.send_batch(\'ql\', ' . payloads(1, 800, q{'{"sleep": 0.2}'::jsonb}) . ')');
wait_until($node, q{SELECT count(*) >= 20 FROM ledger WHERE consumer = 'lc'}, 'launcher: draining');
$offset = -s $node->logfile;
my $t_term = sql(qq{SELECT pg_terminate_backend($launcher); SELECT clock_timestamp()});
like($t_term, qr/^t\n/, 'launcher terminated');
$t_term = (split /\n/, $t_term)[-1];
wait_until($node,
	qq{SELECT count(*) = 1 FROM pg_stat_activity
	   WHERE backend_type = 'queue launcher' AND pid <> $launcher},
	'a new launcher starts, with a new pid');
ok($node->log_contains(qr/queue launcher started/, $offset),
	'the log says the launcher started again');
my $t_back = sql(q{SELECT backend_start FROM pg_stat_activity WHERE backend_type = 'queue launcher'});
cmp_ok(
	sql(qq{SELECT count(*) FROM ledger WHERE consumer = 'lc' AND at > '$t_term' AND at < '$t_back'}),
	'>', 0, 'launcher: the workers drain on while no launcher runs');
wait_until($node, q{SELECT count(*) = 800 FROM ledger WHERE consumer = 'lc'},
	'launcher: the backlog drains to the end');
cmp_ok(sql(qq{SELECT count(*) FROM ledger WHERE consumer = 'lc' AND at > '$t_back'}),
	'>', 0, 'launcher: draining went on after the new launcher started');
is(sql(q{SELECT count(DISTINCT id) FROM ledger WHERE consumer = 'lc'}),
	'800', 'launcher: each message once');
wait_until($node, q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'queue consumer lc'},
	'launcher: the workers go idle and leave');
my $old_pids = sql(q{SELECT string_agg(DISTINCT pid::text, ',') FROM ledger WHERE consumer = 'lc'});
sql('SELECT queue.send_batch(\'ql\', ' . payloads(801, 20) . ')');
wait_until($node, q{SELECT count(*) = 820 FROM ledger WHERE consumer = 'lc'},
	'launcher: a later send is handled');
is( sql(qq{SELECT count(*) FROM ledger
		   WHERE consumer = 'lc' AND n > 800 AND pid = ANY ('{$old_pids}'::int[])}),
	'0', 'launcher: by a worker the new launcher started');
as_app(q{SELECT queue.unsubscribe('lc')});

# --- kill -9 of a worker in the middle of a batch --------------------------------------

note 'kill -9';
make_queue('qk');
as_app(q{SELECT queue.subscribe('k9', 'qk', 'handler(queue.message[])', batch_size => 10,
                                max_concurrency => 2)});
sql('SELECT queue.send_batch(\'qk\', ' . payloads(1, 100) . ')');
wait_until($node, q{SELECT count(*) = 100 FROM ledger WHERE consumer = 'k9'},
	'k9: 100 messages handled and committed before the kill');
# the next 200 stop in the handler at a gate the test holds, so that a
# worker is caught in the middle of its batch with no race
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(0, 1)');
sql('SELECT queue.send_batch(\'qk\', ' . payloads(101, 200, q{'{"gate": true}'::jsonb}) . ')');
wait_until($node,
	q{SELECT count(*) > 0 FROM pg_stat_activity a JOIN queue.workers w USING (pid)
	  WHERE w.consumer_name = 'k9' AND w.state = 'handling' AND w.batch_messages = 10
	    AND a.wait_event = 'advisory'},
	'k9: a worker waits in its handler, in the middle of a batch of 10');
my $victim = sql(
	q{SELECT min(pid) FROM pg_stat_activity a JOIN queue.workers w USING (pid)
	  WHERE w.consumer_name = 'k9' AND w.state = 'handling' AND w.batch_messages = 10
	    AND a.wait_event = 'advisory'});
my @inflight = split /\n/, sql(
	qq{SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
	   WHERE locktype = 'advisory' AND objsubid = 1 AND pid = $victim ORDER BY 1});
is(scalar(@inflight), 10, 'k9: pg_locks shows the 10 messages of its batch');
my $ids = join(',', @inflight);
is(sql(qq{SELECT count(*) FROM ledger WHERE id IN ($ids)}), '0',
	'k9: none of their effects has committed');
$offset = -s $node->logfile;
ok(kill('KILL', $victim), "k9: SIGKILL to drain worker $victim in the middle of its batch");
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
ok( $node->log_contains(qr/\(PID $victim\) was terminated by signal 9/, $offset),
	'k9: the postmaster saw the worker die and restarts the server');
$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
# the crash ended the gate's session too, and with it the gate
eval { $gate->quit; };
wait_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'},
	'k9: the launcher is back after the crash restart');
wait_until($node, q{SELECT count(*) = 300 FROM ledger WHERE consumer = 'k9'},
	'k9: the drain goes on to the end');
is( sql(q{SELECT count(*) || ',' || count(DISTINCT id) || ',' || min(n) || ',' || max(n)
		  FROM ledger WHERE consumer = 'k9'}),
	'300,300,1,300',
	'k9: every message took effect exactly once: none lost, none applied twice');
wait_until($node, q{SELECT messages = 0 FROM queue.queues WHERE queue_name = 'qk'},
	'k9: the queue is empty');
is( sql(qq{SELECT count(*) || ',' || count(DISTINCT id) || ',' || count(*) FILTER (WHERE pid = $victim)
		   FROM ledger WHERE id IN ($ids)}),
	'10,10,0',
	'k9: the killed batch\'s 10 messages were handled again, once each, by another worker');
is(sql(q{SELECT count(*) FROM queue.read('qk', 1000)}), '0',
	'k9: nothing left to read');

# --- too few background worker slots ---------------------------------------------------

# max_worker_processes = 4 leaves two slots once the logical replication
# launcher and the queue launcher run; a consumer that wants 4 workers must
# still drain, and the shortage must be logged once per backoff, not in a
# loop.
note 'worker slot shortage';
$node->stop;
$node->append_conf('postgresql.conf', 'max_worker_processes = 4');
$node->start;
wait_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'},
	'shortage: the launcher runs with max_worker_processes = 4');
make_queue('qshort');
as_app(q{SELECT queue.subscribe('short', 'qshort', 'handler(queue.message[])', batch_size => 10,
                                max_concurrency => 4)});
$offset = -s $node->logfile;
my $t_short = time;
sql('SELECT queue.send_batch(\'qshort\', ' . payloads(1, 1000, q{'{"sleep": 0.1}'::jsonb}) . ')');
wait_until($node, q{SELECT count(*) = 1000 FROM ledger WHERE consumer = 'short'},
	'shortage: the backlog drains with the slots there are');
my $short_secs = time - $t_short;
is(sql(q{SELECT count(DISTINCT id) FROM ledger WHERE consumer = 'short'}),
	'1000', 'shortage: each message once');
my $warnings = () = slurp_file($node->logfile, $offset) =~
  /queue launcher could not start a worker: no background worker slot is free/g;
note sprintf('shortage: %d warnings in %.1f s', $warnings, $short_secs);
cmp_ok($warnings, '>=', 1, 'shortage: the launcher warns that no worker slot is free');
cmp_ok($warnings, '<=', 2 + $short_secs,
	'shortage: at most about one warning a second (once per backoff, not in a loop)');
ok($node->log_contains(qr/HINT:\s+Raise max_worker_processes \(now 4\)/, $offset),
	'shortage: the hint says which setting to raise');

# --- a standby runs no consumers; once promoted, it drains ---------------------------

note 'standby and promotion';
$node->stop;
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
# the primary drains nothing (queue.max_workers = 0): its messages wait for the standby
$primary->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue'
queue.max_workers = 0
});
$primary->start;
$primary->safe_psql('postgres', q{CREATE ROLE app LOGIN});
$primary->safe_psql('postgres', $setup_sql);
$primary->safe_psql('postgres',
	q{SELECT queue.create('qs'); SELECT queue.grant('qs', 'all', 'app');
	  SET ROLE app; SELECT queue.subscribe('sb', 'qs', 'handler(queue.message[])');});
$primary->safe_psql('postgres', 'SELECT queue.send_batch(\'qs\', ' . payloads(1, 100) . ')');
$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->append_conf('postgresql.conf', 'queue.max_workers = 3');
$standby->start;
$primary->safe_psql('postgres', 'SELECT queue.send_batch(\'qs\', ' . payloads(101, 50) . ')');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');
my $busy = 0;
for (1 .. 10)
{
	$busy += $standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type IN ('queue launcher', 'queue drain worker', 'queue maintenance')});
	usleep(200_000);
}
is($busy, 0, 'standby: no launcher and no worker runs, sampled over 2 s');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM queue_internal.consumer}),
	'1', 'standby: the consumer is replicated');
my ($sret, $sout, $serr) = $standby->psql('postgres',
	q{SELECT state || ',' || coalesce(backlog::text, 'null') FROM queue.consumers WHERE consumer_name = 'sb'});
like($sout, qr/^stopped,(150|null)$/, 'standby: queue.consumers works and shows the consumer stopped')
  or diag($serr);
is($standby->safe_psql('postgres', q{SELECT count(*) FROM ledger}), '0',
	'standby: no message handled');

$primary->stop;
$standby->promote;
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'}),
	'promoted: the launcher starts');
ok($standby->poll_query_until('postgres', q{SELECT count(*) = 150 FROM ledger WHERE consumer = 'sb'}),
	'promoted: the consumer drains the replicated messages');
is($standby->safe_psql('postgres', q{SELECT count(DISTINCT id) || ',' || min(n) || ',' || max(n) FROM ledger}),
	'150,1,150', 'promoted: each message once');
$standby->stop;

note sprintf('011_consumer_faults took %.0f s', time - $t_start);
done_testing();
