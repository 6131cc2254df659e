
# 003_wait.pl: queue.read(wait => ...), the long poll.
#
# A reader waiting for 60 s in a background session:
# - sleeps in the extension's wait event (pg_stat_activity shows
#   wait_event_type 'Extension');
# - is cancellable: pg_cancel_backend ends the wait at once with 57014, the
#   session lives on and can wait again;
# - is not woken by a send that has not committed, nor by one rolled back;
# - is woken by a commit, and returns the committed message long before its
#   60 s run out;
# - times out with no rows when nothing comes;
# - on a FIFO queue, is woken by the ack that frees a group in flight;
# - fails with 55000 (and moves nothing) when a message it would dead-letter
#   has lost its dead-letter queue to an alter and a drop during the wait.
# A wait in a REPEATABLE READ or SERIALIZABLE transaction is refused with
# 0A000, since its snapshot could never see the message that woke it.
#
# Timing bounds are deliberately loose: "woken" means back in under 20 s of
# a 60 s wait, which a wait that slept to its end can never meet.  The queue
# holds no hidden message while these waits run, so read has no reason to
# look again before its deadline: only the commit's wakeup can end it early.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = queue_node('wait');

sub sql { return $node->safe_psql('postgres', shift); }

sql('CREATE EXTENSION queue');
sql(q{SELECT queue.create('w')});

my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->set_query_timer_restart();
$waiter->query_safe('\set VERBOSITY verbose');
my $wpid = $waiter->query_safe('SELECT pg_backend_pid()');

# What pg_stat_activity says the waiter is doing.
sub waiter_activity
{
	return sql(
		qq{SELECT state, coalesce(wait_event_type, '-'), query LIKE '%queue.read%'
		   FROM pg_stat_activity WHERE pid = $wpid});
}

# Polls until the waiter sleeps in the extension's wait event (at most 15 s).
sub waiter_sleeps_in_extension
{
	my $deadline = time + 15;
	while (time < $deadline)
	{
		return 1 if waiter_activity() eq 'active|Extension|t';
		usleep(50_000);
	}
	diag('waiter activity: ' . waiter_activity());
	return 0;
}

# Starts a statement in the waiter and returns once the server runs it.
sub start_wait
{
	my ($query) = @_;
	$waiter->{stderr} = '';
	my $out = $waiter->query_until(qr/wait_started\n/,
		"\\echo wait_started\n$query;\n\\echo wait_done\n");

	# whatever came after the marker (a statement that returned at once)
	# belongs to finish_wait
	$out =~ s/^.*?wait_started\n//s;
	$waiter->{stdout} = $out . $waiter->{stdout};
	return;
}

# Whether the waiter's statement has produced output (returned) yet.
sub waiter_returned
{
	$waiter->{run}->pump_nb();
	return $waiter->{stdout} =~ /wait_done/ || $waiter->{stdout} ne '';
}

# Asserts that a wait ended by a commit came back well before its end.
sub woken_ok
{
	my ($elapsed, $name) = @_;
	cmp_ok($elapsed, '<', 20, sprintf('%s (%.2f s)', $name, $elapsed));
	return;
}

# Waits for the waiter's statement to end; returns its output and how long
# it took since $t0.
sub finish_wait
{
	my ($t0) = @_;
	my $out = $waiter->query_until(qr/wait_done\n/, '');
	my $elapsed = time - $t0;
	$out =~ s/wait_done\n//;
	chomp $out;
	return ($out, $elapsed);
}

# --- the waiter shows the extension's wait event, and can be cancelled ---------

start_wait(q{SELECT id FROM queue.read('w', wait => '60s')});
ok(waiter_sleeps_in_extension(),
	"waiting read shows wait_event_type 'Extension' in pg_stat_activity");

my $t0 = time;
is(sql("SELECT pg_cancel_backend($wpid)"), 't', 'pg_cancel_backend sent');
my ($out, $elapsed) = finish_wait($t0);
cmp_ok($elapsed, '<', 20, sprintf('cancelled wait returned promptly (%.2f s)', $elapsed));
is($out, '', 'cancelled wait returned no rows');
like($waiter->{stderr}, qr/ERROR:\s+57014:/, 'cancel reports SQLSTATE 57014');
like($waiter->{stderr}, qr/canceling statement due to user request/,
	'cancel reports the user request');
$waiter->{stderr} = '';
is($waiter->query_safe('SELECT pg_backend_pid()'), $wpid,
	'the cancelled session lives on (same backend, no crash)');
ok(!$node->log_contains(qr/terminated by signal|PANIC/),
	'no backend crashed');

# --- not woken by an uncommitted send; woken by its commit ---------------------

my $sender = $node->background_psql('postgres');
$sender->query_safe('BEGIN');
my $id_a = $sender->query_safe(q{SELECT queue.send('w', '{"k": "a"}')});

start_wait(q{SELECT id, payload->>'k' FROM queue.read('w', wait => '60s')});
ok(waiter_sleeps_in_extension(), 'waiter sleeps again after the cancel');

# a send in the same moment, but not committed: the waiter must sleep on
$sender->query_safe(q{SELECT queue.send('w', '{"k": "a2"}')});
sleep(2);
ok(!waiter_returned(), 'uncommitted sends do not wake the waiter');
is(waiter_activity(), 'active|Extension|t', 'waiter still sleeps in the extension');

$t0 = time;
$sender->query_safe('COMMIT');
($out, $elapsed) = finish_wait($t0);
is($out, "$id_a|a", 'waiter returns the committed message, oldest first');
woken_ok($elapsed, 'woken by the commit, not by the end of its 60 s wait');
is($waiter->{stderr}, '', 'no error in the woken waiter');

# drain what is left (a2) so the next waits start on an empty queue
is(sql(q{SELECT payload->>'k' FROM queue.pop('w', 10)}), 'a2', 'drained');

# --- not woken by a rolled-back send; woken by a committed one -----------------

start_wait(q{SELECT id, payload->>'k' FROM queue.read('w', wait => '60s')});
ok(waiter_sleeps_in_extension(), 'waiter sleeps on an empty queue');
$sender->query_safe('BEGIN');
$sender->query_safe(q{SELECT queue.send('w', '{"k": "rolled back"}')});
$sender->query_safe('ROLLBACK');
sleep(2);
ok(!waiter_returned(), 'a rolled-back send does not wake the waiter');

$t0 = time;
my $id_b = sql(q{SELECT queue.send('w', '{"k": "b"}')});
($out, $elapsed) = finish_wait($t0);
is($out, "$id_b|b", 'waiter returns the committed message, never the rolled-back one');
woken_ok($elapsed, 'woken by an autocommit send');

# --- send_batch wakes too; a message already there returns at once --------------

start_wait(q{SELECT string_agg(payload->>'k', ',' ORDER BY id) FROM queue.read('w', 5, wait => '60s')});
ok(waiter_sleeps_in_extension(), 'waiter for a batch sleeps');
$t0 = time;
sql(q{SELECT queue.send_batch('w', ARRAY['{"k": "c1"}', '{"k": "c2"}']::jsonb[])});
($out, $elapsed) = finish_wait($t0);
is($out, 'c1,c2', 'woken by send_batch, gets the whole batch');
woken_ok($elapsed, 'woken by send_batch');

sql(q{SELECT queue.send('w', '{"k": "d"}')});
$t0 = time;
start_wait(q{SELECT payload->>'k' FROM queue.read('w', wait => '60s')});
($out, $elapsed) = finish_wait($t0);
is($out, 'd', 'a visible message is returned without waiting');
cmp_ok($elapsed, '<', 20, sprintf('returned at once (%.2f s)', $elapsed));

# --- nothing comes: the wait ends at its timeout, with no rows -------------------

$t0 = time;
start_wait(q{SELECT count(*) FROM queue.read('w', wait => '2s')});
($out, $elapsed) = finish_wait($t0);
is($out, '0', 'a wait nobody wakes returns no rows');
cmp_ok($elapsed, '>=', 1.9, sprintf('after its full wait (%.2f s)', $elapsed));
cmp_ok($elapsed, '<', 20, 'and not much later');
is($waiter->{stderr}, '', 'a wait that times out is no error');

# --- FIFO: an ack that frees a group wakes the waiter ------------------------------

# A consumer holds the group's first message in an open transaction (no lease
# written, so no hidden count changes that would wake the waiter anyway) and
# acks it there: only that commit can make the second one deliverable before
# the waiter's 60 s run out.
sql(q{SELECT queue.create('wf', fifo => true)});
sql(q{SELECT queue.send('wf', '{"k": "f1"}', group_key => 'g')});
sql(q{SELECT queue.send('wf', '{"k": "f2"}', group_key => 'g')});
$sender->query_safe('BEGIN');
my ($f1_id, $f1_receipt) = split /\|/,
  $sender->query_safe(q{SELECT id, receipt FROM queue.read('wf', 10)});
start_wait(q{SELECT payload->>'k' FROM queue.read('wf', wait => '60s')});
ok(waiter_sleeps_in_extension(), 'waiter on a FIFO queue whose only group is held sleeps');
is($sender->query_safe(qq{SELECT queue.ack('wf', $f1_id, $f1_receipt)}), 't',
	'the holder acks the first message in its transaction');
sleep(2);
ok(!waiter_returned(), 'the group stays held until the holder commits');
$t0 = time;
$sender->query_safe('COMMIT');
($out, $elapsed) = finish_wait($t0);
is($out, 'f2', "the commit frees the group: the waiter gets its next message");
woken_ok($elapsed, 'woken by the commit of the ack that freed the group');

# --- a dead-letter queue dropped while a reader waits: 55000, nothing lost ---------

# The waiter looked its queue up when its wait began; meanwhile the queue is
# pointed at another dead-letter queue and the old one dropped.  When the
# leased message comes back past max_attempts, the move to the dropped queue
# fails with 55000 and leaves the message where it was.
sql(q{SELECT queue.create('wd_old'), queue.create('wd_new')});
sql(q{SELECT queue.create('wd', max_attempts => 1, dead_letter_queue => 'wd_old')});
my $wd_id = sql(q{SELECT queue.send('wd', '{"k": "dead"}')});
is(sql(q{SELECT count(*) FROM queue.read('wd', visibility_timeout => '3 seconds')}), '1',
	'the message is read once (its one attempt), leased for 3 s');
start_wait(q{SELECT payload->>'k' FROM queue.read('wd', wait => '30s')});
ok(waiter_sleeps_in_extension(), 'waiter sleeps while the message is leased');
sql(q{SELECT queue.alter('wd', dead_letter_queue => 'wd_new')});
is(sql(q{SELECT queue.drop('wd_old')}), 't', 'the old dead-letter queue is dropped meanwhile');
($out, $elapsed) = finish_wait(time);
is($out, '', 'the waiter returns nothing');
like($waiter->{stderr}, qr/ERROR:\s+55000: the dead-letter queue of queue "wd" was dropped while this statement ran/,
	'55000: its dead-letter queue was dropped while it ran');
$waiter->{stderr} = '';
is(sql(q{SELECT count(*) FROM queue.read('wd')}), '0', 'a new read moves the message on');
is(sql(q{SELECT string_agg(id::text, ',') FROM queue.pop('wd_new', 10)}), $wd_id,
	'into the new dead-letter queue');

# --- REPEATABLE READ and SERIALIZABLE refuse to wait -----------------------------

for my $level ('REPEATABLE READ', 'SERIALIZABLE')
{
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres', qq{\\set VERBOSITY verbose
BEGIN ISOLATION LEVEL $level;
SELECT * FROM queue.read('w', wait => '10s');
});
	isnt($ret, 0, "$level: read with wait fails");
	like($stderr, qr/ERROR:\s+0A000:/, "$level: SQLSTATE 0A000");
	like($stderr, qr/cannot wait for messages in a $level transaction/,
		"$level: the message names the isolation level");

	($ret, $stdout, $stderr) = $node->psql(
		'postgres', qq{BEGIN ISOLATION LEVEL $level;
SELECT count(*) FROM queue.read('w');
COMMIT;});
	is($ret, 0, "$level: read without wait works") or diag($stderr);
}

$sender->quit;
$waiter->quit;
ok(!$node->log_contains(qr/terminated by signal|PANIC/),
	'no backend crashed during the test');
$node->stop;
done_testing();
