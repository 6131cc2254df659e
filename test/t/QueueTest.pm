# QueueTest: what the TAP tests share.
#
#   my $node = queue_node('name', qq{setting = value ...});
#       a started node with queue preloaded and the given settings
#   wait_until($node, $query, $what [, $db]);
#       passes once $query returns true (in postgres, or $db), fails with
#       the query after the harness's timeout
package QueueTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Test::More;

our @EXPORT = qw(queue_node wait_until);

sub queue_node
{
	my ($name, $settings) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'queue'\n" . ($settings // ''));
	$node->start;
	return $node;
}

sub wait_until
{
	my ($node, $query, $what, $db) = @_;
	ok($node->poll_query_until($db // 'postgres', $query), $what)
	  or diag("still not true: $query");
	return;
}

1;
