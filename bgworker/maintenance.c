/*
 * maintenance.c
 *    The maintenance worker: started by the launcher for one database, it
 *    copies the database's consumer catalog into the registry (so that the
 *    launcher knows what to run) and does the housekeeping of its queues
 *    (extension/maintain.c), then exits.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"

#include "queue.h"

/* Copies this database's consumers into the registry, then maintains its queues. */
static void
refresh_and_maintain(void)
{
	Oid			consumer_catalog = InvalidOid;
	ConsumerSlot *fresh = NULL;
	int			n = 0;
	int			stored;

	bgworker_begin_xact();
	if (OidIsValid(get_namespace_oid(QUEUE_INTERNAL_SCHEMA, true)) &&
		OidIsValid(consumer_catalog = consumer_catalog_relid()))
	{
		ConsumerConfig *configs;
		OwnerContext ctx;

		owner_context_enter(&ctx);
		n = consumer_catalog_load(0, &configs);
		owner_context_exit(&ctx);
		fresh = palloc0(sizeof(ConsumerSlot) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			fresh[i].consumer_id = configs[i].id;
			strlcpy(fresh[i].name, configs[i].name, NAMEDATALEN);
			fresh[i].queue = queue_slot_key(configs[i].queue_id);
			fresh[i].owner = configs[i].owner;
			fresh[i].max_concurrency = configs[i].max_concurrency;
			fresh[i].paused = configs[i].paused;
			fresh[i].rate_limit = configs[i].rate_limit;
			fresh[i].batch_size = configs[i].batch_size;
			/* a consumer that ran before the (re)start may have met a killer */
			if (configs[i].created_at < registry_started_at())
				fresh[i].careful = configs[i].batch_size;
		}
	}
	stored = registry_replace_database(MyDatabaseId, consumer_catalog, n, fresh);
	registry_note_database(MyDatabaseId, OidIsValid(consumer_catalog));
	if (OidIsValid(consumer_catalog))
		queue_maintain_database();
	if (stored < n)
		ereport(WARNING,
				(errmsg("queue: %d consumers of database \"%s\" do not fit in shared memory and will not run",
						n - stored, get_database_name(MyDatabaseId)),
				 errhint("Raise queue.max_consumers (now %d) and restart the server.",
						 queue_max_consumers)));
	bgworker_commit_xact();
}

void
maintenance_worker_run(WorkerSlot *me)
{
	worker_set_state(me, WORKER_MAINTAINING, 0);
	BackgroundWorkerInitializeConnectionByOid(me->database, InvalidOid, 0);
	pgstat_report_appname("queue maintenance");
	/* a DROP EXTENSION still open must not hold up every database's turn */
	SetConfigOption("lock_timeout", "1s", PGC_SUSET, PGC_S_OVERRIDE);
	refresh_and_maintain();
	me->worked = true;
}
