
# 050_hostile_schema.pl: privileges and identity that only a running server
# with workers can show.
#
# 1. The catalog: the functions of the extension that PUBLIC may execute
#    are exactly the intended ones (listed below), every SECURITY DEFINER
#    function pins its search_path to pg_catalog, pg_temp, nothing in
#    queue_internal is granted to anyone, and PUBLIC may only SELECT the
#    views of schema queue.
# 2. Identity in a handler: a handler owned by an ordinary role cannot
#    become a superuser: SET ROLE, SET SESSION AUTHORIZATION and set_config
#    of either fail with 42501, the message fails (it is dead-lettered with
#    that error), and what the handler would have written as a superuser is
#    never written.
# 3. search_path hijacking while the whole API and the workers run.  In a
#    database whose default search_path is "public, pg_catalog" (the worst
#    a careless administrator can set: every unqualified name is looked up
#    in public first, in every session and worker there), an attacker with
#    CREATE on public plants look-alikes of the functions, aggregates and
#    operators that SQL commonly uses (now(), nextval(), unnest(), count(*),
#    array_agg(), jsonb_build_object(), =, <, + ... on bigint, integer,
#    oid, text and timestamptz), views named like the internal tables, and
#    in its own session pg_temp views, sequences and functions named like
#    the extension's.  Each look-alike records its call in a side-effect
#    table (and the server log) and returns the right answer, so a call
#    changes nothing else and cannot hide.  A control shows the traps bite:
#    plain SQL in that database, and an unqualified now() in a handler run
#    by a drain worker, are caught.  Then a superuser, the attacker and a
#    consumer's owner use the whole API (queues, messages, leases,
#    dead-lettering, redrive, archive, deduplication, recycle, consumers)
#    while drain workers handle messages and maintenance workers prune
#    archives, expire deduplication keys and recycle segments, and the
#    attacker drops objects (which runs the extension's SECURITY DEFINER
#    event trigger as the superuser).  Afterwards the side-effect table
#    holds the control calls and nothing else.
#
# sql/privileges.sql covers the rest of the issue's item 4 with pg_regress:
# 42501 from every function for a role without grants, per-queue
# privileges, queue_internal out of reach, and the API used from a session
# with planted objects.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $t_start = time;

my $node = queue_node(
	'hostile', qq{
queue.max_workers = 4
queue.worker_idle_timeout = '2s'
queue.maintenance_interval = '200ms'
queue.segment_age = '200ms'
log_line_prefix = '%m [%p] %q%a '
});

sub sql { return $node->safe_psql('postgres', shift); }

sql('CREATE EXTENSION queue');
sql('CREATE ROLE app LOGIN');
sql('CREATE ROLE boss SUPERUSER NOLOGIN');

# ---- 1. the catalog -------------------------------------------------------------

note '1. the catalog';

# The functions PUBLIC may execute, on purpose: each checks the caller's
# privilege on the queue (or consumer) it names before doing anything, and
# the views' functions filter by it.  queue.create is not among them.
my @intended = sort grep { /\S/ } map { s/^\s+|\s+$//gr } split /\n/, <<'EOS';
  queue.ack(text,bigint,bigint)
  queue.ack(text,bigint[],bigint[])
  queue.alter(text,interval,integer,text,interval,text,text[],boolean,interval)
  queue.alter_consumer(text,regprocedure,integer,interval,integer,double precision,integer,interval,interval,interval,text[])
  queue.archive(text,bigint,bigint)
  queue.archived(text)
  queue.consumer_stats()
  queue.drop(text,boolean)
  queue."grant"(text,text,regrole)
  queue.nack(text,bigint,bigint,interval,text)
  queue.pause(text)
  queue.pop(text,integer,integer)
  queue.purge(text)
  queue.queue_stats()
  queue.read(text,integer,interval,interval,integer)
  queue.recycle(text)
  queue.redrive(text,text,bigint)
  queue.resume(text)
  queue.revoke(text,text,regrole)
  queue.send(text,jsonb,interval,jsonb,text,text,integer)
  queue.send_batch(text,jsonb[],interval,jsonb,text,text[],integer)
  queue.set_visibility(text,bigint,bigint,interval)
  queue.subscribe(text,text,regprocedure,integer,interval,integer,double precision,integer,interval,interval,interval)
  queue.unsubscribe(text,boolean)
  queue.worker_stats()
EOS

# the extension's functions: its members, and anything else in its schemas
my $ext_functions = q{
  SELECT p.oid, p.prosecdef, p.proconfig FROM pg_proc p
   WHERE p.pronamespace IN ('queue'::regnamespace, 'queue_internal'::regnamespace)
      OR p.oid IN (SELECT d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                    WHERE e.extname = 'queue' AND d.classid = 'pg_proc'::regclass
                      AND d.deptype = 'e')};
my @public_exec = split /\n/, sql(qq{
  SELECT f.oid::regprocedure FROM ($ext_functions) f
   WHERE has_function_privilege('public', f.oid, 'EXECUTE')});
is_deeply([ sort @public_exec ], \@intended,
	'the functions PUBLIC may execute are exactly the intended ones');
cmp_ok(sql(qq{SELECT count(*) FROM ($ext_functions) f}), '>', scalar(@intended),
	'others exist, and PUBLIC may not execute them');
is(sql(q{SELECT has_function_privilege('public', 'queue.create'::regproc, 'EXECUTE')}),
	'f', 'queue.create is not executable by PUBLIC');
is( sql(qq{SELECT string_agg(f.oid::regprocedure::text, ',') FROM ($ext_functions) f WHERE f.prosecdef}),
	'queue_internal.refuse_dropping_handlers()',
	'the one SECURITY DEFINER function is the event trigger\'s');
is( sql(qq{SELECT count(*) FROM ($ext_functions) f
           WHERE f.prosecdef
             AND NOT coalesce(f.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)}),
	'0', 'every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp');
is( sql(q{SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
           JOIN pg_proc p ON p.oid = d.objid
          WHERE e.extname = 'queue' AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
            AND p.pronamespace NOT IN ('queue'::regnamespace, 'queue_internal'::regnamespace)}),
	'0', 'the extension has no function outside its two schemas');
is( sql(q{SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
          WHERE c.relnamespace = 'queue_internal'::regnamespace AND a.grantee <> c.relowner}),
	'0', 'no table or sequence of queue_internal is granted to anyone');
is( sql(q{SELECT string_agg(DISTINCT a.privilege_type, ',') FROM pg_class c, aclexplode(c.relacl) a
          WHERE c.relnamespace = 'queue'::regnamespace AND a.grantee = 0}),
	'SELECT', 'PUBLIC may only SELECT the views of schema queue');
is( sql(q{SELECT has_schema_privilege('public', 'queue_internal', 'USAGE')
              OR has_schema_privilege('public', 'queue_internal', 'CREATE')
              OR has_schema_privilege('public', 'queue', 'CREATE')}),
	'f', 'PUBLIC has no right on queue_internal and cannot create in queue');

# ---- 2. a handler cannot become a superuser ------------------------------------

note '2. SET ROLE to a superuser inside a handler';
sql(q{
SELECT queue.create('qr_dlq');
SELECT queue.create('qr', max_attempts => 1, dead_letter_queue => 'qr_dlq');
SELECT queue.grant('qr', 'all', 'app');
CREATE TABLE escalated (what text, usr name, sess name, super text);
CREATE TABLE outcome (what text, state text, message text);
GRANT INSERT ON escalated, outcome TO app;
CREATE FUNCTION become_boss(msgs queue.message[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'set role') THEN
        SET ROLE boss;
        INSERT INTO escalated VALUES ('set role', current_user, session_user, current_setting('is_superuser'));
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'session authorization') THEN
        SET SESSION AUTHORIZATION boss;
        INSERT INTO escalated VALUES ('session authorization', current_user, session_user, current_setting('is_superuser'));
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'probe') THEN
        BEGIN
            PERFORM set_config('role', 'boss', false);
            INSERT INTO escalated VALUES ('set_config role', current_user, session_user, current_setting('is_superuser'));
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO outcome VALUES ('set_config role', SQLSTATE, SQLERRM);
        END;
        BEGIN
            PERFORM set_config('session_authorization', 'boss', true);
            INSERT INTO escalated VALUES ('set_config session_authorization', current_user, session_user, current_setting('is_superuser'));
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO outcome VALUES ('set_config session_authorization', SQLSTATE, SQLERRM);
        END;
        INSERT INTO outcome VALUES ('after', current_user || ',' || session_user || ',' || current_setting('is_superuser'), NULL);
    END IF;
END $$;
ALTER FUNCTION become_boss(queue.message[]) OWNER TO app;
});
$node->safe_psql('postgres',
	q{SET ROLE app; SELECT queue.subscribe('boss', 'qr', 'become_boss(queue.message[])', batch_size => 1)});
my %id;
for my $what ('set role', 'session authorization', 'probe')
{
	$id{$what} = sql(qq{SELECT queue.send('qr', '{"$what": true}')});
}
wait_until($node, q{SELECT messages = 2 FROM queue.queues WHERE queue_name = 'qr_dlq'},
	'the two messages whose handler tried to become boss are dead-lettered');
wait_until($node, q{SELECT count(*) = 3 FROM outcome}, 'the probing handler committed');
my %dead = map { my ($i, $e) = split /\|/; ($i => $e) } split /\n/,
  sql(q{SELECT id, last_error FROM queue.read('qr_dlq', 10)});
like($dead{ $id{'set role'} }, qr/^42501: permission denied to set role "boss"/,
	'SET ROLE boss in a handler fails with 42501, and the message fails');
like($dead{ $id{'session authorization'} },
	qr/^42501: permission denied to set session authorization/,
	'SET SESSION AUTHORIZATION boss fails with 42501, and the message fails');
is(sql(q{SELECT count(*) FROM escalated}), '0', 'nothing was written as a superuser');
is( sql(q{SELECT string_agg(what || ':' || state, ',' ORDER BY what) FROM outcome WHERE what <> 'after'}),
	'set_config role:42501,set_config session_authorization:42501',
	'set_config of role or session_authorization fails with 42501 too');
is(sql(q{SELECT state FROM outcome WHERE what = 'after'}), 'app,app,off',
	'the handler is still app, not a superuser');
$node->safe_psql('postgres', q{SET ROLE app; SELECT queue.unsubscribe('boss')});

# ---- 3. search_path hijacking ------------------------------------------------------

note '3. planted look-alikes while the API and the workers run';
sql('CREATE DATABASE hostile');
sql('CREATE ROLE attacker LOGIN');
my $hq_id;
{
	my $setup = q{
SET search_path = pg_catalog;
CREATE EXTENSION queue;
GRANT CREATE ON SCHEMA public TO attacker;
GRANT EXECUTE ON FUNCTION queue.create TO attacker;
CREATE TABLE public.trap_log (
    what  text,
    usr   name DEFAULT current_user,
    app   text DEFAULT current_setting('application_name'),
    pid   int DEFAULT pg_backend_pid());
GRANT INSERT ON public.trap_log TO PUBLIC;
CREATE TABLE public.handled (id bigint, tag text, path text, usr name);
GRANT INSERT ON public.handled TO app;
-- the victim's handler: every name in it qualified, so that only the
-- control message's now() can fall into a trap
CREATE FUNCTION public.victim_handler(msgs queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    m queue.message;
BEGIN
    FOREACH m IN ARRAY msgs LOOP
        INSERT INTO public.handled (id, tag, path, usr)
        VALUES (m.id, m.payload OPERATOR(pg_catalog.->>) 'tag',
                pg_catalog.current_setting('search_path'), CURRENT_USER);
        IF m.payload OPERATOR(pg_catalog.?) 'control' THEN
            PERFORM now();
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
ALTER FUNCTION public.victim_handler(queue.message[]) OWNER TO app;
SELECT queue.create('hq');
SELECT queue.grant('hq', 'all', 'app');
SELECT queue.create('hfq', fifo => true);
SELECT queue.grant('hfq', 'all', 'app');
-- the worst search_path an administrator can set: public before pg_catalog
ALTER DATABASE hostile SET search_path = public, pg_catalog;
};
	$node->safe_psql('hostile', $setup);
	$hq_id = $node->safe_psql('hostile', q{SELECT id FROM queue.queues WHERE queue_name = 'hq'});
}

# The attacker's traps.  Each records its call and returns what the real
# function would, so that it changes nothing but the side-effect table.
my @traps;
push @traps, q{
CREATE FUNCTION public.trap(what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.trap_log (what) VALUES (what);
    RAISE WARNING 'hostile trap called: %', what;
END $$;};

# functions: name, argument types, result type, the real call
my @functions = (
	[ 'now', '', 'timestamptz', 'pg_catalog.now()' ],
	[ 'clock_timestamp', '', 'timestamptz', 'pg_catalog.clock_timestamp()' ],
	[ 'statement_timestamp', '', 'timestamptz', 'pg_catalog.statement_timestamp()' ],
	[ 'transaction_timestamp', '', 'timestamptz', 'pg_catalog.transaction_timestamp()' ],
	[ 'random', '', 'double precision', 'pg_catalog.random()' ],
	[ 'nextval', 'regclass', 'bigint', 'pg_catalog.nextval($1)' ],
	[ 'nextval', 'text', 'bigint', 'pg_catalog.nextval($1::regclass)' ],
	[ 'currval', 'regclass', 'bigint', 'pg_catalog.currval($1)' ],
	[ 'setval', 'regclass, bigint', 'bigint', 'pg_catalog.setval($1, $2)' ],
	[ 'jsonb_build_object', 'text, integer', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)' ],
	[ 'jsonb_build_object', 'text, bigint', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)' ],
	[ 'jsonb_build_object', 'text, text', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)' ],
	[ 'jsonb_build_object', 'text, jsonb', 'jsonb', 'pg_catalog.jsonb_build_object($1, $2)' ],
	[ 'to_jsonb', 'text', 'jsonb', 'pg_catalog.to_jsonb($1)' ],
	[ 'to_jsonb', 'bigint', 'jsonb', 'pg_catalog.to_jsonb($1)' ],
	[ 'jsonb_typeof', 'jsonb', 'text', 'pg_catalog.jsonb_typeof($1)' ],
	[ 'array_append', 'bigint[], bigint', 'bigint[]', 'pg_catalog.array_append($1, $2)' ],
	[ 'array_append', 'oid[], oid', 'oid[]', 'pg_catalog.array_append($1, $2)' ],
	[ 'array_remove', 'bigint[], bigint', 'bigint[]', 'pg_catalog.array_remove($1, $2)' ],
	[ 'array_remove', 'oid[], oid', 'oid[]', 'pg_catalog.array_remove($1, $2)' ],
	[ 'array_length', 'bigint[], integer', 'integer', 'pg_catalog.array_length($1, $2)' ],
	[ 'cardinality', 'bigint[]', 'integer', 'pg_catalog.cardinality($1)' ],
	[ 'floor', 'double precision', 'double precision', 'pg_catalog.floor($1)' ],
	[ 'floor', 'numeric', 'numeric', 'pg_catalog.floor($1)' ],
	[ 'date_part', 'text, timestamptz', 'double precision', 'pg_catalog.date_part($1, $2)' ],
	[ 'extract', 'text, timestamptz', 'numeric', 'pg_catalog.extract($1, $2)' ],
	[ 'lower', 'text', 'text', 'pg_catalog.lower($1)' ],
	[ 'length', 'text', 'integer', 'pg_catalog.length($1)' ],
	[ 'octet_length', 'text', 'integer', 'pg_catalog.octet_length($1)' ],
	[ 'format', 'text, text', 'text', 'pg_catalog.format($1, $2)' ],
	[ 'concat', 'text, text', 'text', 'pg_catalog.concat($1, $2)' ],
	[ 'quote_ident', 'text', 'text', 'pg_catalog.quote_ident($1)' ],
	[ 'txid_current', '', 'bigint', 'pg_catalog.txid_current()' ],
	[ 'pg_backend_pid', '', 'integer', 'pg_catalog.pg_backend_pid()' ],
	[ 'current_setting', 'text', 'text', 'pg_catalog.current_setting($1)' ],
	[ 'set_config', 'text, text, boolean', 'text', 'pg_catalog.set_config($1, $2, $3)' ],
	[ 'pg_advisory_xact_lock', 'bigint', 'void', 'pg_catalog.pg_advisory_xact_lock($1)' ],
	[ 'pg_try_advisory_xact_lock', 'bigint', 'boolean', 'pg_catalog.pg_try_advisory_xact_lock($1)' ],
	[ 'pg_try_advisory_lock', 'bigint', 'boolean', 'pg_catalog.pg_try_advisory_lock($1)' ],
	[ 'gen_random_uuid', '', 'uuid', 'pg_catalog.gen_random_uuid()' ],
	[ 'pg_event_trigger_dropped_objects', '', 'SETOF record', undef ],);
for my $f (@functions)
{
	my ($name, $args, $ret, $call) = @$f;
	my $what = "$name($args)";
	if (!defined $call)
	{
		# a set-returning look-alike with the same signature; it would
		# fail to be used as the real one, which is enough to show
		push @traps, qq{
CREATE FUNCTION public.$name() RETURNS $ret LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN PERFORM public.trap('$what'); RETURN; END \$\$;};
		next;
	}
	my $body =
	  $ret eq 'void'
	  ? "PERFORM $call; PERFORM public.trap('$what'); RETURN;"
	  : "PERFORM public.trap('$what'); RETURN $call;";
	push @traps, qq{
CREATE FUNCTION public.$name($args) RETURNS $ret LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN $body END \$\$;};
}

# set-returning look-alikes of unnest
for my $t ('bigint', 'integer', 'text', 'jsonb', 'timestamptz', 'oid')
{
	push @traps, qq{
CREATE FUNCTION public.unnest($t\[]) RETURNS SETOF $t LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN PERFORM public.trap('unnest($t\[])'); RETURN QUERY SELECT pg_catalog.unnest(\$1); END \$\$;};
}

# aggregates
push @traps, q{
CREATE FUNCTION public.trap_count(bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM public.trap('count(*)'); RETURN $1 + 1; END $$;
CREATE AGGREGATE public.count(*) (SFUNC = public.trap_count, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION public.trap_count_any(bigint, bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM public.trap('count(bigint)'); RETURN $1 + 1; END $$;
CREATE AGGREGATE public.count(bigint) (SFUNC = public.trap_count_any, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION public.trap_min(bigint, bigint) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM public.trap('min/max(bigint)'); RETURN pg_catalog.least($1, $2); END $$;
CREATE AGGREGATE public.min(bigint) (SFUNC = public.trap_min, STYPE = bigint);
CREATE AGGREGATE public.max(bigint) (SFUNC = public.trap_min, STYPE = bigint);
CREATE FUNCTION public.trap_agg(bigint[], bigint) RETURNS bigint[] LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM public.trap('array_agg(bigint)'); RETURN pg_catalog.array_append($1, $2); END $$;
CREATE AGGREGATE public.array_agg(bigint) (SFUNC = public.trap_agg, STYPE = bigint[], INITCOND = '{}');
};

# operators: comparisons on the types the extension's statements compare,
# and arithmetic on those it computes with
my @types = ('bigint', 'integer', 'oid', 'text', 'timestamptz', 'boolean');
my %opname = ('=' => 'eq', '<>' => 'ne', '<' => 'lt', '<=' => 'le', '>' => 'gt', '>=' => 'ge');
my @operators;
for my $t (@types)
{
	push @operators, [ $_, $t, $t, 'boolean' ] for sort keys %opname;
}
push @operators, [ $_, 'bigint', 'integer', 'boolean' ] for sort keys %opname;
push @operators, [ $_, 'smallint', 'integer', 'boolean' ] for sort keys %opname;
push @operators,
  [ '+', 'integer', 'integer', 'integer' ],
  [ '+', 'bigint', 'bigint', 'bigint' ],
  [ '-', 'bigint', 'bigint', 'bigint' ],
  [ '+', 'timestamptz', 'interval', 'timestamptz' ],
  [ '-', 'timestamptz', 'interval', 'timestamptz' ],
  [ '-', 'timestamptz', 'timestamptz', 'interval' ],
  [ '*', 'interval', 'double precision', 'interval' ],
  [ '||', 'text', 'text', 'text' ],
  [ '->>', 'jsonb', 'text', 'text' ],
  [ '?', 'jsonb', 'text', 'boolean' ];
my $n = 0;
for my $o (@operators)
{
	my ($op, $l, $r, $ret) = @$o;
	$n++;
	push @traps, qq{
CREATE FUNCTION public.trap_op$n($l, $r) RETURNS $ret LANGUAGE plpgsql SET search_path = pg_catalog AS \$\$
BEGIN PERFORM public.trap('$op($l,$r)'); RETURN \$1 OPERATOR(pg_catalog.$op) \$2; END \$\$;
CREATE OPERATOR public.$op (LEFTARG = $l, RIGHTARG = $r, FUNCTION = public.trap_op$n);};
}

# views named like the internal tables
for my $rel ('queue', 'consumer', 'segment_ring', 'dedup', 'dedup_unlogged', "q$hq_id", "s${hq_id}_0")
{
	push @traps, qq{
CREATE VIEW public.$rel AS SELECT 1 AS id FROM (SELECT public.trap('view public.$rel')) t;};
}
push @traps, q{CREATE FUNCTION public.attacker_extra() RETURNS int LANGUAGE sql AS 'SELECT 1';};

$node->safe_psql('hostile', "SET ROLE attacker;\nSET search_path = pg_catalog;\n" . join("\n", @traps));
my $ntraps = $node->safe_psql('hostile',
	q{SET search_path = pg_catalog;
	  SELECT (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proowner = 'attacker'::regrole)
	     + (SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace)
	     + (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'v')});
note "$ntraps objects planted in public";

# A psql in the hostile database: with its default search_path.
sub hostile
{
	my ($query, $role) = @_;
	$query = "SET ROLE $role;\n$query" if $role;
	return $node->safe_psql('hostile', $query);
}

# Queries of the test itself look nothing up in public.
sub hcheck
{
	return $node->safe_psql('hostile', "SET search_path = pg_catalog;\n" . shift);
}

# The control: the traps bite unqualified SQL in this database.
is(hostile('SHOW search_path'), 'public, pg_catalog', 'the database\'s search_path puts public first');
hostile(q{SELECT now(), 1::bigint = 2::bigint, 'a'::text < 'b'::text, 1::oid = 2::oid,
                 jsonb_build_object('k', 1), (SELECT count(*) FROM (VALUES (1)) v),
                 (SELECT array_agg(x) FROM (VALUES (1::bigint)) v(x))});
is( hcheck(q{SELECT string_agg(what, ',' ORDER BY what COLLATE "C") FROM (SELECT DISTINCT what FROM public.trap_log) t}),
	'<(text,text),=(bigint,bigint),=(oid,oid),array_agg(bigint),count(*),jsonb_build_object(text, integer),now()',
	'control: unqualified SQL in this database falls into every trap it uses');
hcheck('DELETE FROM public.trap_log');

my $offset = -s $node->logfile;

# The attacker's session: pg_temp objects named like the extension's, and
# pg_temp first in its search_path.
my $att = $node->background_psql('hostile', on_error_stop => 1);
$att->query_safe(q{SET ROLE attacker});
$att->query_safe(q{SET search_path = pg_catalog});
for my $rel ('queue', 'consumer', 'segment_ring', 'dedup', 'dedup_unlogged', "q$hq_id", "a$hq_id",
	"s${hq_id}_0", "s${hq_id}_1")
{
	$att->query_safe(qq{CREATE TEMP VIEW $rel AS SELECT 1 AS id FROM (SELECT public.trap('view pg_temp.$rel')) t});
}
$att->query_safe(q{CREATE TEMP SEQUENCE message_id_seq});
$att->query_safe(q{CREATE TEMP SEQUENCE queue_id_seq});
$att->query_safe(q{CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE sql
                   AS $$SELECT public.trap('pg_temp.now()'); SELECT pg_catalog.now()$$});
$att->query_safe(q{SET search_path = pg_temp, public, pg_catalog});

# The whole queue API, run on a queue of its own by a session; every name
# in it qualified but the API's arguments.
sub tour
{
	my ($q) = @_;
	return qq{
SELECT queue.create('${q}_dlq');
SELECT queue.create('$q', visibility_timeout => '1 second', max_attempts => 2,
                    dead_letter_queue => '${q}_dlq', retention => '1 second',
                    dedup_window => '1 second');
SELECT queue.alter('$q', visibility_timeout => '2 seconds');
SELECT queue.alter('$q', logged => false);
SELECT queue.alter('$q', logged => true);
SELECT queue.grant('$q', 'read', 'app');
SELECT queue.revoke('$q', 'read', 'app');
SELECT queue.send('$q', '{"tag": "one"}', headers => '{"h": 1}', group_key => 'g', dedup_key => 'k1');
SELECT queue.send('$q', '{"tag": "one again"}', dedup_key => 'k1');
SELECT queue.send_batch('$q', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}', '{"n": 5}',
                                    '{"n": 6}', '{"n": 7}', '{"n": 8}']::jsonb[],
                        dedup_keys => ARRAY['k2', 'k3', NULL, NULL, NULL, NULL, NULL, NULL]);
SELECT queue.send('$q', '{"tag": "delayed"}', delay => '100 milliseconds');
SELECT queue.ack('$q', r.id, r.receipt) FROM queue.read('$q', 1) r;
WITH r AS MATERIALIZED (SELECT * FROM queue.read('$q', 2))
SELECT queue.ack('$q', (SELECT pg_catalog.array_agg(id ORDER BY id) FROM r),
                      (SELECT pg_catalog.array_agg(receipt ORDER BY id) FROM r));
SELECT queue.nack('$q', r.id, r.receipt, error => 'nacked') FROM queue.read('$q', 1) r;
SELECT queue.set_visibility('$q', r.id, r.receipt, '0') FROM queue.read('$q', 1) r;
SELECT queue.archive('$q', r.id, r.receipt) FROM queue.read('$q', 1) r;
SELECT id FROM queue.archived('$q');
SELECT id FROM queue.pop('$q');
SELECT id FROM queue.read('$q', 10, visibility_timeout => '0');
SELECT id FROM queue.read('$q', 10, visibility_timeout => '0');
SELECT id FROM queue.read('$q', 10, visibility_timeout => '0', wait => '200 milliseconds');
SELECT queue.redrive('${q}_dlq');
SELECT queue.recycle('$q');
SELECT queue_name, messages FROM queue.queues;
SELECT * FROM queue.queue_stats();
SELECT queue.purge('$q');
SELECT queue.send('$q', '{"tag": "kept"}', dedup_key => 'k9');
SELECT queue.archive('$q', r.id, r.receipt) FROM queue.read('$q', 1) r;
SELECT queue.create('${q}_fifo', fifo => true);
SELECT queue.create('${q}_fair', fair => true);
SELECT queue.send_batch('${q}_fifo', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], group_key => 'g1');
SELECT queue.send_batch('${q}_fifo', ARRAY['{"n": 4}', '{"n": 5}']::jsonb[], group_key => 'g2', priority => 3);
SELECT queue.send('${q}_fifo', '{"n": 6}', priority => 7);
SELECT queue.ack('${q}_fifo', r.id, r.receipt) FROM queue.read('${q}_fifo', 3) r;
SELECT queue.nack('${q}_fifo', r.id, r.receipt) FROM queue.read('${q}_fifo', 1) r;
SELECT id FROM queue.pop('${q}_fifo', 10);
SELECT queue.send('${q}_fair', '{"n": 1}', group_key => 'a');
SELECT queue.send('${q}_fair', '{"n": 2}', group_key => 'a', priority => 2);
SELECT queue.send('${q}_fair', '{"n": 3}', group_key => 'b');
SELECT queue.send('${q}_fair', '{"n": 4}');
SELECT id FROM queue.read('${q}_fair', 2, visibility_timeout => '0');
SELECT id FROM queue.pop('${q}_fair', 10);
SELECT queue.drop('${q}_fifo');
SELECT queue.drop('${q}_fair');
SELECT queue.alter('$q', rename_to => '${q}2');
SELECT queue.alter('${q}2', reset => '{max_attempts, dead_letter_queue, visibility_timeout}');
SELECT queue.drop('${q}_dlq');
};
}

# the attacker runs the tour in its session, and drops an object of its
# own (the extension's SECURITY DEFINER event trigger runs as superuser)
$att->query_safe(tour('att'));
$att->query_safe(q{DROP FUNCTION public.attacker_extra()});

# the superuser runs it with the database's search_path
hostile(tour('su'));

# the consumer's owner: every consumer function, while a worker handles
hostile(
	q{SELECT queue.subscribe('hc', 'hq', 'public.victim_handler(queue.message[])', batch_size => 5,
	                         batch_window => '10 milliseconds', max_concurrency => 2,
	                         rate_limit => 10000, retry_backoff => '10 milliseconds');
	  SELECT queue.subscribe('hf', 'hfq', 'public.victim_handler(queue.message[])', batch_size => 3);
	  SELECT queue.alter_consumer('hc', batch_size => 7, reset => '{rate_limit}');
	  SELECT queue.pause('hc');
	  SELECT queue.resume('hc');
	  SELECT consumer_name, state FROM queue.consumers;
	  SELECT pid, state FROM queue.workers;},
	'app');
my ($ret, $out, $err) = $node->psql('hostile',
	q{SET ROLE app; DROP FUNCTION public.victim_handler(queue.message[])});
like($err, qr/because consumer "hc" uses it as its handler/,
	'the event trigger still refuses to drop a handler, run by its owner');
hostile(
	q{SELECT queue.send_batch('hq', ARRAY['{"tag": "w1"}', '{"tag": "w2"}', '{"tag": "w3"}',
	                                     '{"tag": "w4"}', '{"tag": "w5"}', '{"tag": "w6"}',
	                                     '{"tag": "w7"}', '{"tag": "w8"}', '{"tag": "w9"}']::jsonb[])});
hostile(
	q{SELECT queue.send_batch('hfq', ARRAY['{"tag": "f1"}', '{"tag": "f2"}', '{"tag": "f3"}']::jsonb[],
	                         group_key => 'g1');
	  SELECT queue.send_batch('hfq', ARRAY['{"tag": "f4"}', '{"tag": "f5"}']::jsonb[],
	                         group_key => 'g2', priority => 2);
	  SELECT queue.send('hfq', '{"tag": "f6"}')});
wait_until($node, q{SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) 15 FROM public.handled},
	'the drain workers handle the messages of both queues', 'hostile');
is(hcheck(q{SELECT string_agg(DISTINCT path || ' as ' || usr, ',') FROM public.handled}),
	'public, pg_catalog as app',
	'the worker ran with the database\'s search_path, public first, as app');
# the control inside a worker: an unqualified now() in the handler is caught
hostile(q{SELECT queue.send('hq', '{"tag": "control", "control": true}')});
wait_until($node, q{SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) 16 FROM public.handled},
	'the control message is handled', 'hostile');
is(hcheck(q{SELECT string_agg(what || ' by ' || usr || ' in ' || app, ',') FROM public.trap_log}),
	'now() by app in queue consumer hc',
	'control: the handler\'s own unqualified now() falls into the trap, in the worker');

# maintenance at work in this database: archives past their retention
# pruned, deduplication keys past their window deleted, segments recycled
my ($su2, $att2) = split /\n/,
  hcheck(q{SELECT id FROM queue.queues WHERE queue_name IN ('su2', 'att2') ORDER BY queue_name DESC});
# (each tour archives two messages, the second more than its 1 s retention
# after the first on a slow run, when archiving it prunes the first)
is(hcheck(qq{SELECT (SELECT count(*) FROM queue_internal.a$su2) >= 1
                AND (SELECT count(*) FROM queue_internal.a$att2) >= 1}),
	't', 'each tour left messages in its archive');
wait_until($node,
	qq{SELECT (SELECT pg_catalog.count(*) FROM queue_internal.dedup) OPERATOR(pg_catalog.=) 0
	     AND NOT EXISTS (SELECT FROM queue_internal.a$su2)
	     AND NOT EXISTS (SELECT FROM queue_internal.a$att2)},
	'maintenance pruned the archives and expired the deduplication keys', 'hostile');
my $tail = hcheck(qq{SELECT tail FROM queue_internal.segment_ring WHERE queue_id = $hq_id});
hostile(q{SELECT queue.send('hq', '{"tag": "late"}')});
wait_until($node,
	qq{SELECT tail OPERATOR(pg_catalog.>) $tail FROM queue_internal.segment_ring
	   WHERE queue_id OPERATOR(pg_catalog.=) $hq_id},
	'the drained queue\'s segments are recycled', 'hostile');
$att->query_safe(q{SELECT queue.drop('att2')});
$att->quit;
hostile(q{SELECT queue.pause('hc'); SELECT queue.unsubscribe('hc'); SELECT queue.unsubscribe('hf')}, 'app');
hostile(q{SELECT queue.drop('su2')});

is(hcheck(q{SELECT count(*) || ',' || count(DISTINCT id) FROM public.handled}), '17,17',
	'every message was handled once');
is( hcheck(q{SELECT count(*) FROM public.trap_log WHERE what <> 'now()' OR app <> 'queue consumer hc'}),
	'0', 'nothing but the control fell into a trap: not the API, the workers or the event trigger');
my @calls = slurp_file($node->logfile, $offset) =~ /hostile trap called: (.*)/g;
is(join(',', @calls), 'now()',
	'the server log shows no trap called but the control (not even in a rolled-back transaction)');
ok(!$node->log_contains(qr/PANIC|TRAP:|terminated by signal/), 'no crash');

note sprintf('050_hostile_schema: %d look-alikes planted, %.0f s', $ntraps, time - $t_start);
$node->stop;
done_testing();
