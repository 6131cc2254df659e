# 013_fifo_runs.pl: external consumers reading a FIFO queue with per_group.
#
# 200 groups of 20 messages each, interleaved, are sent to a queue created
# with fifo => true, with small segments so that a group's messages span
# several segment tables.  Six consumer sessions then read concurrently
# with per_group => 5, batches of 10, each in a loop of transactions: they
# handle a batch's messages in the order returned, and about one message in
# ten fails: its consumer nacks it (which gives back the later messages of
# its group from the same read) and skips the rest of that group's messages
# in the batch, as the README asks a consumer to.  Handling a message writes
# a ledger row (its group and place in it, and a sequence's nextval: the
# handling order) and acks it, in the reading transaction, so a row exists
# exactly when a handling committed.  From the ledger:
#
# - exactly once: every message sent is in the ledger, once, and the queue
#   is empty;
# - order: in every group, the handling order is the send order;
# - runs were taken: some transactions handled several messages of one group;
# - parallel: every consumer handled messages.
use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;

my $groups = 200;
my $per_group = 20;
my $consumers = 6;

my $node = queue_node(
	'fifo_runs', qq{
queue.segment_size = '64kB'
max_connections = 40
});

sub sql { return $node->safe_psql('postgres', shift); }

sql(q{CREATE EXTENSION queue});
sql(q{SELECT queue.create('runs', fifo => true)});
sql(qq{
SELECT count(queue.send('runs', jsonb_build_object('grp', g, 'seq', s), group_key => 'g' || g))
  FROM generate_series(1, $per_group) AS s, generate_series(1, $groups) AS g});

sql(q{
CREATE SEQUENCE handled_order;
CREATE TABLE ledger (
    ord      bigint NOT NULL,
    grp      int NOT NULL,
    seq      int NOT NULL,
    consumer int NOT NULL,
    xact     xid8 NOT NULL,
    msg_id   bigint NOT NULL);

-- One transaction's work: read a batch, handle it in order, a failure
-- nacks the message and drops the rest of its group's batch.
CREATE FUNCTION consume_once(me int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  m record;
  failed text[] := '{}';
  got int := 0;
BEGIN
  FOR m IN SELECT * FROM queue.read('runs', 10, per_group => 5) LOOP
    got := got + 1;
    CONTINUE WHEN m.group_key = ANY (failed);
    IF random() < 0.1 THEN
      PERFORM queue.nack('runs', m.id, m.receipt);
      failed := failed || m.group_key;
      CONTINUE;
    END IF;
    INSERT INTO ledger VALUES (nextval('handled_order'), (m.payload->>'grp')::int,
                               (m.payload->>'seq')::int, me, pg_current_xact_id(), m.id);
    IF NOT queue.ack('runs', m.id, m.receipt) THEN
      RAISE EXCEPTION 'lost the lease of message %', m.id;
    END IF;
  END LOOP;
  RETURN got;
END $$;

-- A consumer: batches until the queue has stayed empty for a while.
CREATE PROCEDURE consume(me int) LANGUAGE plpgsql AS $$
DECLARE
  idle int := 0;
BEGIN
  WHILE idle < 20 LOOP
    IF consume_once(me) = 0 THEN
      idle := idle + 1;
      PERFORM pg_sleep(0.05);
    ELSE
      idle := 0;
    END IF;
    COMMIT;
  END LOOP;
END $$;
});

my @runs;
for my $c (1 .. $consumers)
{
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), '-c', "CALL consume($c)"
		],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	push @runs, { h => $h, out => \$out, err => \$err, c => $c };
}
for my $r (@runs)
{
	my $ok = eval { $r->{h}->finish; 1 } && $r->{h}->result == 0;
	ok($ok, "consumer $r->{c} ran to an empty queue")
	  or diag("consumer $r->{c}: ${$r->{err}}");
}

my $total = $groups * $per_group;
is(sql(q{SELECT count(*) FROM ledger}), $total, 'every message was handled');
is(sql(q{SELECT count(DISTINCT msg_id) FROM ledger}), $total, 'each once');
is(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 'runs'}), '0',
	'and the queue is empty');
is( sql(
		q{SELECT count(*) FROM (
            SELECT grp, seq, row_number() OVER (PARTITION BY grp ORDER BY ord) AS nth
              FROM ledger) l WHERE seq <> nth}),
	'0',
	'in every group, messages were handled in send order');
cmp_ok(
	sql(q{SELECT count(*) FROM (SELECT xact, grp FROM ledger GROUP BY 1, 2
                                  HAVING count(*) > 1) runs}),
	'>', 0, 'some transactions handled several messages of one group');
is(sql(q{SELECT count(DISTINCT consumer) FROM ledger}),
	$consumers, 'every consumer handled messages');

$node->stop;
done_testing();
