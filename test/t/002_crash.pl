
# 002_crash.pl: what a crash keeps and what it loses.
#
# A durable queue and an unlogged queue get messages; some are acknowledged,
# some are in flight, and one open transaction has an uncommitted send, pop
# and ack when the server goes down.  The scenario runs twice: once with a
# backend killed by SIGKILL (the postmaster then resets shared memory and
# runs crash recovery: a crash restart), once with an immediate shutdown and
# a new start.  After each:
#
# - the durable queue holds exactly the committed messages: the acked ones
#   are gone, the in-flight ones are still in flight and their leases still
#   work, the uncommitted send is absent, the uncommitted pop and ack are
#   undone;
# - the unlogged queue is empty and works (send, read, ack), with no error
#   in the log;
# - queue.queues counts the stored messages anew, and its totals (sent,
#   acked, dead-lettered) restart from 0 with shared memory;
# - message ids keep increasing: no id handed out by a committed send before
#   the crash is handed out again.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;

my $node = queue_node(
	'crash', qq{
restart_after_crash = on
});

sub sql { return $node->safe_psql('postgres', shift); }

sql('CREATE EXTENSION queue');
sql(q{SELECT queue.create('d')});
sql(q{SELECT queue.create('u', logged => false)});
is( sql(q{SELECT string_agg(queue_name || ':' || logged, ',' ORDER BY queue_name) FROM queue.queues}),
	'd:true,u:false',
	'one durable and one unlogged queue');

# messages, visible, in_flight, sent_total, acked_total, dead_lettered_total
sub stats
{
	my ($q) = @_;
	return sql(
		qq{SELECT messages, visible, in_flight, sent_total, acked_total, dead_lettered_total
		   FROM queue.queues WHERE queue_name = '$q'});
}

sub totals
{
	my ($q) = @_;
	return split /\|/,
	  sql(qq{SELECT sent_total, acked_total FROM queue.queues WHERE queue_name = '$q'});
}

# Sends ten messages to a queue, acks the first three, leases the next two
# for an hour; returns the ids and the receipts of the leased ones.
sub populate
{
	my ($q) = @_;
	my @ids = split /\n/,
	  sql(qq{SELECT queue.send_batch('$q', ARRAY(SELECT jsonb_build_object('n', g)
	                                              FROM generate_series(1, 10) g))});
	is(scalar(@ids), 10, "$q: ten messages sent");

	my @acked = split /\n/,
	  sql(qq{SELECT id || ' ' || receipt FROM queue.read('$q', 3, visibility_timeout => '1h')});
	for my $r (@acked)
	{
		my ($id, $receipt) = split / /, $r;
		is(sql(qq{SELECT queue.ack('$q', $id, $receipt)}), 't', "$q: ack $id");
	}
	is( join(',', map { (split / /)[0] } @acked),
		join(',', @ids[ 0 .. 2 ]),
		"$q: the three oldest were read and acked");

	my @leased = map { [ split / / ] } split /\n/,
	  sql(qq{SELECT id || ' ' || receipt FROM queue.read('$q', 2, visibility_timeout => '1h')});
	is( join(',', map { $_->[0] } @leased),
		join(',', @ids[ 3 .. 4 ]),
		"$q: the next two are in flight");
	return (\@ids, \@leased);
}

my $max_committed_id = 0;

sub scenario
{
	my ($label, $crash) = @_;

	note "=== scenario: $label";
	my ($d0_sent, $d0_acked) = totals('d');
	my ($u0_sent, $u0_acked) = totals('u');

	my ($u_ids, $u_leased) = populate('u');
	my ($d_ids, $d_leased) = populate('d');
	for my $id (@$d_ids, @$u_ids)
	{
		$max_committed_id = $id if $id > $max_committed_id;
	}

	is(stats('d'), join('|', 7, 5, 2, $d0_sent + 10, $d0_acked + 3, 0),
		"$label: before the crash, durable queue counters");
	is(stats('u'), join('|', 7, 5, 2, $u0_sent + 10, $u0_acked + 3, 0),
		"$label: before the crash, unlogged queue counters");

	# An open transaction that changes both queues when the crash comes.
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $bg_pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_safe('BEGIN');
	$bg->query_safe(q{SELECT queue.send('d', '{"uncommitted": true}')});
	$bg->query_safe(q{SELECT queue.send('u', '{"uncommitted": true}')});
	is($bg->query_safe(q{SELECT id FROM queue.pop('d')}),
		$d_ids->[5], "$label: uncommitted pop took the oldest visible message");
	is( $bg->query_safe(
			qq{SELECT queue.ack('d', $d_leased->[0][0], $d_leased->[0][1])}),
		't',
		"$label: uncommitted ack of an in-flight message");

	my $offset = -s $node->logfile;
	$crash->($bg_pid);
	eval { $bg->quit; };

	my $ready = $node->wait_for_log(
		qr/database system is ready to accept connections/, $offset);
	ok( $node->log_contains(qr/database system was not properly shut down|database system was interrupted/, $offset),
		"$label: the server ran crash recovery");

	# durable queue: exactly the committed messages; counters from zero
	is(stats('d'), '7|5|2|0|0|0',
		"$label: durable queue: 7 messages counted anew, 5 visible, 2 in flight, totals reset");
	is(stats('u'), '0|0|0|0|0|0',
		"$label: unlogged queue: empty after the crash, totals reset");

	# the leases of the in-flight messages survived
	for my $l (@$d_leased)
	{
		is(sql(qq{SELECT queue.ack('d', $l->[0], $l->[1])}),
			't', "$label: durable in-flight message $l->[0] still leased, ack works");
	}
	my @visible = map { [ split / / ] } split /\n/,
	  sql(q{SELECT id || ' ' || receipt || ' ' || (payload->>'n') FROM queue.read('d', 100)});
	is( join(',', map { $_->[0] } @visible),
		join(',', @{$d_ids}[ 5 .. 9 ]),
		"$label: durable queue delivers exactly the committed, unacked messages");
	is( join(',', map { $_->[2] } @visible),
		'6,7,8,9,10', "$label: with their payloads");
	for my $v (@visible)
	{
		is(sql(qq{SELECT queue.ack('d', $v->[0], $v->[1])}), 't',
			"$label: ack $v->[0]");
	}
	is(stats('d'), '0|0|0|0|7|0',
		"$label: durable queue drained, acked_total counts since the restart");

	# unlogged queue: empty and usable
	is(sql(q{SELECT count(*) FROM queue.read('u', 100)}), '0',
		"$label: unlogged queue reads nothing");
	is( sql(qq{SELECT queue.ack('u', $u_leased->[0][0], $u_leased->[0][1])}),
		'f', "$label: lease of a lost unlogged message acks nothing");
	my $new_u = sql(q{SELECT queue.send('u', '{"after": 1}')});
	my $new_d = sql(q{SELECT queue.send('d', '{"after": 1}')});
	cmp_ok($new_u, '>', $max_committed_id,
		"$label: new unlogged message id $new_u is above every id before the crash ($max_committed_id)");
	cmp_ok($new_d, '>', $new_u, "$label: and ids keep increasing");
	my ($rid, $receipt, $payload) = split /\|/,
	  sql(q{SELECT id, receipt, payload FROM queue.read('u')});
	is($rid, $new_u, "$label: unlogged queue delivers the new message");
	is($payload, '{"after": 1}', "$label: with its payload");
	is(sql(qq{SELECT queue.ack('u', $rid, $receipt)}), 't',
		"$label: unlogged queue acks it");
	is(sql(q{SELECT count(*) FROM queue.pop('d')}), '1',
		"$label: durable queue pops the new message");
	is(stats('u'), '0|0|0|1|1|0', "$label: unlogged queue counters move again");
	is(stats('d'), '0|0|0|1|8|0', "$label: durable queue counters move again");
	$max_committed_id = $new_d;

	# the log since the restart: no error, no further crash
	my $log = slurp_file($node->logfile, $ready);
	unlike($log, qr/ERROR|PANIC|FATAL|terminated by signal/,
		"$label: no error in the log after the restart");
	return;
}

scenario(
	'backend killed with SIGKILL',
	sub {
		my ($pid) = @_;
		my $offset = -s $node->logfile;
		ok(kill('KILL', $pid), "sent SIGKILL to backend $pid");
		$node->wait_for_log(qr/all server processes terminated; reinitializing/,
			$offset);
		ok( $node->log_contains(qr/server process \(PID $pid\) was terminated by signal 9/,
				$offset),
			'the postmaster saw the backend die and restarted');
	});

scenario(
	'immediate shutdown',
	sub {
		$node->stop('immediate');
		$node->start;
	});

# after both crashes, ordinary use still works
is(sql(q{SELECT queue.send('d', '{"last": true}') > 0}), 't', 'send after both crashes');
is(sql(q{SELECT payload->>'last' FROM queue.pop('d')}), 'true', 'pop after both crashes');

$node->stop;
done_testing();
