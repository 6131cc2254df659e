
# 001_preload.pl: queue needs shared_preload_libraries.
#
# Without it, CREATE EXTENSION works (the install script needs no shared
# memory) but every function that needs the shared counters and wakeups
# refuses with SQLSTATE 55000 and a hint that names shared_preload_libraries,
# before it writes anything.  With it, the same calls work, also after the
# extension is dropped and created again in one session.  The library is
# then taken out of shared_preload_libraries again with a queue holding a
# message, to prove that the existing queue is refused too and left intact.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('preload');
$node->init;
$node->start;

# Runs SQL through psql with verbose errors, so that stderr carries the
# SQLSTATE; returns (exit code, stdout, stderr).
sub run_sql
{
	my ($sql) = @_;
	my ($ret, $out, $err) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return ($ret, $out, $err);
}

# Asserts that $sql fails with 55000, the preload message and its hint.
sub fails_unpreloaded
{
	my ($sql, $what) = @_;
	my ($ret, $out, $err) = run_sql($sql);

	isnt($ret, 0, "$what: fails without preload");
	like($err, qr/ERROR:\s+55000:/, "$what: SQLSTATE 55000");
	like(
		$err,
		qr/queue must be loaded via "shared_preload_libraries"/,
		"$what: error names shared_preload_libraries");
	like(
		$err,
		qr/HINT:\s+.*shared_preload_libraries.*restart/,
		"$what: hint tells how to set it up");
	unlike($err, qr/FATAL|server closed the connection|terminated/,
		"$what: plain error, no FATAL or crash");
	return;
}

# --- not preloaded, fresh database -----------------------------------------

my ($ret, $out, $err) = run_sql('CREATE EXTENSION queue');
is($ret, 0, 'CREATE EXTENSION works without preload')
  or diag($err);

fails_unpreloaded(q{SELECT queue.create('jobs')}, 'queue.create');
fails_unpreloaded(q{SELECT queue.create('jobs_unlogged', logged => false)},
	'queue.create unlogged');
fails_unpreloaded(q{SELECT queue.send('jobs', '{"a": 1}')},
	'queue.send (no such queue)');
fails_unpreloaded(q{SELECT * FROM queue.read('jobs')},
	'queue.read (no such queue)');
fails_unpreloaded(q{SELECT * FROM queue.queues}, 'view queue.queues');

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM queue_internal.queue}),
	'0',
	'refused create left no catalog row');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		  WHERE n.nspname = 'queue_internal' AND c.relname ~ '^[qa][0-9]+$'}),
	'0',
	'refused create left no queue tables');

# --- preloaded ----------------------------------------------------------------

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'queue'");
$node->restart;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'queue', 'library is preloaded');

ok( $node->safe_psql('postgres', q{SELECT queue.create('jobs')}) > 0,
	'queue.create works when preloaded');
ok( $node->safe_psql('postgres',
		q{SELECT queue.create('jobs_unlogged', logged => false)}) > 0,
	'queue.create unlogged works when preloaded');
my $id1 = $node->safe_psql('postgres', q{SELECT queue.send('jobs', '{"n": 1}')});
my $id2 = $node->safe_psql('postgres', q{SELECT queue.send('jobs', '{"n": 2}')});
ok($id1 > 0 && $id2 > $id1, 'queue.send works and returns increasing ids');
is( $node->safe_psql(
		'postgres',
		q{SELECT queue.send('jobs_unlogged', '{"u": 1}') > 0}),
	't',
	'queue.send to the unlogged queue works');

is( $node->safe_psql(
		'postgres',
		q{SELECT queue_name, logged, messages, visible, in_flight, sent_total
		  FROM queue.queues ORDER BY queue_name}),
	"jobs|t|2|2|0|2\njobs_unlogged|f|1|1|0|1",
	'queue.queues shows both queues with their counters');

# read one with a long lease (stays in flight), keep it for later
my ($read_id, $read_n, $receipt) = split /\|/,
  $node->safe_psql('postgres',
	q{SELECT id, payload->>'n', receipt FROM queue.read('jobs', visibility_timeout => '1h')});
is("$read_id|$read_n", "$id1|1", 'queue.read returns the oldest message');

is( $node->safe_psql(
		'postgres',
		q{SELECT messages, visible, in_flight FROM queue.queues WHERE queue_name = 'jobs'}),
	'2|1|1',
	'queue.queues sees one message in flight');

# The extension dropped and created again within one session: sends find
# the new tables and sequence, not the ones this backend knew before.
is( $node->safe_psql(
		'postgres', q{
		CREATE DATABASE reinstall;
	}), '', 'a database for reinstalling');
is( $node->safe_psql(
		'reinstall', q{
		CREATE EXTENSION queue;
		SELECT queue.create('again') > 0;
		SELECT queue.send('again', '1') > 0;
		DROP EXTENSION queue CASCADE;
		CREATE EXTENSION queue;
		SELECT queue.create('again') > 0;
		SELECT queue.send('again', '2') > 0;
		SELECT count(*) FROM queue.send_batch('again', ARRAY['3', '4']::jsonb[]);
		SELECT string_agg(payload::text, ',' ORDER BY id) FROM queue.read('again', 10);
	}),
	"t\nt\nt\nt\n2\n2,3,4",
	'sends work after the extension is dropped and created again in the same session');

# --- the library taken out of shared_preload_libraries again ------------------

$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'library is no longer preloaded');

fails_unpreloaded(q{SELECT queue.send('jobs', '{"n": 3}')},
	'queue.send (existing queue)');
fails_unpreloaded(
	q{SELECT queue.send_batch('jobs', ARRAY['{"n": 3}', '{"n": 4}']::jsonb[])},
	'queue.send_batch');
fails_unpreloaded(q{SELECT * FROM queue.read('jobs')},
	'queue.read (existing queue)');
fails_unpreloaded(q{SELECT * FROM queue.read('jobs', wait => '1s')},
	'queue.read with wait');
fails_unpreloaded(q{SELECT * FROM queue.pop('jobs')}, 'queue.pop');
fails_unpreloaded(qq{SELECT queue.ack('jobs', $read_id, $receipt)}, 'queue.ack');
fails_unpreloaded(q{SELECT queue.drop('jobs_unlogged')}, 'queue.drop');
fails_unpreloaded(q{SELECT queue.create('other')},
	'queue.create (with existing queues)');
fails_unpreloaded(q{SELECT * FROM queue.queues},
	'view queue.queues (with existing queues)');

# refused calls wrote nothing: the rows are as they were
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM queue_internal.queue}),
	'2',
	'no queue was created or dropped while not preloaded');

# --- preloaded again: the queues are intact -----------------------------------

$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "'queue'");
$node->restart;

is( $node->safe_psql(
		'postgres',
		q{SELECT queue_name, messages, visible, in_flight
		  FROM queue.queues ORDER BY queue_name}),
	"jobs|2|1|1\njobs_unlogged|1|1|0",
	'after preloading again, the queues hold exactly what they held');
is( $node->safe_psql('postgres',
		q{SELECT id, payload->>'n' FROM queue.read('jobs')}),
	"$id2|2",
	'queue.read works again and the refused calls consumed nothing');
is( $node->safe_psql('postgres', qq{SELECT queue.ack('jobs', $read_id, $receipt)}),
	't', 'the lease taken before survives, the refused ack did nothing');
is( $node->safe_psql('postgres',
		q{SELECT payload->>'u' FROM queue.pop('jobs_unlogged')}),
	'1',
	'the unlogged queue survived a clean restart');

# --- more queues than queue.max_queues ----------------------------------------

# A queue without shared state reads its segment ring from the catalog at
# every call; a send does that as the calling role, outside the owner
# context the other functions run in.
$node->append_conf('postgresql.conf', 'queue.max_queues = 16');
$node->restart;
$node->safe_psql(
	'postgres', q{
	SELECT queue.create('many_' || g) FROM generate_series(1, 60) g;
	CREATE ROLE many_sender LOGIN;
	SELECT queue.grant('many_60', 'send', 'many_sender');
});
is( $node->safe_psql(
		'postgres', q{SELECT sent_total IS NULL FROM queue.queues WHERE queue_name = 'many_60'}),
	't', 'the last of 60 queues has no shared state with queue.max_queues = 16');
$node->safe_psql('postgres', q{SELECT queue.send('many_60', '1')}, extra_params => [ '-U', 'many_sender' ]);
$node->safe_psql('postgres', q{SELECT queue.send_batch('many_60', ARRAY['2', '3']::jsonb[])},
	extra_params => [ '-U', 'many_sender' ]);
is( $node->safe_psql(
		'postgres', q{
		SELECT string_agg(payload::text, ',' ORDER BY id) FROM queue.pop('many_60', 10);
		SELECT count(*) FROM queue.read('many_60', 10)}),
	"1,2,3\n0", 'a queue beyond queue.max_queues takes sends from a role that may only send');

$node->stop;
done_testing();
