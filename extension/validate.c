/*
 * validate.c
 *    Checks of the arguments users pass to the SQL API: queue names, batch
 *    sizes, intervals and message sizes.
 *
 * Every check raises a specific SQLSTATE before anything is read or written,
 * so that a rejected call leaves no trace.  Names follow one allow-list:
 * a lower-case letter or underscore, then lower-case letters, digits and
 * underscores, at most QUEUE_NAME_MAXLEN bytes.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue.h"

/* Rejects any name outside the allow-list with 42602. */
static void
validate_queue_name(const char *argname, const char *name)
{
	size_t		len = strlen(name);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s must not be empty", argname)));
	if (len > QUEUE_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s is too long", argname),
				 errdetail("A name has at most %d characters; this one has %zu.",
						   QUEUE_NAME_MAXLEN, len)));
	for (size_t i = 0; i < len; i++)
	{
		char		c = name[i];
		bool		ok = (c >= 'a' && c <= 'z') || c == '_' ||
			(i > 0 && c >= '0' && c <= '9');

		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid %s \"%s\"", argname, name),
					 errdetail("A name starts with a lower-case letter or an underscore and holds only lower-case letters, digits and underscores."),
					 errhint("Use a name such as \"orders\" or \"email_v2\".")));
	}
}

/* Refuses a NULL argument with 22023. */
void
require_not_null(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be null", argname)));
}

/* Returns a validated name argument; NULL is refused with 22023. */
char *
queue_name_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *name;

	require_not_null(fcinfo, argno, argname);
	name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	validate_queue_name(argname, name);
	return name;
}

/* Converts an interval to microseconds, months counted as 30 days. */
int64
interval_usecs(const Interval *iv, const char *argname)
{
	int64		usecs;
	int64		days = (int64) iv->month * DAYS_PER_MONTH + iv->day;

	if (pg_mul_s64_overflow(days, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, iv->time, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is out of range", argname)));
	return usecs;
}

/* The interval of a number of microseconds, in days and time. */
Datum
usecs_interval(int64 usecs)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->day = (int32) (usecs / USECS_PER_DAY);
	iv->time = usecs % USECS_PER_DAY;
	return IntervalPGetDatum(iv);
}

static char *
usecs_text(int64 usecs)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, usecs_interval(usecs)));
}

/*
 * Returns an interval argument in microseconds, or default_usecs when it is
 * NULL and a default exists (default_usecs >= 0); out of range is 22023.
 */
int64
interval_arg_usecs(FunctionCallInfo fcinfo, int argno, const char *argname,
				   int64 min_usecs, int64 max_usecs, int64 default_usecs)
{
	int64		usecs;

	if (PG_ARGISNULL(argno) && default_usecs >= 0)
		return default_usecs;
	require_not_null(fcinfo, argno, argname);
	usecs = interval_usecs(PG_GETARG_INTERVAL_P(argno), argname);
	if (usecs < min_usecs || usecs > max_usecs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is out of range", argname),
				 errdetail("It must lie between %s and %s.",
						   usecs_text(min_usecs), usecs_text(max_usecs))));
	return usecs;
}

/* Returns a batch size argument: 1 to QUEUE_MAX_BATCH, else 22023. */
int32
batch_size_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	int32		n;

	require_not_null(fcinfo, argno, argname);
	n = PG_GETARG_INT32(argno);
	if (n < 1 || n > QUEUE_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d", argname, QUEUE_MAX_BATCH),
				 errdetail("The value given was %d.", n)));
	return n;
}

/* Returns a bigint argument that must not be NULL (ids, receipts). */
int64
required_int8_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	require_not_null(fcinfo, argno, argname);
	return PG_GETARG_INT64(argno);
}

/* Refuses a message above queue.max_payload_size with 54000. */
void
check_payload_size(Datum payload, Datum headers, bool headers_null)
{
	Size		size = toast_raw_datum_size(payload);

	if (!headers_null)
		size += toast_raw_datum_size(headers);
	if (size > (Size) queue_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("message is too large"),
				 errdetail("The payload and headers take %zu bytes; queue.max_payload_size is %d bytes.",
						   size, queue_max_payload_size),
				 errhint("Store large objects elsewhere and send a reference, or raise queue.max_payload_size.")));
}

/* A max_attempts argument: 1 to QUEUE_MAX_ATTEMPTS_LIMIT, else 22023. */
int32
max_attempts_arg(FunctionCallInfo fcinfo, int argno)
{
	int32		n = PG_GETARG_INT32(argno);

	if (n < 1 || n > QUEUE_MAX_ATTEMPTS_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be between 1 and %d", QUEUE_MAX_ATTEMPTS_LIMIT),
				 errdetail("The value given was %d.", n)));
	return n;
}

/*
 * The names of a reset text[] argument, as C strings; *n gets how many.
 * NULL elements are refused with 22023.
 */
char	  **
reset_names_arg(FunctionCallInfo fcinfo, int argno, int *n)
{
	Datum	   *elems;
	bool	   *elem_nulls;
	char	  **names;

	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elem_nulls, n);
	names = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reset must not contain nulls")));
		names[i] = TextDatumGetCString(elems[i]);
	}
	return names;
}
