# 010_consumers.pl: consumers drained by background workers, in steady state.
#
# One server with queue.max_workers = 3.  Handlers are owned by an ordinary
# role and write a ledger (one row per message per call: who ran it, in
# which process and transaction, when the call started, and how long after
# the send), so every claim below is counted from what the handlers did:
#
# - the handler runs as the consumer's owner, never as a superuser; a
#   superuser may not subscribe unless queue.allow_superuser_consumers is on;
#   once it is off again, a superuser's running worker handles nothing more,
#   a new one is refused, and queue.consumers says why;
# - at low load a committed send reaches a waiting worker's handler within a
#   second, and the same idle worker takes every send; waiting, it shows in
#   pg_stat_activity as idle in the extension's wait event;
# - DROP DATABASE of a database whose consumers have busy and idle workers
#   succeeds, and nothing is started there afterwards;
# - sampled every few milliseconds while backlogs drain, the drain workers
#   never exceed a consumer's max_concurrency nor queue.max_workers (counted
#   both in pg_stat_activity and in queue.workers), a lone consumer with a
#   backlog does reach its max_concurrency, and several consumers together
#   do reach queue.max_workers; each message is handled exactly once;
#   lowering max_concurrency (alter_consumer) or queue.max_workers (reload)
#   brings running workers down to the new cap within 2 seconds;
# - with rate_limit = 50, the handlers see 50 messages a second (within
#   10%) over a 10-second window, and queue.consumers reports that rate;
# - pause, resume and unsubscribe take effect: no handler call starts after
#   a paused consumer's workers leave, resume drains the rest exactly once,
#   unsubscribe stops the workers and the queue keeps the messages;
# - idle workers exit after queue.worker_idle_timeout (not before), and a
#   send with no worker running is handled within a second;
# - DROP EXTENSION with consumers succeeds, whether their workers wait idle
#   or one is busy in its handler, and the launcher then starts no worker
#   for the dropped consumers.
#
# Timing assertions are only those the issue asks for, on medians where a
# single stall of a shared machine could otherwise fail them.

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
	'consumers', qq{
max_worker_processes = 16
queue.max_workers = 3
queue.worker_idle_timeout = '30s'
log_line_prefix = '%m [%p] %q%a '
});

sub sql { return $node->safe_psql('postgres', shift); }

# Runs SQL as the ordinary role app, in a database (postgres by default).
sub as_app
{
	my ($query, $db) = @_;
	return $node->safe_psql($db // 'postgres', "SET ROLE app;\n$query");
}

# Waits until no drain worker runs in the server.
sub wait_no_workers
{
	my ($what) = @_;
	wait_until($node,
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'queue drain worker'},
		$what);
	return;
}

# SQL for a jsonb[] of n payloads {"n": from .. from + n - 1}, plus the
# key/value pairs in extra (SQL for jsonb_build_object's arguments).
sub payloads
{
	my ($from, $n, $extra) = @_;
	$extra = defined $extra ? ", $extra" : '';
	return qq{ARRAY(SELECT jsonb_build_object('n', g$extra)
	                FROM generate_series($from, $from + $n - 1) g)};
}

# The middle value (the lower of the two middle ones for an even count).
sub median
{
	my @v = sort { $a <=> $b } @_;
	return $v[ int($#v / 2) ];
}

# The extension, the ledger and the handler in a database.  The handler is
# owned by app (an ordinary role); it records, per message: the consumer
# (from its application_name), when the call started and how long after the
# send, who it ran as, its process and its top-level transaction; and, per
# call, how many drain workers it saw.  A payload key "sleep" makes the call
# sleep that many seconds.
sub setup_database
{
	my ($db) = @_;
	$node->safe_psql(
		$db, q{
CREATE EXTENSION queue;
CREATE TABLE ledger (
    consumer    text,
    id          bigint,
    n           int,
    attempts    int,
    call_start  timestamptz,
    lat         interval,
    super       bool,
    at          timestamptz DEFAULT clock_timestamp(),
    xact        bigint DEFAULT txid_current(),
    pid         int DEFAULT pg_backend_pid(),
    usr         name DEFAULT current_user,
    sess        name DEFAULT session_user);
CREATE TABLE conc (consumer text, at timestamptz, drain_workers int);
GRANT ALL ON ledger, conc TO app;
CREATE FUNCTION handler(msgs queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    me text := regexp_replace(current_setting('application_name'), '^queue consumer ', '');
    s float8;
BEGIN
    INSERT INTO ledger (consumer, id, n, attempts, call_start, lat, super)
    SELECT me, m.id, (m.payload->>'n')::int, m.attempts, t0, t0 - m.enqueued_at,
           (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    FROM unnest(msgs) m;
    INSERT INTO conc
    SELECT me, t0, count(*) FROM pg_stat_activity WHERE backend_type = 'queue drain worker';
    SELECT max((m.payload->>'sleep')::float8) INTO s FROM unnest(msgs) m;
    IF s > 0 THEN
        PERFORM pg_sleep(s);
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION handler(queue.message[]) OWNER TO app;
});
	return;
}

# Creates a queue readable by app and subscribes the handler to it as app.
sub subscribe
{
	my ($consumer, $queue, $args, $db) = @_;
	$args = defined $args ? ", $args" : '';
	$node->safe_psql($db // 'postgres',
		qq{SELECT queue.create('$queue'); SELECT queue.grant('$queue', 'all', 'app');});
	as_app(qq{SELECT queue.subscribe('$consumer', '$queue', 'handler(queue.message[])'$args)},
		$db);
	return;
}

sql(q{CREATE ROLE app LOGIN});
setup_database('postgres');

# Samples the drain workers every few milliseconds (pg_stat_activity and
# queue.workers, per consumer) until the ledger holds $2 rows or $3 seconds
# pass; pg_stat_clear_snapshot makes every sample fresh.
sql(q{
CREATE TABLE samples (phase text, at timestamptz, pgsa int, reg int, by_consumer jsonb);
CREATE FUNCTION sample_workers(p_phase text, p_ledger_rows bigint, p_max_secs float8)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + p_max_secs * interval '1 second';
    n int := 0;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        INSERT INTO samples
        SELECT p_phase, clock_timestamp(),
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'queue drain worker'),
               (SELECT count(*) FROM queue.workers),
               (SELECT coalesce(jsonb_object_agg(c, k), '{}')
                  FROM (SELECT coalesce(consumer_name, '?') AS c, count(*) AS k
                          FROM queue.workers GROUP BY 1) w);
        n := n + 1;
        EXIT WHEN clock_timestamp() > deadline OR (SELECT count(*) FROM ledger) >= p_ledger_rows;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN n;
END $$;
});

my $t_start = time;

# --- the handler runs as the owner; superusers ------------------------------------

note 'owner and superuser';
my ($ret, $out, $err) = $node->psql(
	'postgres', q{\set VERBOSITY verbose
SELECT queue.create('qsu');
SELECT queue.subscribe('su', 'qsu', 'handler(queue.message[])');});
isnt($ret, 0, 'a superuser may not subscribe');
like($err, qr/ERROR:\s+42501: a superuser cannot own a consumer/,
	'the refusal is SQLSTATE 42501 and says why');
like($err, qr/HINT:.*queue\.allow_superuser_consumers/,
	'the hint names queue.allow_superuser_consumers');
is(sql(q{SELECT count(*) FROM queue.consumers WHERE consumer_name = 'su'}), '0',
	'the refused subscribe created nothing');

subscribe('own', 'qown');
sql(q{SELECT queue.send('qown', '{"n": 1}')});
wait_until($node, q{SELECT count(*) = 1 FROM ledger WHERE consumer = 'own'},
	'the owner role\'s consumer handles a message');
is( sql(q{SELECT usr || ',' || sess || ',' || super FROM ledger WHERE consumer = 'own'}),
	'app,app,false',
	'the handler ran as app (current_user and session_user), not a superuser');
is( sql(q{SELECT owner FROM queue.consumers WHERE consumer_name = 'own'}),
	'app', 'queue.consumers shows app as the owner');
is( sql(q{SELECT usename || ',' || application_name FROM pg_stat_activity
		  WHERE backend_type = 'queue drain worker'}),
	'app,queue consumer own',
	'the worker shows in pg_stat_activity as app, with application_name "queue consumer own"');
as_app(q{SELECT queue.unsubscribe('own')});

$node->append_conf('postgresql.conf', 'queue.allow_superuser_consumers = on');
$node->reload;
wait_until($node, q{SELECT current_setting('queue.allow_superuser_consumers') = 'on'},
	'allow_superuser_consumers is on after the reload');
sql(q{SELECT queue.subscribe('su', 'qsu', 'handler(queue.message[])')});
sql(q{SELECT queue.send('qsu', '{"n": 1}')});
wait_until($node, q{SELECT count(*) = 1 FROM ledger WHERE consumer = 'su'},
	'with queue.allow_superuser_consumers on, a superuser\'s consumer runs');
is( sql(q{SELECT sess || ',' || super FROM ledger WHERE consumer = 'su'}),
	'postgres,true', 'and its handler runs as that superuser');

$node->adjust_conf('postgresql.conf', 'queue.allow_superuser_consumers', 'off');
$node->reload;
wait_until($node, q{SELECT current_setting('queue.allow_superuser_consumers') = 'off'},
	'allow_superuser_consumers is off again after the reload');

# A worker started while it was allowed must not go on running the handler
# as a superuser.
sql(q{SELECT queue.send('qsu', '{"n": 2}')});
sleep(2);
is(sql(q{SELECT count(*) FROM ledger WHERE consumer = 'su' AND n = 2}),
	'0', 'turned off, a running superuser worker handles no more messages');

# A new worker for it is refused, says so, and handles nothing.
sql(q{SELECT queue.pause('su')});
wait_no_workers('pausing stops the superuser consumer\'s worker');
my $offset = -s $node->logfile;
sql(q{SELECT queue.resume('su')});
sql(q{SELECT queue.send('qsu', '{"n": 3}')});
$node->wait_for_log(qr/queue consumer "su" not started: its owner is a superuser/, $offset);
pass('a new worker for the superuser\'s consumer is refused, and the log says why');
# checked a little later, so that nothing else has overwritten the reason
usleep(500_000);
like(sql(q{SELECT last_error FROM queue.consumers WHERE consumer_name = 'su'}),
	qr/superuser/, 'queue.consumers shows why it does not run');
is(sql(q{SELECT count(*) FROM ledger WHERE consumer = 'su' AND n = 3}),
	'0', 'no message is handled by a superuser once that is not allowed');
sql(q{SELECT queue.unsubscribe('su')});
wait_no_workers('no worker left after the owner checks');

# --- low load: a send reaches the handler within a second -----------------------

note 'commit to handler at low load';
subscribe('fast', 'qf', 'batch_size => 1');
sql(q{SELECT queue.send('qf', '{"n": 0}')});
wait_until($node, q{SELECT count(*) = 1 FROM ledger WHERE consumer = 'fast'},
	'first message handled');
for my $i (1 .. 5)
{
	usleep(200_000);
	sql(qq{SELECT queue.send('qf', '{"n": $i}')});
	$node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM ledger WHERE consumer = 'fast' AND n = $i})
	  or diag("message $i not handled");
}
my @lat = split /\n/,
  sql(q{SELECT extract(epoch FROM lat) FROM ledger WHERE consumer = 'fast' AND n > 0 ORDER BY n});
is(scalar(@lat), 5, 'five sends, one at a time, all handled');
note 'send to handler start, seconds: ' . join(' ', @lat);
cmp_ok(median(@lat), '<', 1.0,
	'a send reaches a waiting worker\'s handler within a second (median of five)');
is(sql(q{SELECT count(DISTINCT pid) FROM ledger WHERE consumer = 'fast'}),
	'1', 'the same idle worker took every send: it waited instead of exiting');
wait_until($node,
	q{SELECT wait_event_type = 'Extension' AND state = 'idle' FROM pg_stat_activity
	  WHERE application_name = 'queue consumer fast'},
	'the waiting worker shows in pg_stat_activity as idle, in the extension\'s wait event');
as_app(q{SELECT queue.unsubscribe('fast')});
wait_no_workers('unsubscribe ends the waiting worker');

# --- DROP DATABASE with busy and idle workers -----------------------------------

note 'DROP DATABASE';
sql('CREATE DATABASE dbx');
setup_database('dbx');
subscribe('dbx_idle', 'dbx_qi', undef, 'dbx');
subscribe('dbx_busy', 'dbx_qb', 'batch_size => 1', 'dbx');
$node->safe_psql('dbx', q{SELECT queue.send('dbx_qi', '{"n": 1}')});
$node->safe_psql('dbx',
	'SELECT queue.send_batch(\'dbx_qb\', ' . payloads(1, 1000, q{'sleep', 0.2}) . ')');
wait_until($node,
	q{SELECT count(*) = 2 FROM queue.workers
	  WHERE (consumer_name, state) IN (('dbx_idle', 'waiting'), ('dbx_busy', 'handling'))},
	'dbx: one worker waits idle, one is busy in its handler', 'dbx');
my $t_dropdb = time;
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE dbx', timeout => 60);
is($ret, 0, 'DROP DATABASE with a busy and an idle drain worker succeeds')
  or diag($err);
wait_no_workers('the dropped database\'s workers are gone');

# --- caps: max_concurrency and queue.max_workers ----------------------------------

note 'caps';
# a lone consumer: its own cap binds (the server allows 3)
subscribe('solo', 'qsolo', 'batch_size => 10, max_concurrency => 2');
my $base = sql(q{SELECT count(*) FROM ledger});
sql('SELECT queue.send_batch(\'qsolo\', ' . payloads(1, 2000, q{'sleep', 0.02}) . ')');
my $nsamples = sql(qq{SELECT sample_workers('solo', $base + 2000, 120)});
note "solo: $nsamples samples";
is(sql(q{SELECT count(*) || ',' || count(DISTINCT id) FROM ledger WHERE consumer = 'solo'}),
	'2000,2000', 'solo: 2000 messages handled, each once');
is( sql(q{SELECT max((by_consumer->>'solo')::int) FROM samples WHERE phase = 'solo'}),
	'2', 'solo: with a backlog the consumer reaches its max_concurrency (2)');
cmp_ok(sql(q{SELECT max(pgsa) FROM samples WHERE phase = 'solo'}),
	'<=', 2, 'solo: never more than 2 drain workers in pg_stat_activity');
cmp_ok(sql(q{SELECT max(reg) FROM samples WHERE phase = 'solo'}),
	'<=', 2, 'solo: never more than 2 in queue.workers');
cmp_ok(sql(q{SELECT max(drain_workers) FROM conc WHERE consumer = 'solo'}),
	'<=', 2, 'solo: no handler call saw more than 2 drain workers');
as_app(q{SELECT queue.unsubscribe('solo')});
wait_no_workers('solo: its workers leave after unsubscribe');

# several consumers wanting 2 + 2 + 1 = 5 workers: the server's cap (3) binds
subscribe('ca', 'qa', 'batch_size => 10, max_concurrency => 2');
subscribe('cb', 'qb', 'batch_size => 10, max_concurrency => 2');
subscribe('cc', 'qc', 'batch_size => 10, max_concurrency => 1');
$base = sql(q{SELECT count(*) FROM ledger});
sql(    "BEGIN;\n"
	  . join('',
		map { "SELECT queue.send_batch('$_', " . payloads(1, 1500, q{'sleep', 0.02}) . ");\n" }
		  qw(qa qb qc))
	  . "COMMIT;");
$nsamples = sql(qq{SELECT sample_workers('abc', $base + 4500, 120)});
note "abc: $nsamples samples";
is( sql(q{SELECT string_agg(consumer || ':' || k || ':' || d, ',' ORDER BY consumer)
		  FROM (SELECT consumer, count(*) k, count(DISTINCT id) d FROM ledger
		        WHERE consumer IN ('ca', 'cb', 'cc') GROUP BY consumer) s}),
	'ca:1500:1500,cb:1500:1500,cc:1500:1500',
	'abc: every message of the three queues handled, each once');
my ($max_pgsa, $max_reg) =
  split /\|/, sql(q{SELECT max(pgsa), max(reg) FROM samples WHERE phase = 'abc'});
cmp_ok($max_pgsa, '<=', 3, "abc: never more than queue.max_workers (3) drain workers in pg_stat_activity (max $max_pgsa)");
cmp_ok($max_reg, '<=', 3, "abc: never more than 3 in queue.workers (max $max_reg)");
cmp_ok(sql(q{SELECT max(drain_workers) FROM conc WHERE consumer IN ('ca', 'cb', 'cc')}),
	'<=', 3, 'abc: no handler call saw more than 3 drain workers');
is($max_reg, '3', 'abc: the backlog does fill queue.max_workers');
for my $c ([ 'ca', 2 ], [ 'cb', 2 ], [ 'cc', 1 ])
{
	cmp_ok(
		sql(qq{SELECT coalesce(max((by_consumer->>'$c->[0]')::int), 0) FROM samples WHERE phase = 'abc'}),
		'<=', $c->[1], "abc: $c->[0] never above its max_concurrency ($c->[1])");
}
as_app(q{SELECT queue.unsubscribe('ca'); SELECT queue.unsubscribe('cb'); SELECT queue.unsubscribe('cc')});
wait_no_workers('abc: the workers leave after unsubscribe');

# --- lowering the caps while workers run --------------------------------------------

# A consumer's workers never idle while its backlog lasts, so a lowered cap
# must be enforced on running workers, not only on new ones.
note 'lowering the caps';
subscribe('lower', 'qlow', 'batch_size => 10, max_concurrency => 3');
sql('SELECT queue.send_batch(\'qlow\', ' . payloads(1, 5000, q{'sleep', 0.1}) . ')');
wait_until($node, q{SELECT count(*) = 3 FROM queue.workers WHERE consumer_name = 'lower'},
	'lower: the consumer runs 3 workers');
my $t_lower = (split /\n/,
	as_app(q{SELECT queue.alter_consumer('lower', max_concurrency => 1); SELECT clock_timestamp()}))[-1];
sql(q{SELECT sample_workers('lower_mc', 1e9::bigint, 5)});
cmp_ok(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 'qlow'}),
	'>', 0, 'lower: the backlog lasts through the samples');
cmp_ok(
	sql(qq{SELECT max((by_consumer->>'lower')::int) FROM samples
	       WHERE phase = 'lower_mc' AND at > timestamptz '$t_lower' + interval '2 s'}),
	'<=', 1, 'lower: 2 s after max_concurrency drops to 1, one worker is left');
as_app(q{SELECT queue.alter_consumer('lower', max_concurrency => 3)});
wait_until($node, q{SELECT count(*) = 3 FROM queue.workers WHERE consumer_name = 'lower'},
	'lower: back to 3 workers');
$node->append_conf('postgresql.conf', 'queue.max_workers = 1');
$node->reload;
wait_until($node, q{SELECT current_setting('queue.max_workers') = '1'}, 'queue.max_workers is 1 after the reload');
my $t_reload = sql(q{SELECT clock_timestamp()});
sql(q{SELECT sample_workers('lower_mw', 1e9::bigint, 5)});
cmp_ok(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 'qlow'}),
	'>', 0, 'lower: the backlog still lasts');
cmp_ok(
	sql(qq{SELECT max(pgsa) FROM samples
	       WHERE phase = 'lower_mw' AND at > timestamptz '$t_reload' + interval '2 s'}),
	'<=', 1, 'lower: 2 s after queue.max_workers drops to 1, one drain worker is left');
$node->append_conf('postgresql.conf', 'queue.max_workers = 3');
$node->reload;
wait_until($node, q{SELECT current_setting('queue.max_workers') = '3'}, 'queue.max_workers is 3 again');
as_app(q{SELECT queue.unsubscribe('lower')});
wait_no_workers('lower: the workers leave after unsubscribe');
is(sql(q{SELECT count(*) = count(DISTINCT id) FROM ledger WHERE consumer = 'lower'}),
	't', 'lower: no message handled twice');

# --- rate limit --------------------------------------------------------------------

note 'rate limit';
subscribe('rated', 'qr', 'batch_size => 5, max_concurrency => 2, rate_limit => 50');
sql('SELECT queue.send_batch(\'qr\', ' . payloads(1, 700) . ')');
wait_until($node,
	q{SELECT max(at) - min(at) >= interval '11.5 s' FROM ledger WHERE consumer = 'rated'},
	'rated: drained for more than 11 seconds');
my $observed = sql(q{SELECT observed_rate FROM queue.consumers WHERE consumer_name = 'rated'});
my $in_window = sql(
	q{SELECT count(*) FROM ledger, (SELECT min(at) AS t0 FROM ledger WHERE consumer = 'rated') f
	  WHERE consumer = 'rated' AND at >= t0 + interval '1 s' AND at < t0 + interval '11 s'});
note "rated: $in_window messages in the 10 s window, observed_rate $observed";
cmp_ok($in_window, '>=', 450, 'rated: at least 90% of 50/s over a 10 s window');
cmp_ok($in_window, '<=', 550, 'rated: at most 110% of 50/s over a 10 s window');
cmp_ok(abs($observed - 50), '<=', 5, "rated: queue.consumers shows an observed_rate within 10% of 50 ($observed)");
as_app(q{SELECT queue.unsubscribe('rated')});
wait_no_workers('rated: the workers leave after unsubscribe');
is(sql(q{SELECT count(DISTINCT id) = count(*) FROM ledger WHERE consumer = 'rated'}),
	't', 'rated: no message handled twice');

# --- pause, resume, unsubscribe -------------------------------------------------------

note 'pause, resume, unsubscribe';
subscribe('pr', 'qp', 'batch_size => 5, max_concurrency => 2');
sql('SELECT queue.send_batch(\'qp\', ' . payloads(1, 600, q{'sleep', 0.1}) . ')');
wait_until($node, q{SELECT count(*) >= 50 FROM ledger WHERE consumer = 'pr'},
	'pr: draining');
my $t_pause = sql(q{SELECT queue.pause('pr'); SELECT clock_timestamp()});
$t_pause = (split /\n/, $t_pause)[-1];
wait_until($node,
	q{SELECT (SELECT count(*) FROM queue.workers WHERE consumer_name = 'pr') = 0
	     AND (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'queue consumer pr') = 0},
	'pause: the workers leave');
my $t_gone = sql(q{SELECT clock_timestamp()});
is(sql(q{SELECT state || ',' || paused FROM queue.consumers WHERE consumer_name = 'pr'}),
	'paused,true', 'pause: queue.consumers shows the consumer paused');
cmp_ok(
	sql(qq{SELECT count(DISTINCT (pid, call_start)) FROM ledger
	       WHERE consumer = 'pr' AND call_start > '$t_pause'}),
	'<=', 2, 'pause: at most one batch per worker starts after the pause commits');
my $paused_count = sql(q{SELECT count(*) FROM ledger WHERE consumer = 'pr'});
sleep(2);
is(sql(qq{SELECT count(*) FROM ledger WHERE consumer = 'pr' AND call_start > '$t_gone'}),
	'0', 'pause: no handler call while paused');
is(sql(q{SELECT count(*) FROM ledger WHERE consumer = 'pr'}),
	$paused_count, 'pause: the ledger does not move');
is(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 'qp'}),
	600 - $paused_count, 'pause: the rest waits in the queue');

sql(q{SELECT queue.resume('pr')});
wait_until($node, q{SELECT count(*) = 600 FROM ledger WHERE consumer = 'pr'},
	'resume: the rest is drained');
is(sql(q{SELECT count(DISTINCT id) || ',' || min(n) || ',' || max(n) FROM ledger WHERE consumer = 'pr'}),
	'600,1,600', 'resume: every message handled exactly once');
wait_until($node, q{SELECT messages = 0 FROM queue.queues WHERE queue_name = 'qp'},
	'resume: the queue is empty');

sql('SELECT queue.send_batch(\'qp\', ' . payloads(601, 600, q{'sleep', 0.1}) . ')');
wait_until($node, q{SELECT count(*) >= 650 FROM ledger WHERE consumer = 'pr'},
	'pr: draining again');
my $t_unsub = sql(q{SELECT queue.unsubscribe('pr'); SELECT clock_timestamp()});
$t_unsub = (split /\n/, $t_unsub)[-1];
wait_until($node,
	q{SELECT (SELECT count(*) FROM queue.workers WHERE consumer_name = 'pr') = 0
	     AND (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'queue consumer pr') = 0},
	'unsubscribe: the workers leave');
cmp_ok(
	sql(qq{SELECT count(DISTINCT (pid, call_start)) FROM ledger
	       WHERE consumer = 'pr' AND call_start > '$t_unsub'}),
	'<=', 2, 'unsubscribe: at most one batch per worker starts after it commits');
my $handled = sql(q{SELECT count(*) FROM ledger WHERE consumer = 'pr'});
sleep(2);
is(sql(q{SELECT count(*) FROM ledger WHERE consumer = 'pr'}),
	$handled, 'unsubscribe: no handler call afterwards');
is(sql(q{SELECT count(*) FROM queue.consumers WHERE consumer_name = 'pr'}),
	'0', 'unsubscribe: the consumer is gone from queue.consumers');
is(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 'qp'}),
	1200 - $handled, 'unsubscribe: the queue keeps the messages not handled');
is( sql(q{SELECT count(*) || ',' || count(l.id) FROM queue.read('qp', 10000) r
		  LEFT JOIN ledger l ON l.id = r.id}),
	(1200 - $handled) . ',0',
	'unsubscribe: they can be read, and none of them was handled');

# --- idle workers exit; a send with no worker running -------------------------------

note 'idle timeout';
$node->append_conf('postgresql.conf', q{queue.worker_idle_timeout = '1500ms'});
$node->reload;
wait_until($node, q{SELECT current_setting('queue.worker_idle_timeout') = '1500ms'},
	'worker_idle_timeout is 1.5 s after the reload');
subscribe('idler', 'qi', 'batch_size => 1');
sql('SELECT queue.send_batch(\'qi\', ' . payloads(1, 20) . ')');
wait_until($node, q{SELECT count(*) = 20 FROM ledger WHERE consumer = 'idler'},
	'idler: 20 messages handled');
wait_until($node, q{SELECT count(*) = 0 FROM queue.workers WHERE consumer_name = 'idler'},
	'idler: the idle worker exits');
my $t_exit = time;
my $idle_for = sql(q{SELECT extract(epoch FROM clock_timestamp() - max(at)) FROM ledger WHERE consumer = 'idler'});
cmp_ok($idle_for, '>=', 1.0,
	"idler: the worker waited out its idle timeout before it left ($idle_for s after its last message)");
is(sql(q{SELECT state FROM queue.consumers WHERE consumer_name = 'idler'}),
	'idle', 'idler: queue.consumers shows the consumer idle');

# no worker runs: the launcher must start one on the commit
my @cold;
for my $i (1 .. 3)
{
	$node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'queue consumer idler'})
	  or diag('idler worker does not exit');
	my $n = 100 + $i;
	sql(qq{SELECT queue.send('qi', '{"n": $n}')});
	$node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM ledger WHERE consumer = 'idler' AND n = $n})
	  or diag("message $n not handled");
	push @cold, sql(qq{SELECT extract(epoch FROM lat) FROM ledger WHERE consumer = 'idler' AND n = $n});
}
note 'send to handler start with no worker running, seconds: ' . join(' ', @cold);
is(scalar(grep { $_ ne '' } @cold), 3, 'idler: three sends with no worker running, all handled');
cmp_ok(median(@cold), '<', 1.0,
	'a send with no worker running is handled within a second (median of three)');
as_app(q{SELECT queue.unsubscribe('idler')});
wait_no_workers('idler: gone after unsubscribe');

# --- DROP DATABASE, afterwards --------------------------------------------------------

# The launcher stays away from a database being dropped for 30 s; after that
# it must not try to start the dropped consumers' workers.
my $left = 35 - (time - $t_dropdb);
sleep($left) if $left > 0;
ok(!$node->log_contains(qr/FATAL:\s+database \d+ does not exist/),
	'DROP DATABASE: no worker is started for the dropped database\'s consumers afterwards');

# --- DROP EXTENSION with idle and with busy workers ----------------------------------

note 'DROP EXTENSION';
$node->append_conf('postgresql.conf', q{queue.worker_idle_timeout = '10s'});
$node->reload;
wait_until($node, q{SELECT current_setting('queue.worker_idle_timeout') = '10s'},
	'worker_idle_timeout is 10 s');

# idle workers must not stand in the way
sql('CREATE DATABASE dby');
setup_database('dby');
subscribe('dby_idle', 'dby_qi', undef, 'dby');
subscribe('dby_idle2', 'dby_qi2', undef, 'dby');
$node->safe_psql('dby',
	q{SELECT queue.send('dby_qi', '{"n": 1}'); SELECT queue.send('dby_qi2', '{"n": 1}')});
wait_until($node,
	q{SELECT count(*) = 2 FROM queue.workers
	  WHERE consumer_name IN ('dby_idle', 'dby_idle2') AND state = 'waiting'},
	'dby: two workers wait idle', 'dby');
($ret, $out, $err) =
  $node->psql('dby', 'DROP EXTENSION queue CASCADE', timeout => 60);
is($ret, 0, 'DROP EXTENSION with consumers whose workers wait idle succeeds')
  or diag($err);
wait_until($node,
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'queue drain worker' AND datname = 'dby'},
	'DROP EXTENSION: the idle workers leave');

# a busy worker: the DROP may wait for its batch, but must succeed
sql('CREATE DATABASE dbz');
setup_database('dbz');
subscribe('dbz_busy', 'dbz_qb', 'batch_size => 1', 'dbz');
$node->safe_psql('dbz',
	'SELECT queue.send_batch(\'dbz_qb\', ' . payloads(1, 1000, q{'sleep', 0.2}) . ')');
wait_until($node,
	q{SELECT count(*) = 1 FROM queue.workers WHERE consumer_name = 'dbz_busy' AND state = 'handling'},
	'dbz: a worker is busy in its handler', 'dbz');
($ret, $out, $err) =
  $node->psql('dbz', 'DROP EXTENSION queue CASCADE', timeout => 60);
is($ret, 0, 'DROP EXTENSION with a consumer whose worker is busy succeeds')
  or diag($err);
wait_until($node,
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'queue drain worker' AND datname = 'dbz'},
	'DROP EXTENSION: the busy worker leaves');

# Every worker the postmaster starts from now on is logged at DEBUG1: none
# may be started for the dropped consumers.
sql(q{ALTER SYSTEM SET log_min_messages = debug1});
$node->reload;
wait_until($node, q{SELECT current_setting('log_min_messages') = 'debug1'}, 'debug1 logging on');
$offset = -s $node->logfile;
sleep(3);
sql(q{ALTER SYSTEM RESET log_min_messages});
$node->reload;
wait_until($node, q{SELECT current_setting('log_min_messages') = 'warning'}, 'debug1 logging off');
my $log = slurp_file($node->logfile, $offset);
my $idle_starts = () = $log =~ /starting background worker process "queue drain worker for dby_idle/g;
my $busy_starts = () = $log =~ /starting background worker process "queue drain worker for dbz_busy/g;
is($idle_starts, 0,
	'DROP EXTENSION: no worker is started afterwards for the consumers that were idle');
is($busy_starts, 0,
	'DROP EXTENSION: no worker is started afterwards for the consumer that was busy');

# the database works with the extension created anew
$node->safe_psql('dby', 'CREATE EXTENSION queue');
is($node->safe_psql('dby', q{SELECT count(*) FROM queue.consumers}),
	'0', 'CREATE EXTENSION again: no consumer left over');

ok(!$node->log_contains(qr/PANIC|TRAP:|terminated by signal/),
	'no crash in the server log');
note sprintf('010_consumers took %.0f s', time - $t_start);
$node->stop;
done_testing();
