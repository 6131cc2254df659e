/*
 * queue.c
 *    Entry point of the queue extension: the module magic, the GUCs and
 *    _PG_init, which only defines settings and asks each subsystem to
 *    initialise itself.
 *
 * All settings live under queue.* and are defined here, nowhere else.
 * The utility hook stops a database's drain workers before the commands
 * that need a database without sessions (DROP DATABASE, ALTER DATABASE
 * RENAME, CREATE DATABASE from it as a template), which would otherwise
 * wait for them and fail, and before DROP EXTENSION queue, which would
 * otherwise deadlock with a worker in the middle of a batch.  It also
 * refuses DROP ROLE of a role that owns a consumer.
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"

#include "compat.h"
#include "queue.h"

PG_MODULE_MAGIC;

int			queue_max_payload_size = 1024 * 1024;
int			queue_max_queues = 1024;
int			queue_segment_size = 16 * 1024;	/* kB */
int			queue_segment_age = 60 * 1000;	/* ms */
int			queue_max_workers = 4;
int			queue_max_consumers = 64;
int			queue_worker_idle_timeout = 10000;
int			queue_maintenance_interval = 10000;
bool		queue_allow_superuser_consumers = false;

static ProcessUtility_hook_type prev_utility_hook = NULL;

void		_PG_init(void);

static void
define_settings(void)
{
	DefineCustomIntVariable("queue.max_payload_size",
							"Largest message accepted by send, payload and headers together.",
							"A larger message is refused with SQLSTATE 54000 before anything is written.",
							&queue_max_payload_size,
							1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_USERSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("queue.max_workers",
							"Most drain workers running at once, across all consumers.",
							"The cap on backends doing consumers' work; the rest waits in the queues.",
							&queue_max_workers,
							4, 0, 1024,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("queue.worker_idle_timeout",
							"How long a drain worker without work waits before it exits.",
							NULL,
							&queue_worker_idle_timeout,
							10000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("queue.maintenance_interval",
							"How often the launcher has each database's queues maintained.",
							"Maintenance prunes archives past their retention.",
							&queue_maintenance_interval,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("queue.allow_superuser_consumers",
							 "Lets a superuser own consumers, whose handlers then run as superuser.",
							 NULL,
							 &queue_allow_superuser_consumers,
							 false,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	/* a server-start setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("queue.max_queues",
								"Number of queues whose counters and wakeups fit in shared memory.",
								"Queues beyond it still work; their counters show as NULL and their waiters share one wakeup.",
								&queue_max_queues,
								1024, 16, 1000000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("queue.max_consumers",
								"Number of consumers, in all databases, that fit in shared memory.",
								"Consumers beyond it do not run; a warning says so.",
								&queue_max_consumers,
								64, 1, 100000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	}

	DefineCustomIntVariable("queue.segment_size",
							"Size at which a queue's current segment table is closed and a new one started.",
							"Smaller segments are recycled sooner and keep a queue smaller on disk; each recycle costs a TRUNCATE.",
							&queue_segment_size,
							16 * 1024, 8, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("queue.segment_age",
							"Age at which a queue's current segment table is closed and a new one started, if it holds anything.",
							"Bounds how long the dead rows of a slow queue wait to be recycled.",
							&queue_segment_age,
							60 * 1000, 10, 24 * 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	queue_reserve_guc_prefix("queue");
}

/*
 * The database a command needs without other sessions, or InvalidOid.
 * Only for a caller who owns what the command changes (else the command
 * fails its own check, and nobody may stop workers that way).
 */
static Oid
database_to_quiet(Node *stmt)
{
	const char *name = NULL;
	ListCell   *lc;
	Oid			db;

	if (IsA(stmt, DropStmt) && ((DropStmt *) stmt)->removeType == OBJECT_EXTENSION)
	{
		foreach(lc, ((DropStmt *) stmt)->objects)
		{
			Oid			ext;

			if (strcmp(strVal(lfirst(lc)), "queue") == 0 &&
				OidIsValid(ext = get_extension_oid("queue", true)) &&
				queue_extension_ownercheck(ext, GetUserId()))
				return MyDatabaseId;
		}
		return InvalidOid;
	}
	if (IsA(stmt, DropdbStmt))
		name = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		name = ((RenameStmt *) stmt)->subname;
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
		{
			if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
				name = ((AlterDatabaseStmt *) stmt)->dbname;
		}
	}
	else if (IsA(stmt, CreatedbStmt))
	{
		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
				name = defGetString(opt);
		}
	}
	if (name == NULL || !OidIsValid(db = get_database_oid(name, true)) ||
		!queue_database_ownercheck(db, GetUserId()))
		return InvalidOid;
	return db;
}

/* DROP ROLE of a consumer's owner would leave the consumer unable to run. */
static void
refuse_dropping_owners(DropRoleStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->roles)
	{
		RoleSpec   *role = lfirst(lc);
		Oid			roleid;
		char		consumer[NAMEDATALEN];
		Oid			database = MyDatabaseId;
		char	   *here;

		if (role->roletype != ROLESPEC_CSTRING ||
			!OidIsValid(roleid = get_role_oid(role->rolename, true)))
			continue;
		/* this database's catalog, then what the registry knows of the others */
		if ((here = consumer_owned_by(roleid)) != NULL)
			strlcpy(consumer, here, NAMEDATALEN);
		/* (the registry may not have caught up with this database yet) */
		if (here != NULL ||
			registry_consumer_of_owner(roleid, OidIsValid(get_namespace_oid("queue_internal", true)) ?
									   MyDatabaseId : InvalidOid, consumer, &database))
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" cannot be dropped because it owns consumer \"%s\"",
							role->rolename, consumer),
					 errdetail("The consumer is in database \"%s\".",
							   get_database_name(database) ? get_database_name(database) : "?"),
					 errhint("Drop the consumer with queue.unsubscribe() first.")));
	}
}

static void
queue_utility(QUEUE_UTILITY_ARGS)
{
	Oid			db = registry_ready() ? database_to_quiet(pstmt->utilityStmt) : InvalidOid;

	if (registry_ready() && IsA(pstmt->utilityStmt, DropRoleStmt))
		refuse_dropping_owners((DropRoleStmt *) pstmt->utilityStmt);

	if (OidIsValid(db))
		registry_stop_database(db);
	PG_TRY();
	{
		if (prev_utility_hook)
			prev_utility_hook(QUEUE_UTILITY_PASS);
		else
			standard_ProcessUtility(QUEUE_UTILITY_PASS);
	}
	PG_CATCH();
	{
		if (OidIsValid(db))
			registry_stop_database_done(db, false, IsA(pstmt->utilityStmt, DropStmt));
		PG_RE_THROW();
	}
	PG_END_TRY();
	/* after DROP EXTENSION, maintenance brings the registry up to date */
	if (OidIsValid(db))
		registry_stop_database_done(db, IsA(pstmt->utilityStmt, DropdbStmt),
									IsA(pstmt->utilityStmt, DropStmt));
}

void
_PG_init(void)
{
	define_settings();
	if (!process_shared_preload_libraries_in_progress)
		return;
	shmem_init();
	launcher_register();
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = queue_utility;
}
