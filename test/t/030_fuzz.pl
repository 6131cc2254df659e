
# 030_fuzz.pl: hostile input.  Several clients call the whole SQL API at
# random, with adversarial arguments, for FUZZ_SECONDS (default 25), while
# the test checks the server every round (FUZZ_ROUND seconds, default 2).
#
# Arguments: injection strings (x'; DROP TABLE victim; --, quotes, $$,
# backslashes, dots), NULLs, empty, long (48, 49, 64, 10,000 characters) and
# non-ASCII names, upper case, names of internal tables, payloads that are
# JSON scalars, deeply nested or above queue.max_payload_size, headers that
# are not objects, negative, zero, enormous and month-sized intervals,
# numbers at the edges of int4 and int8, ids past 2^31 and near 2^63,
# random and stale receipts, arrays of different lengths, handler
# signatures that do not exist or do not fit, unknown roles and
# privileges; some calls run in a transaction that rolls back, some in
# REPEATABLE READ.  Clients: two superusers and one ordinary role (which
# owns queues and consumers of its own, whose workers really run).
#
# Each round, and at the end:
# - no backend crashed: the server log has no "terminated by signal",
#   PANIC or TRAP (a crash restart keeps pg_postmaster_start_time(), so
#   the log is what shows it; the clients also lose their connections),
#   and pg_postmaster_start_time() is unchanged (no full restart);
# - no unexpected object appeared: the counts of pg_proc and pg_namespace
#   rows, and of pg_class and pg_type rows outside queue_internal and
#   pg_toast, are those after setup; inside them they grow by exactly what
#   one queue creates (measured with a probe queue) times the queues that
#   exist; the canary table public.victim is still there.
# Every call must succeed or fail with one of the allowed SQLSTATEs below
# (any other, XX000 above all, fails the test, with the call shown).
# At the end, for the ledger queues fz_a (FIFO, max_attempts 1,
# dead-lettering into fz_dlq) and fz_b (fair), on which the clients send, read, pop, ack (single
# and array), nack, extend, archive, redrive and recycle but never drop,
# purge, rename or repoint (and whose 64kB segments, closed after 300 ms,
# are recycled all the time): every id a send returned is in exactly one
# place (acknowledged by an ack or pop that returned it, the archive, the
# dead-letter queue, or a queue's tables), no id turns up that no send
# returned, no id was acknowledged twice; and each queue's messages counter
# (queue.queues, shared memory) equals the rows its tables hold.
#
# FUZZ_SEED makes a run repeatable (the seed is printed either way).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;
use IPC::Run;
use Data::Dumper;
use POSIX ();
use File::Spec;
use Time::HiRes qw(time usleep);

my $seconds = $ENV{FUZZ_SECONDS} // 25;
my $round = $ENV{FUZZ_ROUND} // 2;
my $seed = $ENV{FUZZ_SEED} // (time() * 1000 % 1_000_000_000);
note("fuzz seed $seed, $seconds s");

# SQLSTATEs a hostile call may legitimately get.  The API's own (Section 7
# of the design and the README's table), the casts of the arguments the
# driver writes (an int4 argument past its range, a regprocedure or regrole
# that does not exist), and the concurrency outcomes of DDL racing DDL.
my %allowed = map { $_ => 1 } qw(
  22023 42602 42704 42710 42501 54000 2BP01 0A000 42P13 55000
  22P02 22P05 22003 22008 22015 22007 2200H 22004
  42883 42601 3F000 42725 54001
  57014 40001 40P01 55P03 25006
);

my $node = queue_node(
	'fuzz', qq{
max_connections = 40
max_worker_processes = 16
queue.max_workers = 3
queue.worker_idle_timeout = '2s'
# small, short-lived segments, so that recycling (messages moved forward,
# segments truncated) runs under the clients all the time
queue.segment_size = '64kB'
queue.segment_age = '300ms'
# LOG (crashes, restarts) and above; not the thousands of expected ERRORs
log_min_messages = log
log_statement = none
});

sub sql { return $node->safe_psql('postgres', shift); }

sql(q{
CREATE EXTENSION queue;
CREATE TABLE public.victim (x int);
CREATE ROLE fuzzer LOGIN;
GRANT EXECUTE ON FUNCTION queue.create TO fuzzer;
SELECT queue.create('fz_dlq');
SELECT queue.create('fz_a', max_attempts => 1, dead_letter_queue => 'fz_dlq',
                    visibility_timeout => '1 second', fifo => true);
SELECT queue.create('fz_b', visibility_timeout => '1 second', fair => true);
SELECT queue.grant(q, 'all', 'fuzzer') FROM unnest('{fz_a,fz_b,fz_dlq}'::text[]) q;
CREATE FUNCTION public.fz_handler(messages queue.message[]) RETURNS void
  LANGUAGE sql AS 'SELECT';
CREATE FUNCTION public.fz_failing(messages queue.message[]) RETURNS bigint[]
  LANGUAGE sql AS 'SELECT array_agg(m.id) FROM unnest(messages) m';
CREATE FUNCTION public.fz_wrong(messages queue.message[]) RETURNS int
  LANGUAGE sql AS 'SELECT 1';
ALTER FUNCTION public.fz_handler(queue.message[]) OWNER TO fuzzer;
ALTER FUNCTION public.fz_failing(queue.message[]) OWNER TO fuzzer;
});

# --- object counts ------------------------------------------------------------

my $counts_sql = q{
SELECT (SELECT count(*) FROM pg_proc),
       (SELECT count(*) FROM pg_namespace),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('queue_internal', 'pg_toast')),
       (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname NOT IN ('queue_internal', 'pg_toast')),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('queue_internal', 'pg_toast')),
       (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname IN ('queue_internal', 'pg_toast')),
       (SELECT count(*) FROM queue_internal.queue),
       (SELECT count(*) FROM pg_class WHERE oid = 'public.victim'::regclass),
       (SELECT count(*) FROM queue_internal.queue WHERE fifo AND NOT fair),
       (SELECT count(*) FROM queue_internal.queue WHERE fair AND NOT fifo),
       (SELECT count(*) FROM queue_internal.queue WHERE fifo AND fair)
};

sub counts { return split /\|/, sql($counts_sql); }

my @base = counts();
sql(q{SELECT queue.create('fz_probe')});
my @probe = counts();
sql(q{SELECT queue.drop('fz_probe')});
my @after_probe = counts();
is("@after_probe", "@base", 'creating and dropping a queue leaves the catalogs as they were');
my $rel_per_queue = $probe[4] - $base[4];
my $type_per_queue = $probe[5] - $base[5];
cmp_ok($rel_per_queue, '>', 0, "one queue creates $rel_per_queue relations");
# FIFO and fair queues have more indexes: what each kind adds, measured too
my @extra_rel;
for my $kind ('fifo => true', 'fair => true', 'fifo => true, fair => true')
{
	sql("SELECT queue.create('fz_probe', $kind)");
	my @c = counts();
	sql(q{SELECT queue.drop('fz_probe')});
	push @extra_rel, $c[4] - $probe[4];
}

# What is wrong with the catalogs now, or '' when nothing is.
sub catalog_problems
{
	my @c = counts();
	my @p;
	push @p, "pg_proc $base[0] -> $c[0]" if $c[0] != $base[0];
	push @p, "pg_namespace $base[1] -> $c[1]" if $c[1] != $base[1];
	push @p, "pg_class outside queue_internal $base[2] -> $c[2]" if $c[2] != $base[2];
	push @p, "pg_type outside queue_internal $base[3] -> $c[3]" if $c[3] != $base[3];
	my $nq = $c[6] - $base[6];
	my $want_rel = $base[4] + $rel_per_queue * $nq;
	$want_rel += $extra_rel[$_] * ($c[8 + $_] - $base[8 + $_]) for 0 .. 2;
	my $want_type = $base[5] + $type_per_queue * $nq;
	push @p, "queue_internal relations $c[4], expected $want_rel for $c[6] queues"
	  if $c[4] != $want_rel;
	push @p, "queue_internal types $c[5], expected $want_type for $c[6] queues"
	  if $c[5] != $want_type;
	push @p, 'public.victim is gone' if $c[7] != 1;
	return join('; ', @p);
}

my $pm_start = sql('SELECT pg_postmaster_start_time()');
my $log_pos = -s $node->logfile;

# What the server log shows of a crash since setup, or ''.
sub crash_in_log
{
	my $log = slurp_file($node->logfile, $log_pos);
	my @lines = grep { /terminated by signal|PANIC|TRAP:|server process .* was terminated/ }
	  split /\n/, $log;
	return join("\n", @lines[ 0 .. ($#lines < 4 ? $#lines : 4) ]);
}

# --- the hostile arguments --------------------------------------------------------

# SQL literal of a string (standard_conforming_strings is on), or NULL.
sub lit
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub pick { return $_[ int(rand(@_)) ]; }

my @evil_names = (
	q{x'; DROP TABLE victim; --}, q{x"; DROP TABLE victim; --},
	q{Robert'); DROP TABLE victim;--}, q{a'||pg_sleep(10)||'},
	q{$$; DROP TABLE victim; $$}, q{\\'; DROP TABLE victim; --},
	'', ' ', 'a b', 'A', 'Fz_a', '1abc', '_', '__', 'a' x 48, 'b' x 49,
	'c' x 63, 'd' x 64, 'e' x 10000, "\xc3\x84\xc3\x96", "\xe9\x98\x9f\xe5\x88\x97",
	"tab\there", "new\nline", 'q1', 'a1', 'queue_internal.q1', 'pg_class',
	'public.victim', 'fz_a.x', 'fz_a;', 'fz_a ', ' fz_a', '%s%n%x', 'null',
	'x' . ("'" x 30), '"fz_a"', 'FZ_A', "fz_a\xe2\x80\x8b",
);
my @scratch = map { "fz_s$_" } 1 .. 6;
my @consumers = map { "fz_c$_" } 1 .. 4;
my @ledger_queues = ('fz_a', 'fz_b');

# A queue name: scratch, ledger (when allowed), adversarial or NULL.
sub qname
{
	my ($ledger_ok) = @_;
	my $r = rand;
	return pick(@ledger_queues) if $ledger_ok && $r < 0.45;
	return pick(@scratch) if $r < 0.75;
	return undef if $r < 0.78;
	return pick(@evil_names);
}

sub cname
{
	my $r = rand;
	return pick(@consumers) if $r < 0.7;
	return undef if $r < 0.73;
	return pick(@evil_names);
}

my @bigints = (
	0, 1, -1, 2, 100, 2147483647, 2147483648, 2147483649, -2147483648, -2147483649,
	4294967296, 9007199254740993, '9223372036854775807', '9223372036854775806',
	'-9223372036854775808', '-9223372036854775807',
);

sub bigint
{
	my $r = rand;
	return 'NULL' if $r < 0.05;
	return int(rand(1_000_000)) if $r < 0.3;
	return pick(@bigints);
}

sub int4
{
	my $r = rand;
	return 'NULL' if $r < 0.05;
	return int(rand(20)) if $r < 0.5;
	return pick(0, -1, 1, 10000, 10001, 1000, 1001, 100000, 2147483647, -2147483648);
}

my @intervals = (
	'0', '1 microsecond', '-1 microsecond', '10 milliseconds', '9 milliseconds',
	'1 second', '-1 second', '2 seconds', '1 minute', '5 minutes', '5 minutes 1 microsecond',
	'12 hours', '12 hours 1 second', '1 hour', '61 minutes', '7 days', '8 days',
	'1 month', '-1 month', '100 years', '-100 years', '178000000 years',
	'2147483647 days', '-2147483648 days', '2147483647 hours', '1 day -1 second',
	'1 mon -30 days',
);

sub interval
{
	my $r = rand;
	return 'NULL' if $r < 0.08;
	return lit(pick(@intervals)) . '::interval';
}

sub boolean { return pick('true', 'false', 'NULL'); }

# Priorities: mostly in range (0 to 32767), some past either end or NULL.
sub priority
{
	return pick(0, 1, 7, 32767, 32768, -1, 'NULL', 2147483647) if rand() < 0.3;
	return int(rand(10));
}

my $huge = '"' . ('x' x (1024 * 1024 + 10)) . '"';

sub payload
{
	my $r = rand;
	return lit('{"n": ' . int(rand(1000)) . '}') . '::jsonb' if $r < 0.6;
	return 'NULL' if $r < 0.63;
	return lit($huge) . '::jsonb' if $r < 0.64;
	return lit(('[' x 5000) . (']' x 5000)) . '::jsonb' if $r < 0.65;
	return lit(pick(
		'{}', '[]', 'null', '0', '"s"', 'true', '{"a": "\u0000"}', q{{"k": "x'; DROP TABLE victim; --"}},
		'{"\u00e4": "\u961f"}', '{"n": 1e308}', '{"a": {"b": {"c": [1, 2, {"d": null}]}}}',
	)) . '::jsonb';
}

sub headers
{
	my $r = rand;
	return 'NULL' if $r < 0.5;
	return lit(pick('{}', '{"h": 1}', '[]', '"s"', 'null', '1', q{{"x": "y'z"}})) . '::jsonb';
}

sub text_arg
{
	my $r = rand;
	return 'NULL' if $r < 0.3;
	return lit('k' . int(rand(50))) if $r < 0.6;
	return lit('x' x 257) if $r < 0.65;
	return lit(pick(@evil_names));
}

sub role_arg
{
	return lit(pick('fuzzer', 'postgres', 'public', 'PUBLIC', 'nobody', '', q{x'; DROP ROLE fuzzer; --},
			'pg_read_all_data', 'e' x 70)) . '::regrole';
}

sub handler_arg
{
	return lit(pick(
		'public.fz_handler(queue.message[])', 'public.fz_failing(queue.message[])',
		'public.fz_wrong(queue.message[])', 'public.fz_handler(queue.message)',
		'pg_catalog.now()', 'public.nope(queue.message[])', 'fz_handler(int)',
		q{x'; DROP TABLE victim; --()}, 'nosuchschema.f(queue.message[])',
		'queue.send(text,jsonb,interval,jsonb,text,text,integer)',
	)) . '::regprocedure';
}

# An array literal of n elements made by $gen.
sub array_of
{
	my ($type, $n, $gen) = @_;
	return "ARRAY[" . join(', ', map { $gen->() } 1 .. $n) . "]::$type\[]";
}

# Named arguments, each present with probability 0.7.
sub named
{
	my @pairs = @_;
	my @out;
	while (my ($k, $v) = splice(@pairs, 0, 2))
	{
		push @out, "$k => " . $v->() if rand() < 0.7;
	}
	return @out ? ', ' . join(', ', @out) : '';
}

# --- one client ---------------------------------------------------------------------

# A psql session driven line by line; every statement's stdout and stderr
# come back separately, stderr with the SQLSTATE (VERBOSITY verbose).
sub session
{
	my ($user) = @_;
	my $s = { stdin => '', stdout => '', stderr => '', n => 0 };
	$s->{timer} = IPC::Run::timeout(120);
	$s->{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres') . " user=$user" ],
		'<', \$s->{stdin}, '>', \$s->{stdout}, '2>', \$s->{stderr}, $s->{timer});
	run_sql($s, "\\set VERBOSITY verbose\nSET statement_timeout = '3s';");
	return $s;
}

# Runs SQL in the session; returns (stdout, stderr), or dies when psql ended
# (its connection lost) or hung.
sub run_sql
{
	my ($s, $sql) = @_;
	my $m = '__fuzz_' . $s->{n}++ . '__';
	$s->{stdin} .= "$sql\n\\echo $m\n\\warn $m\n";
	$s->{timer}->start(120);
	while ($s->{stdout} !~ /^$m$/m || $s->{stderr} !~ /^$m$/m)
	{
		die "psql exited\n" unless $s->{h}->pumpable;
		$s->{h}->pump;
	}
	my ($out, $err) = ($s->{stdout}, $s->{stderr});
	$s->{stdout} = $s->{stderr} = '';
	$out =~ s/^$m\n//m;
	$err =~ s/^$m\n//m;
	return ($out, $err);
}

# Runs a client for $seconds; writes what it saw to $file, as Perl.
sub client
{
	my ($idx, $user, $file) = @_;
	srand($seed + $idx);
	my %r = (calls => 0, states => {}, unexpected => {}, sent => {}, acked => {},
		acked_twice => [], died => '');
	my @leases;    # [queue, id, receipt] from reads of ledger queues
	my $s = session($user);
	my $end = time + $seconds;

	my $lease = sub {
		return @leases ? $leases[ int(rand(@leases)) ] : [ 'fz_a', bigint(), bigint() ];
	};
	# id and receipt: a real lease, a stale or mangled one, or random numbers
	my $id_receipt = sub {
		my $l = $lease->();
		my $r = rand;
		return ($l->[0], $l->[1], $l->[2]) if $r < 0.6;
		return ($l->[0], $l->[1], bigint()) if $r < 0.8;
		return (qname(1), bigint(), bigint());
	};

	# Each: [name, weight, sub returning (sql, kind, queue)], where kind says
	# what the output holds: ids (sent), lease (id|receipt rows read), popped
	# (ids acknowledged), acked_if_t (one boolean for one id), acked (ids).
	my @calls = (
		[ 'create', 3, sub {
			my $q = rand() < 0.8 ? pick(@scratch) : qname(0);
			return ("SELECT queue.create(" . lit($q) . named(logged => \&boolean) . ")") if rand() < 0.5;
			("SELECT queue.create(" . lit($q) . named(
				logged => \&boolean, visibility_timeout => \&interval,
				max_attempts => sub { pick(1, 0, -1, 1000, 1001, 3, 'NULL', 2147483647) },
				dead_letter_queue => sub { lit(rand() < 0.5 ? pick(@scratch) : qname(0)) },
				retention => \&interval, dedup_window => \&interval,
				fifo => \&boolean, fair => \&boolean) . ")");
		} ],
		[ 'alter', 2, sub {
			("SELECT queue.alter(" . lit(qname(0)) . named(
				visibility_timeout => \&interval,
				max_attempts => sub { pick(1, 0, -5, 1000, 1001, 'NULL') },
				dead_letter_queue => sub { lit(rand() < 0.6 ? pick(@scratch) : qname(0)) },
				retention => \&interval,
				rename_to => sub { lit(rand() < 0.7 ? pick(@scratch) : qname(0)) },
				reset => sub { pick(q{'{max_attempts}'}, q{'{dead_letter_queue,retention}'},
						q{'{nope}'}, q{'{}'}, 'NULL', q{'{NULL}'}, q{ARRAY['x''; DROP TABLE victim; --']}) },
				logged => \&boolean, dedup_window => \&interval) . ")");
		} ],
		[ 'drop', 2, sub { ("SELECT queue.drop(" . lit(qname(0)) . named(if_exists => \&boolean) . ")") } ],
		[ 'purge', 1, sub { ("SELECT queue.purge(" . lit(qname(0)) . ")") } ],
		[ 'grant', 1, sub {
			my $f = pick('grant', 'revoke');
			my $q = qname(0);
			("SELECT queue.$f(" . lit($q) . ', ' . lit(pick('send', 'read', 'administer', 'all', 'ALL', '', 'select', undef))
				  . ', ' . role_arg() . ")");
		} ],
		[ 'send', 12, sub {
			my $q = qname(1);
			("SELECT queue.send(" . lit($q) . ', ' . payload() . named(
				delay => \&interval, headers => \&headers, group_key => \&text_arg,
				dedup_key => \&text_arg, priority => \&priority) . ")", 'ids', $q);
		} ],
		[ 'send_batch', 8, sub {
			my $q = qname(1);
			my $n = pick(0, 1, 2, 5, 30);
			my $payloads = rand() < 0.05 ? 'NULL' : rand() < 0.05 ? 'ARRAY[NULL]::jsonb[]'
			  : array_of('jsonb', $n, sub { rand() < 0.97 ? lit('{"b": ' . int(rand(100)) . '}') : payload() });
			my $keys = sub {
				my $m = rand() < 0.7 ? $n : pick(0, 1, $n + 1);
				return rand() < 0.2 ? 'NULL' : array_of('text', $m, \&text_arg);
			};
			("SELECT queue.send_batch(" . lit($q) . ", $payloads" . named(
				delay => \&interval, headers => \&headers, group_key => \&text_arg,
				dedup_keys => $keys, priority => \&priority) . ")", 'ids', $q);
		} ],
		[ 'read', 12, sub {
			my $q = qname(1);
			my $args = named(max_messages => \&int4,
				visibility_timeout => sub { rand() < 0.5 ? lit(pick('0', '1 second', '2 seconds')) . '::interval' : interval() },
				wait => sub { rand() < 0.8 ? "'0'::interval" : lit(pick('100 milliseconds', '1 hour', '-1 second', '2 hours')) . '::interval' });
			my $tx = rand() < 0.05 ? 'BEGIN ISOLATION LEVEL REPEATABLE READ; ' : '';
			my $sql = "${tx}SELECT id || '|' || receipt FROM queue.read(" . lit($q) . "$args)";
			$sql .= '; COMMIT' if $tx;
			($sql, 'lease', $q);
		} ],
		[ 'pop', 3, sub {
			my $q = qname(1);
			("SELECT id FROM queue.pop(" . lit($q) . named(max_messages => \&int4) . ")", 'popped', $q);
		} ],
		[ 'ack', 8, sub {
			my ($q, $id, $rc) = $id_receipt->();
			("SELECT (${id})::bigint, queue.ack(" . lit($q) . ", (${id})::bigint, (${rc})::bigint)", 'acked_if_t', $q);
		} ],
		[ 'ack_batch', 5, sub {
			my @l = map { [ $id_receipt->() ] } 1 .. pick(0, 1, 3, 8);
			my $q = @l ? $l[0][0] : qname(1);
			my $ids = 'ARRAY[' . join(',', map { "($_->[1])::bigint" } @l) . ']::bigint[]';
			my $rcs = 'ARRAY[' . join(',', map { "($_->[2])::bigint" } @l) . ']::bigint[]';
			$rcs = 'ARRAY[' . join(',', map { "($_->[2])::bigint" } @l[ 0 .. $#l - 1 ]) . ']::bigint[]'
			  if @l && rand() < 0.15;
			$ids = 'NULL' if rand() < 0.03;
			$rcs = "ARRAY[NULL]::bigint[]" if rand() < 0.03;
			("SELECT queue.ack(" . lit($q) . ", $ids, $rcs)", 'acked', $q);
		} ],
		[ 'nack', 4, sub {
			my ($q, $id, $rc) = $id_receipt->();
			("SELECT queue.nack(" . lit($q) . ", (${id})::bigint, (${rc})::bigint" . named(
				delay => sub { rand() < 0.7 ? "'0'::interval" : interval() },
				error => sub { rand() < 0.8 ? text_arg() : lit('e' x 100000) }) . ")");
		} ],
		[ 'set_visibility', 3, sub {
			my ($q, $id, $rc) = $id_receipt->();
			("SELECT queue.set_visibility(" . lit($q) . ", (${id})::bigint, (${rc})::bigint, "
				  . (rand() < 0.6 ? lit(pick('0', '1 second', '3 seconds')) . '::interval' : interval()) . ")");
		} ],
		[ 'archive', 3, sub {
			my ($q, $id, $rc) = $id_receipt->();
			("SELECT queue.archive(" . lit($q) . ", (${id})::bigint, (${rc})::bigint)");
		} ],
		[ 'recycle', 2, sub { ("SELECT queue.recycle(" . lit(qname(1)) . ")") } ],
		[ 'archived', 1, sub { ("SELECT count(*) FROM queue.archived(" . lit(qname(1)) . ")") } ],
		[ 'redrive', 2, sub {
			my $dlq = rand() < 0.5 ? 'fz_dlq' : qname(0);
			# from fz_dlq only into the ledger queues or names no queue can
			# have, so that no message of the ledger leaves it
			my $target = $dlq eq 'fz_dlq'
			  ? pick(undef, 'fz_a', 'fz_b', pick(grep { !/^[a-z_][a-z0-9_]{0,47}$/ } @evil_names))
			  : qname(0);
			("SELECT queue.redrive(" . lit($dlq) . named(target => sub { lit($target) },
				max_messages => \&bigint) . ")");
		} ],
		[ 'subscribe', 2, sub {
			("SELECT queue.subscribe(" . lit(cname()) . ', ' . lit(rand() < 0.8 ? pick(@scratch) : qname(0))
				  . ', ' . handler_arg() . named(
				batch_size => \&int4, batch_window => \&interval,
				max_concurrency => sub { pick(1, 2, 0, -1, 1000, 1001, 'NULL') },
				rate_limit => sub { pick('NULL', '0', '0.5', '-1', '1e6', '1e7', "'NaN'", "'Infinity'", '100') },
				max_attempts => sub { pick(1, 0, 1001, 'NULL', 3) },
				retry_backoff => \&interval, handler_timeout => \&interval,
				max_retry_backoff => \&interval) . ")");
		} ],
		[ 'alter_consumer', 2, sub {
			("SELECT queue.alter_consumer(" . lit(cname()) . named(
				handler => \&handler_arg, batch_size => \&int4, batch_window => \&interval,
				max_concurrency => sub { pick(1, 2, 0, 1001, 'NULL') },
				rate_limit => sub { pick('NULL', '0', '-1', "'NaN'", '5') },
				max_attempts => sub { pick(1, 0, 1001, 'NULL') },
				retry_backoff => \&interval, handler_timeout => \&interval,
				max_retry_backoff => \&interval,
				reset => sub { pick(q{'{rate_limit}'}, q{'{nope}'}, q{'{handler}'}, 'NULL', q{'{NULL}'}) }) . ")");
		} ],
		[ 'pause', 2, sub {
			my $f = pick('pause', 'resume', 'unsubscribe');
			("SELECT queue.$f(" . lit(cname()) . ($f eq 'unsubscribe' ? named(if_exists => \&boolean) : '') . ")");
		} ],
		[ 'views', 2, sub {
			(pick('SELECT count(*) FROM queue.queues', 'SELECT count(*) FROM queue.consumers',
				'SELECT count(*) FROM queue.workers',
				'SELECT string_agg(queue_name, \',\') FROM queue.queues WHERE messages < 0'));
		} ],
	);
	my $total_weight = 0;
	$total_weight += $_->[1] for @calls;

	eval {
		while (time < $end)
		{
			my $w = rand($total_weight);
			my $c;
			for (@calls) { $c = $_; last if ($w -= $_->[1]) < 0; }
			my ($q_sql, $kind, $q) = $c->[2]->();
			$kind //= '';
			my $rollback = $q_sql !~ /^BEGIN/ && rand() < 0.08;
			my $sql = $rollback ? "BEGIN; $q_sql; ROLLBACK;" : "$q_sql;";
			my ($out, $err) = run_sql($s, $sql);
			$r{calls}++;

			my @errors = $err =~ /^(?:ERROR|FATAL|PANIC):\s+([0-9A-Z]{5}):/mg;
			die "connection lost: $err" if $err =~ /server closed the connection|connection to server was lost|no connection to the server/;
			my $state = @errors ? $errors[0] : 'ok';
			$r{states}{"$c->[0] $state"}++;
			if (@errors && !$allowed{ $errors[0] })
			{
				# one example of each function and SQLSTATE
				$r{unexpected}{"$errors[0] from $c->[0]"} //=
				  substr($sql, 0, 300) . "\n" . substr($err, 0, 500);
			}
			next if @errors || $rollback || !defined $q || !grep { $_ eq $q } @ledger_queues;

			# the ledger of fz_a and fz_b, from calls that committed
			my @lines = grep { $_ ne '' } split /\n/, $out;
			if ($kind eq 'ids')
			{
				$r{sent}{$_} = 1 for @lines;
			}
			elsif ($kind eq 'lease')
			{
				for (@lines)
				{
					my ($id, $rc) = split /\|/;
					push @leases, [ $q, $id, $rc ];
				}
				splice(@leases, 0, @leases - 50) if @leases > 50;
			}
			elsif ($kind eq 'popped' || $kind eq 'acked')
			{
				for (@lines)
				{
					push @{ $r{acked_twice} }, $_ if $r{acked}{$_}++;
				}
			}
			elsif ($kind eq 'acked_if_t')
			{
				my ($id, $ok) = split /\|/, $lines[0] // '';
				push @{ $r{acked_twice} }, $id if defined $ok && $ok eq 't' && $r{acked}{$id}++;
			}
		}
		1;
	} or $r{died} = "$@";

	$s->{stdin} .= "\\q\n";
	eval { $s->{h}->finish; };
	local $Data::Dumper::Indent = 0;
	local $Data::Dumper::Terse = 1;
	open my $fh, '>', $file or die;
	print $fh Data::Dumper::Dumper(\%r);
	close $fh;
	return;
}

# --- run: clients in child processes, the checks in this one ------------------------

my @users = ('postgres', 'postgres', 'fuzzer');
my @kids;
for my $i (0 .. $#users)
{
	my $file = File::Spec->rel2abs("$PostgreSQL::Test::Utils::tmp_check/fuzz_client_$i.pl");
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		eval { client($i, $users[$i], $file); 1 } or print STDERR "client $i: $@";
		POSIX::_exit(0);    # no END blocks: the node belongs to the parent
	}
	push @kids, [ $pid, $file ];
}

my ($rounds, @round_problems) = (0);
my $check_round = sub {
	my @p;
	my $now = eval { sql('SELECT pg_postmaster_start_time()') } // 'unreachable';
	push @p, "postmaster start time $pm_start -> $now" if $now ne $pm_start;
	my $crash = crash_in_log();
	push @p, "server log: $crash" if $crash ne '';
	my $cat = eval { catalog_problems() } // "catalog check failed: $@";
	push @p, $cat if $cat ne '';
	$rounds++;
	push @round_problems, "round $rounds: " . join('; ', @p) if @p;
};
while (grep { kill 0, $_->[0] } @kids)
{
	sleep $round;
	$check_round->();
	waitpid($_->[0], POSIX::WNOHANG()) for @kids;
}
waitpid($_->[0], 0) for @kids;
$check_round->();

is(join("\n", @round_problems[ 0 .. ($#round_problems < 9 ? $#round_problems : 9) ]), '',
	"$rounds rounds: no crash, no restart, no unexpected object");

# --- what the clients saw -------------------------------------------------------------

my (%states, %sent, %acked, %unexpected, @twice, @died);
my $calls = 0;
for my $k (@kids)
{
	my $r = do $k->[1];
	if (!$r) { push @died, "client result $k->[1] missing: $@"; next; }
	$calls += $r->{calls};
	$states{$_} += $r->{states}{$_} for keys %{ $r->{states} };
	$sent{$_} = 1 for keys %{ $r->{sent} };
	$unexpected{$_} //= $r->{unexpected}{$_} for keys %{ $r->{unexpected} };
	push @twice, @{ $r->{acked_twice} };
	for (keys %{ $r->{acked} })
	{
		push @twice, $_ if $acked{$_}++;
	}
	push @died, $r->{died} if $r->{died};
}
note(sprintf("%d calls in %d s; outcomes:\n%s", $calls, $seconds,
		join("\n", map { "  $_: $states{$_}" } sort keys %states)));
is(join("\n", @died), '', 'every client ran to its end (no connection lost)');
is(join('', map { "\n--- $_ ($states{(split / from /)[1] . ' ' . (split / /)[0]} times), e.g.:\n$unexpected{$_}" }
			sort keys %unexpected),
	'', 'every error had an allowed SQLSTATE');
cmp_ok($calls, '>', 10 * $seconds, "the clients made $calls calls");
for my $f (qw(send send_batch read ack))
{
	cmp_ok($states{"$f ok"} // 0, '>', 0, "some calls of $f succeeded");
}
cmp_ok(scalar(keys %sent), '>', 0, scalar(keys %sent) . ' messages sent to the ledger queues');

# --- every message of the ledger queues in exactly one place -------------------------

my %place;
my @misplaced;
for my $spec (
	[ 'archive fz_a', q{SELECT id FROM queue.archived('fz_a')} ],
	[ 'archive fz_b', q{SELECT id FROM queue.archived('fz_b')} ],
	map {
		my $q = $_;
		my $qid = sql(qq{SELECT id FROM queue.queues WHERE queue_name = '$q'});
		[ "queue $q", "SELECT id FROM queue_internal.q$qid" ]
	} qw(fz_a fz_b fz_dlq))
{
	for my $id (split /\n/, sql($spec->[1]))
	{
		push @misplaced, "$id in $place{$id} and $spec->[0]" if $place{$id};
		$place{$id} = $spec->[0];
	}
}
my (@lost, @both, @phantom);
for my $id (keys %sent)
{
	if ($acked{$id}) { push @both, "$id acknowledged and in $place{$id}" if $place{$id}; }
	elsif (!$place{$id}) { push @lost, $id; }
}
for my $id (keys %place, keys %acked)
{
	push @phantom, $id unless $sent{$id};
}
my %where;
$where{ $place{$_} // ($acked{$_} ? 'acknowledged' : 'nowhere') }++ for keys %sent;
note('where the sent messages are: ' . join(', ', map { "$_ $where{$_}" } sort keys %where));
is(scalar(@lost), 0, 'no message lost (sent, found nowhere)') or diag("lost: @lost[0 .. 19]");
# where lost messages are, if in any queue at all (a leak of the driver's
# ledger rather than a loss)
if (@lost)
{
	my $ids = join(',', @lost);
	for (split /\n/, sql(q{SELECT queue_name || '|' || id FROM queue.queues}))
	{
		my ($qn, $qid) = split /\|/;
		my $found = sql("SELECT string_agg(id::text, ' ') FROM queue_internal.q$qid WHERE id IN ($ids)");
		diag("lost ids in queue $qn: $found") if $found ne '';
		$found = sql("SELECT string_agg(id::text, ' ') FROM queue_internal.a$qid WHERE id IN ($ids)");
		diag("lost ids in the archive of $qn: $found") if $found ne '';
	}
}
is(join("\n", @misplaced, @both), '', 'no message in two places');
is(join(' ', sort @phantom), '', 'no message that no send returned');
is(join(' ', sort @twice), '', 'no message acknowledged twice');

# (no temporary table here: the first one creates a pg_temp schema)
my @counter_off;
for (split /\n/, sql(q{SELECT queue_name, id, coalesce(messages::text, 'NULL') FROM queue.queues}))
{
	my ($qn, $qid, $counter) = split /\|/;
	my $rows = sql("SELECT count(*) FROM queue_internal.q$qid");
	push @counter_off, "$qn: counter $counter, rows $rows" if $counter ne $rows;
}
my $counters = join('; ', @counter_off);
is($counters, '', 'every queue\'s messages counter equals its rows');

is(catalog_problems(), '', 'catalogs as expected at the end');
is(sql(q{SELECT count(*) FROM public.victim}), '0', 'the canary table is intact');

$node->stop;
done_testing();
