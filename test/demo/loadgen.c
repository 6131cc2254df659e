/*
 * loadgen.c
 *    The burst of the demo: many clients, each sending order requests at a
 *    fixed rate through PgBouncer, and a sampler watching the server.
 *
 * One process, one poll() loop, libpq's asynchronous API.  Each client is
 * one connection (through PgBouncer, like a front end's function instance)
 * with its own schedule: its k-th request is due at start + phase + k/rate,
 * whatever happened to the earlier ones, so both runs of the demo get the
 * same offered load (open loop).  A request waits for its client's
 * connection when that is still busy with an earlier one; its latency
 * counts from the time it was due, waiting included, as the user behind it
 * would count it.
 *
 * The fate of every request is recorded:
 *   accepted  the server answered with success;
 *   failed    the server or PgBouncer answered with an error (nothing was
 *             committed: a single statement that errors rolls back);
 *   expired   the client's patience (--timeout) ran out before the request
 *             could even be sent: it never left the client;
 *   in doubt  the patience ran out while the request was in flight, or the
 *             connection broke under it: it may or may not have committed.
 *             The demo looks each one up afterwards.
 * After a failure the client reconnects, as a front end would.
 *
 * A separate direct connection (not through PgBouncer) samples the server
 * every --sample-ms: backends doing order processing (client backends in
 * demo.place_order, drain workers in their handler), backends waiting on a
 * lock, the queue's depth, deadlocks so far.  After the burst it goes on
 * sampling until the queue is empty and no backend processes orders (or
 * --settle seconds pass), so the timeline covers the drain too.
 *
 * Writes PREFIX-requests.tsv (request id, fate, payload), PREFIX-seconds.csv
 * (per second, the fates that became known in it: accepted, failed,
 * expired, in doubt, and the accepted ones' latency p50/p99),
 * PREFIX-samples.csv (the sampler's rows) and PREFIX-summary.txt
 * (key=value, read by burst.sh).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define Max(a, b) ((a) > (b) ? (a) : (b))

typedef enum
{
	C_DOWN,						/* no connection; reconnect at retry_at */
	C_CONNECTING,
	C_IDLE,
	C_BUSY						/* a request in flight */
} ClientState;

typedef struct Client
{
	int			index;
	PGconn	   *conn;
	ClientState state;
	int			poll_events;	/* what PQconnectPoll asked for */
	double		retry_at;
	long		seq;			/* the next request of its schedule */
	double		due;			/* when request seq is due */
	long		request_id;		/* the request in flight */
	double		request_due;
	char	   *payload;		/* of the request in flight */
	int			error_seen;
} Client;

typedef struct Second
{
	long		accepted;
	long		failed;
	long		expired;
	long		in_doubt;
} Second;

typedef struct Latency
{
	int			second;
	float		ms;
} Latency;

static struct
{
	const char *target;
	const char *monitor;
	const char *mode;
	int			clients;
	double		duration;
	double		rate;
	double		timeout;
	int			products;
	int			hot_products;
	int			customers;
	unsigned	seed;
	const char *out;
	double		settle;
	int			sample_ms;
	int			quiet;
} opt = {
	.target = NULL,
	.monitor = NULL,
	.mode = "direct",
	.clients = 500,
	.duration = 30,
	.rate = 2,
	.timeout = 10,
	.products = 1000,
	.hot_products = 5,
	.customers = 2000,
	.seed = 1,
	.out = "burst",
	.settle = 300,
	.sample_ms = 150,
	.quiet = 0,
};

static double t0;
static int	nseconds;
static Second *seconds;
static Latency *latencies;
static long nlatencies,
			latencies_cap;
static long total_sent,
			total_accepted,
			total_failed,
			total_expired,
			total_in_doubt;
static FILE *requests_file;
static FILE *samples_file;
static volatile sig_atomic_t interrupted = 0;

/* The errors the clients saw, by message, for the summary. */
#define MAX_ERRORS 16
static struct
{
	char		text[160];
	long		count;
}			errors[MAX_ERRORS];
static int	nerrors;

/* The sampler's last row and its peaks. */
static struct
{
	PGconn	   *conn;
	int			busy;
	double		next_at;
	int			processing;
	int			lock_waits;
	int			backends;
	long		depth;			/* -1: unknown */
	long		deadlocks0;
	long		deadlocks;
	int			have_row;
	int			peak_processing;
	int			peak_lock_waits;
	int			peak_backends;
	long		peak_depth;
	double		lock_wait_seconds;	/* sum of waiting backends x interval */
	double		last_sample_t;
	long		nsamples;
} mon = {.depth = -1, .deadlocks0 = -1};

/* Prints the message and exits 1. */
static void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "loadgen: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* Wall-clock seconds: the server's commit times are compared with them. */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* SIGINT, SIGTERM: stop, and still write what was measured. */
static void
on_signal(int sig)
{
	(void) sig;
	interrupted = 1;
}

/* A request's order, derived from its id alone, so both runs send the same. */
/* splitmix64's finaliser: a good hash of one 64-bit word. */
static uint64_t
mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The order of a request, as JSON: 2 or 3 distinct products, quantities 1-3. */
static char *
make_payload(long request_id)
{
	uint64_t	h = mix((uint64_t) request_id ^ ((uint64_t) opt.seed << 40));
	int			nlines = 2 + (int) (h % 2);
	int			products[3];
	int			customer;
	char	   *buf = malloc(256);
	int			len;

	h = mix(h);
	customer = 1 + (int) (h % (uint64_t) opt.customers);
	for (int i = 0; i < nlines; i++)
	{
		int			p;
		int			again;

		do
		{
			h = mix(h);
			/* every other line takes a hot product */
			if (opt.hot_products > 0 && (h & 1))
				p = 1 + (int) ((h >> 1) % (uint64_t) opt.hot_products);
			else
				p = 1 + (int) ((h >> 1) % (uint64_t) opt.products);
			again = 0;
			for (int j = 0; j < i; j++)
				if (products[j] == p)
					again = 1;
		} while (again);
		products[i] = p;
	}
	len = snprintf(buf, 256, "{\"request_id\": %ld, \"customer_id\": %d, \"lines\": [",
				   request_id, customer);
	for (int i = 0; i < nlines; i++)
	{
		h = mix(h);
		len += snprintf(buf + len, 256 - len, "%s{\"product_id\": %d, \"qty\": %d}",
						i ? ", " : "", products[i], 1 + (int) (h % 3));
	}
	snprintf(buf + len, 256 - len, "]}");
	return buf;
}

/* The second since the start that t falls in, clamped to the table. */
static int
second_of(double t)
{
	int			s = (int) floor(t - t0);

	if (s < 0)
		s = 0;
	if (s >= nseconds)
		s = nseconds - 1;
	return s;
}

/* Counts a request's fate in the second it became known. */
static void
record(Client *c, const char *fate, long request_id, const char *payload, double t)
{
	Second	   *s = &seconds[second_of(t)];

	if (strcmp(fate, "accepted") == 0)
	{
		s->accepted++;
		total_accepted++;
		if (nlatencies == latencies_cap)
		{
			latencies_cap = latencies_cap ? latencies_cap * 2 : 65536;
			latencies = realloc(latencies, latencies_cap * sizeof(Latency));
			if (latencies == NULL)
				die("out of memory");
		}
		latencies[nlatencies].second = second_of(t);
		latencies[nlatencies].ms = (float) ((t - c->request_due) * 1000.0);
		nlatencies++;
	}
	else if (strcmp(fate, "failed") == 0)
		s->failed++, total_failed++;
	else if (strcmp(fate, "expired") == 0)
		s->expired++, total_expired++;
	else
		s->in_doubt++, total_in_doubt++;
	fprintf(requests_file, "%ld\t%s\t%s\n", request_id, fate, payload);
}

/* Counts an error message by its first line, for the summary. */
static void
note_error(const char *msg)
{
	char		text[160];
	size_t		len;

	snprintf(text, sizeof(text), "%s", msg ? msg : "(no message)");
	len = strcspn(text, "\n");
	text[len] = '\0';
	/* request ids make every message different: cut them off */
	if (strncmp(text, "ERROR:  request ", 16) == 0)
		snprintf(text, sizeof(text), "ERROR:  request expired before it was processed");
	for (int i = 0; i < nerrors; i++)
		if (strcmp(errors[i].text, text) == 0)
		{
			errors[i].count++;
			return;
		}
	if (nerrors < MAX_ERRORS)
	{
		snprintf(errors[nerrors].text, sizeof(errors[nerrors].text), "%s", text);
		errors[nerrors++].count = 1;
	}
}

/* ---- clients ------------------------------------------------------------- */

/* Starts a connection through PgBouncer; on failure, tries again later. */
static void
client_connect(Client *c)
{
	c->conn = PQconnectStart(opt.target);
	if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD)
	{
		if (c->conn)
			PQfinish(c->conn);
		c->conn = NULL;
		c->state = C_DOWN;
		c->retry_at = now() + 0.1;
		return;
	}
	c->state = C_CONNECTING;
	c->poll_events = POLLOUT;
}

/* Closes the client's connection; it reconnects after a short pause. */
static void
client_drop(Client *c, double t)
{
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	c->state = C_DOWN;
	/* a little jitter, so that reconnects do not come in waves */
	c->retry_at = t + 0.05 + (double) (mix((uint64_t) c->index ^ (uint64_t) (t * 1000)) % 100) / 1000.0;
}

/* Moves to the client's next request and the time it is due. */
static void
client_advance(Client *c)
{
	c->seq++;
	c->due = t0 + ((double) c->index / opt.clients + c->seq) / opt.rate;
}

/* Whether the client's schedule still has a request before the end. */
static int
client_has_due(Client *c, double end)
{
	return c->due < end;
}

/* Sends the client's due request; its fate comes with the answer. */
static void
client_send(Client *c, double t)
{
	const char *values[2];
	char		deadline[64];
	int			ok;

	c->request_id = c->seq * (long) opt.clients + c->index + 1;
	c->request_due = c->due;
	free(c->payload);
	c->payload = make_payload(c->request_id);
	values[0] = c->payload;
	if (strcmp(opt.mode, "direct") == 0)
	{
		snprintf(deadline, sizeof(deadline), "%.6f", c->due + opt.timeout);
		values[1] = deadline;
		ok = PQsendQueryParams(c->conn,
							   "SELECT demo.place_order($1::jsonb, to_timestamp($2::float8))",
							   2, NULL, values, NULL, NULL, 0);
	}
	else
		ok = PQsendQueryParams(c->conn, "SELECT queue.send('orders', $1::jsonb)",
							   1, NULL, values, NULL, NULL, 0);
	client_advance(c);
	total_sent++;
	if (!ok)
	{
		/* nothing left the client when the send itself failed */
		note_error(PQerrorMessage(c->conn));
		record(c, "failed", c->request_id, c->payload, t);
		client_drop(c, t);
		return;
	}
	c->state = C_BUSY;
	c->error_seen = 0;
	(void) PQflush(c->conn);
}

/* Gives up the requests that waited past the client's patience unsent. */
static void
client_expire(Client *c, double t, double end)
{
	while (client_has_due(c, end) && t - c->due > opt.timeout)
	{
		long		id = c->seq * (long) opt.clients + c->index + 1;
		char	   *payload = make_payload(id);

		c->request_due = c->due;
		record(c, "expired", id, payload, t);
		free(payload);
		client_advance(c);
	}
}

/* Reads the answer to the request in flight, as far as it has come. */
static void
client_result(Client *c, double t)
{
	PGresult   *res;

	if (!PQconsumeInput(c->conn))
	{
		/* after an error answer, a closed connection changes nothing */
		if (!c->error_seen)
		{
			note_error(PQerrorMessage(c->conn));
			record(c, "in_doubt", c->request_id, c->payload, t);
		}
		client_drop(c, t);
		return;
	}
	while (!PQisBusy(c->conn))
	{
		res = PQgetResult(c->conn);
		if (res == NULL)
		{
			if (!c->error_seen)
				record(c, "accepted", c->request_id, c->payload, t);
			c->state = C_IDLE;
			if (PQstatus(c->conn) == CONNECTION_BAD)
				client_drop(c, t);
			return;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK && !c->error_seen)
		{
			/* an error answer: the statement, and its transaction, rolled back */
			note_error(PQresultErrorMessage(res));
			record(c, "failed", c->request_id, c->payload, t);
			c->error_seen = 1;
		}
		PQclear(res);
		if (PQstatus(c->conn) == CONNECTION_BAD)
		{
			if (!c->error_seen)
			{
				note_error(PQerrorMessage(c->conn));
				record(c, "in_doubt", c->request_id, c->payload, t);
			}
			client_drop(c, t);
			return;
		}
	}
}

/* ---- the sampler ----------------------------------------------------------- */

static const char *sample_sql =
"SELECT extract(epoch FROM clock_timestamp())::float8,"
"  count(*) FILTER (WHERE state = 'active' AND ("
"     (backend_type = 'client backend' AND query LIKE '%demo.place_order%')"
"     OR (backend_type = 'queue drain worker' AND query = 'running the handler'))),"
"  count(*) FILTER (WHERE wait_event_type = 'Lock'),"
"  count(*) FILTER (WHERE backend_type = 'client backend'),"
"  (SELECT messages FROM queue.queues WHERE queue_name = 'orders'),"
"  (SELECT sum(deadlocks) FROM pg_stat_database)::bigint"
"  FROM pg_stat_activity WHERE pid <> pg_backend_pid()";

/* Connects the sampler, directly to the server. */
static void
monitor_start(void)
{
	mon.conn = PQconnectdb(opt.monitor);
	if (PQstatus(mon.conn) != CONNECTION_OK)
		die("cannot connect the sampler: %s", PQerrorMessage(mon.conn));
	PQsetnonblocking(mon.conn, 1);
	fprintf(samples_file, "t,processing,lock_waits,backends,depth,deadlocks\n");
}

/* Sends the sample query when one is due and none is out. */
static void
monitor_send(double t)
{
	if (mon.busy || t < mon.next_at)
		return;
	if (!PQsendQuery(mon.conn, sample_sql))
		die("sampler: %s", PQerrorMessage(mon.conn));
	mon.busy = 1;
	mon.next_at = t + opt.sample_ms / 1000.0;
}

/* Reads a sample: the last values, the peaks, a row of samples.csv. */
static void
monitor_result(void)
{
	PGresult   *res;

	if (!PQconsumeInput(mon.conn))
		die("sampler: %s", PQerrorMessage(mon.conn));
	while (!PQisBusy(mon.conn))
	{
		res = PQgetResult(mon.conn);
		if (res == NULL)
		{
			mon.busy = 0;
			return;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die("sampler: %s", PQresultErrorMessage(res));
		{
			double		t = atof(PQgetvalue(res, 0, 0));

			mon.processing = atoi(PQgetvalue(res, 0, 1));
			mon.lock_waits = atoi(PQgetvalue(res, 0, 2));
			mon.backends = atoi(PQgetvalue(res, 0, 3));
			mon.depth = PQgetisnull(res, 0, 4) ? -1 : atol(PQgetvalue(res, 0, 4));
			mon.deadlocks = atol(PQgetvalue(res, 0, 5));
			if (mon.deadlocks0 < 0)
				mon.deadlocks0 = mon.deadlocks;
			if (mon.have_row)
				mon.lock_wait_seconds += mon.lock_waits * (t - mon.last_sample_t);
			mon.last_sample_t = t;
			mon.have_row = 1;
			mon.nsamples++;
			if (mon.processing > mon.peak_processing)
				mon.peak_processing = mon.processing;
			if (mon.lock_waits > mon.peak_lock_waits)
				mon.peak_lock_waits = mon.lock_waits;
			if (mon.backends > mon.peak_backends)
				mon.peak_backends = mon.backends;
			if (mon.depth > mon.peak_depth)
				mon.peak_depth = mon.depth;
			fprintf(samples_file, "%.3f,%d,%d,%d,%ld,%ld\n", t - t0, mon.processing,
					mon.lock_waits, mon.backends, mon.depth, mon.deadlocks - mon.deadlocks0);
		}
		PQclear(res);
	}
}

/* ---- reports --------------------------------------------------------------- */

/* qsort: latencies by second, then by value. */
static int
cmp_latency(const void *a, const void *b)
{
	const Latency *x = a,
			   *y = b;

	if (x->second != y->second)
		return x->second - y->second;
	return (x->ms > y->ms) - (x->ms < y->ms);
}

/* qsort: floats ascending. */
static int
cmp_float(const void *a, const void *b)
{
	float		x = *(const float *) a,
				y = *(const float *) b;

	return (x > y) - (x < y);
}

/* The p-quantile of n sorted values (nearest rank); NaN for none. */
static double
percentile(const float *v, long n, double p)
{
	long		i;

	if (n == 0)
		return NAN;
	i = (long) ceil(p * n) - 1;
	if (i < 0)
		i = 0;
	return v[i];
}

/* Opens PREFIX-suffix for writing, or dies. */
static FILE *
open_out(const char *suffix)
{
	char		path[4096];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s-%s", opt.out, suffix);
	f = fopen(path, "w");
	if (f == NULL)
		die("cannot write %s: %s", path, strerror(errno));
	return f;
}

/* Writes seconds.csv, summary.txt and errors.txt. */
static void
write_reports(double requests_done, double settled_at, int last_second)
{
	FILE	   *f = open_out("seconds.csv");
	float	   *all = malloc((nlatencies + 1) * sizeof(float));
	long		i = 0;

	qsort(latencies, nlatencies, sizeof(Latency), cmp_latency);
	fprintf(f, "second,accepted,failed,expired,in_doubt,p50_ms,p99_ms\n");
	for (int s = 0; s <= last_second; s++)
	{
		long		first = i;
		double		p50,
					p99;

		while (i < nlatencies && latencies[i].second == s)
			i++;
		for (long k = first; k < i; k++)
			all[k - first] = latencies[k].ms;
		p50 = percentile(all, i - first, 0.50);
		p99 = percentile(all, i - first, 0.99);
		fprintf(f, "%d,%ld,%ld,%ld,%ld,", s, seconds[s].accepted, seconds[s].failed,
				seconds[s].expired, seconds[s].in_doubt);
		if (isnan(p50))
			fprintf(f, ",\n");
		else
			fprintf(f, "%.1f,%.1f\n", p50, p99);
	}
	fclose(f);

	for (long k = 0; k < nlatencies; k++)
		all[k] = latencies[k].ms;
	qsort(all, nlatencies, sizeof(float), cmp_float);

	f = open_out("summary.txt");
	fprintf(f, "mode=%s\nclients=%d\nduration=%.1f\nrate=%.3f\ntimeout=%.1f\n",
			opt.mode, opt.clients, opt.duration, opt.rate, opt.timeout);
	fprintf(f, "start_epoch=%.6f\nrequests_done=%.3f\nsettled_at=%.3f\n", t0,
			requests_done - t0, settled_at - t0);
	fprintf(f, "sent=%ld\naccepted=%ld\nfailed=%ld\nexpired=%ld\nin_doubt=%ld\n",
			total_sent, total_accepted, total_failed, total_expired, total_in_doubt);
	fprintf(f, "offered=%ld\n", total_sent + total_expired);
	fprintf(f, "p50_ms=%.1f\np99_ms=%.1f\n", percentile(all, nlatencies, 0.50),
			percentile(all, nlatencies, 0.99));
	fprintf(f, "peak_processing=%d\npeak_lock_waits=%d\npeak_backends=%d\npeak_depth=%ld\n",
			mon.peak_processing, mon.peak_lock_waits, mon.peak_backends, mon.peak_depth);
	fprintf(f, "lock_wait_seconds=%.1f\nsamples=%ld\n", mon.lock_wait_seconds, mon.nsamples);
	fprintf(f, "deadlocks_seen=%ld\n", mon.deadlocks0 < 0 ? 0 : mon.deadlocks - mon.deadlocks0);
	fprintf(f, "interrupted=%d\n", (int) interrupted);
	fclose(f);

	f = open_out("errors.txt");
	for (int k = 0; k < nerrors; k++)
		fprintf(f, "%ld\t%s\n", errors[k].count, errors[k].text);
	fclose(f);
	free(all);
}

/*
 * The progress line: in place on a terminal (cut to its width, so that it
 * never wraps), every 5 s otherwise.
 */
static void
progress(double t, double end, int in_flight, int final)
{
	static double last = 0;
	int			tty = isatty(2);
	char		line[512];
	struct winsize ws;

	if (opt.quiet || (!final && t - last < (tty ? 0.5 : 5.0)))
		return;
	last = t;
	/* what matters most first: a narrow terminal cuts the end */
	snprintf(line, sizeof(line), "%-8s %5.1fs%s accepted %6ld, turned away %6ld | processing %3d,"
			 " on locks %3d | queue %6ld | sent %6ld, in flight %4d",
			 opt.mode, t - t0, t > end ? "+" : " ", total_accepted,
			 total_failed + total_expired + total_in_doubt, mon.processing, mon.lock_waits,
			 mon.depth < 0 ? 0 : mon.depth, total_sent, in_flight);
	if (!tty)
	{
		fprintf(stderr, "%s\n", line);
		return;
	}
	if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && ws.ws_col < sizeof(line))
		line[ws.ws_col - 1] = '\0';
	fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
}

/* Prints the options and exits 2. */
static void
usage(void)
{
	fprintf(stderr,
			"usage: loadgen --target CONNINFO --monitor CONNINFO [options]\n"
			"  --mode direct|buffered   what a request does (default direct)\n"
			"  --clients N              connections, each a front end instance (500)\n"
			"  --duration S             seconds of burst (30)\n"
			"  --rate R                 requests per second per client (2)\n"
			"  --timeout S              the client's patience per request (10)\n"
			"  --products N --hot-products N --customers N   as in schema.sql\n"
			"  --seed N                 varies the requests (1)\n"
			"  --settle S               most seconds to wait for the drain (300)\n"
			"  --sample-ms N            sampler interval (150)\n"
			"  --out PREFIX             output files' prefix (burst)\n"
			"  --quiet                  no progress line\n");
	exit(2);
}

/* Reads the options into opt, and checks them. */
static void
parse_args(int argc, char **argv)
{
	static struct option longopts[] = {
		{"target", required_argument, NULL, 't'},
		{"monitor", required_argument, NULL, 'm'},
		{"mode", required_argument, NULL, 'M'},
		{"clients", required_argument, NULL, 'c'},
		{"duration", required_argument, NULL, 'd'},
		{"rate", required_argument, NULL, 'r'},
		{"timeout", required_argument, NULL, 'T'},
		{"products", required_argument, NULL, 'p'},
		{"hot-products", required_argument, NULL, 'h'},
		{"customers", required_argument, NULL, 'u'},
		{"seed", required_argument, NULL, 's'},
		{"settle", required_argument, NULL, 'S'},
		{"sample-ms", required_argument, NULL, 'i'},
		{"out", required_argument, NULL, 'o'},
		{"quiet", no_argument, NULL, 'q'},
		{NULL, 0, NULL, 0}
	};
	int			ch;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (ch)
		{
			case 't': opt.target = optarg; break;
			case 'm': opt.monitor = optarg; break;
			case 'M': opt.mode = optarg; break;
			case 'c': opt.clients = atoi(optarg); break;
			case 'd': opt.duration = atof(optarg); break;
			case 'r': opt.rate = atof(optarg); break;
			case 'T': opt.timeout = atof(optarg); break;
			case 'p': opt.products = atoi(optarg); break;
			case 'h': opt.hot_products = atoi(optarg); break;
			case 'u': opt.customers = atoi(optarg); break;
			case 's': opt.seed = (unsigned) atoi(optarg); break;
			case 'S': opt.settle = atof(optarg); break;
			case 'i': opt.sample_ms = atoi(optarg); break;
			case 'o': opt.out = optarg; break;
			case 'q': opt.quiet = 1; break;
			default: usage();
		}
	}
	if (!opt.target || !opt.monitor || optind != argc)
		usage();
	if (strcmp(opt.mode, "direct") != 0 && strcmp(opt.mode, "buffered") != 0)
		die("--mode is direct or buffered");
	if (opt.clients < 1 || opt.duration <= 0 || opt.rate <= 0 || opt.timeout <= 0 ||
		opt.products < 3 || opt.hot_products < 0 || opt.hot_products > opt.products ||
		opt.customers < 1 || opt.sample_ms < 10 || opt.settle < 0)
		die("an option is out of range");
}

/* Moves a connecting client on; it becomes idle once PgBouncer lets it in. */
static void
client_poll_connect(Client *c, double t)
{
	switch (PQconnectPoll(c->conn))
	{
		case PGRES_POLLING_READING:
			c->poll_events = POLLIN;
			break;
		case PGRES_POLLING_WRITING:
			c->poll_events = POLLOUT;
			break;
		case PGRES_POLLING_OK:
			PQsetnonblocking(c->conn, 1);
			c->state = C_IDLE;
			break;
		default:
			note_error(PQerrorMessage(c->conn));
			client_drop(c, t);
			break;
	}
}

/* Connects every client before the clock starts; gives up after 30 s. */
static void
connect_all(Client *clients, struct pollfd *fds)
{
	double		deadline = now() + 30;
	int			pending = opt.clients;

	for (int i = 0; i < opt.clients; i++)
	{
		clients[i].index = i;
		client_connect(&clients[i]);
	}
	while (pending > 0 && now() < deadline && !interrupted)
	{
		int			n = 0;

		pending = 0;
		for (int i = 0; i < opt.clients; i++)
		{
			Client	   *c = &clients[i];

			if (c->state == C_DOWN && now() >= c->retry_at)
				client_connect(c);
			if (c->state == C_DOWN || c->state == C_CONNECTING)
				pending++;
			if (c->state != C_CONNECTING)
				continue;
			fds[n].fd = PQsocket(c->conn);
			fds[n].events = c->poll_events;
			fds[n].revents = 0;
			n++;
		}
		(void) poll(fds, n, 10);
		for (int i = 0; i < opt.clients; i++)
			if (clients[i].state == C_CONNECTING)
				client_poll_connect(&clients[i], now());
	}
	if (pending > 0)
		die("%d clients could not connect through %s", pending, opt.target);
}

/*
 * The burst and the drain after it: each pass lets every client do what is
 * due, polls the connections in use and the sampler's, and handles what
 * came in.  Returns when every request has its fate and the server has
 * settled, when --settle runs out, or at an interruption.
 */
static void
run(Client *clients, struct pollfd *fds, int *fd_client, double *requests_done)
{
	double		end = t0 + opt.duration;
	int			quiet_samples = 0;
	long		seen_samples = 0;

	for (int i = 0; i < opt.clients; i++)
	{
		clients[i].seq = -1;
		client_advance(&clients[i]);
	}

	for (;;)
	{
		double		t = now();
		double		wake = t + 0.2;
		int			n = 0,
					in_flight = 0,
					pending = 0;

		for (int i = 0; i < opt.clients && !interrupted; i++)
		{
			Client	   *c = &clients[i];

			if (c->state == C_DOWN && t >= c->retry_at)
				client_connect(c);
			if (c->state == C_BUSY && t - c->request_due > opt.timeout)
			{
				/* the patience ran out in flight: fate unknown */
				note_error("client timeout: request in flight past the client's patience");
				record(c, "in_doubt", c->request_id, c->payload, t);
				client_drop(c, t);
			}
			if (c->state != C_BUSY)
				client_expire(c, t, end);
			if (c->state == C_IDLE && client_has_due(c, end) && c->due <= t)
				client_send(c, t);

			if (c->state == C_BUSY)
				in_flight++;
			if (c->state == C_BUSY || client_has_due(c, end))
				pending++;
			if (c->state == C_DOWN && c->retry_at < wake)
				wake = c->retry_at;
			if (c->state == C_IDLE && client_has_due(c, end) && c->due < wake)
				wake = c->due;
			if (c->state == C_BUSY && c->request_due + opt.timeout < wake)
				wake = c->request_due + opt.timeout;
			if (c->state == C_CONNECTING || c->state == C_BUSY)
			{
				fds[n].fd = PQsocket(c->conn);
				fds[n].events = c->state == C_CONNECTING ? c->poll_events : POLLIN;
				fds[n].revents = 0;
				fd_client[n++] = i;
			}
		}
		monitor_send(t);
		fds[n].fd = PQsocket(mon.conn);
		fds[n].events = POLLIN;
		fds[n].revents = 0;
		if (mon.next_at < wake)
			wake = mon.next_at;

		progress(t, end, in_flight, 0);
		if (interrupted)
			return;
		if (t >= end && pending == 0)
		{
			if (*requests_done == 0)
				*requests_done = t;
			/* after the burst: wait for the queue to drain and processing to stop */
			if (mon.nsamples != seen_samples)
			{
				seen_samples = mon.nsamples;
				if (mon.depth == 0 && mon.processing == 0)
					quiet_samples++;
				else
					quiet_samples = 0;
			}
			if (quiet_samples >= 3 || t > *requests_done + opt.settle)
				return;
		}

		if (poll(fds, n + 1, (int) Max(0, ceil((wake - t) * 1000))) < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		t = now();
		if (fds[n].revents)
			monitor_result();
		for (int k = 0; k < n; k++)
		{
			Client	   *c = &clients[fd_client[k]];

			if (fds[k].revents == 0)
				continue;
			if (c->state == C_CONNECTING)
				client_poll_connect(c, t);
			else if (PQflush(c->conn) < 0)
			{
				note_error(PQerrorMessage(c->conn));
				record(c, "in_doubt", c->request_id, c->payload, t);
				client_drop(c, t);
			}
			else
				client_result(c, t);
		}
	}
}

int
main(int argc, char **argv)
{
	Client	   *clients;
	struct pollfd *fds;
	int		   *fd_client;
	double		requests_done = 0;

	parse_args(argc, argv);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);

	requests_file = open_out("requests.tsv");
	samples_file = open_out("samples.csv");
	nseconds = (int) (opt.duration + opt.timeout + opt.settle) + 30;
	seconds = calloc(nseconds, sizeof(Second));
	clients = calloc(opt.clients, sizeof(Client));
	fds = calloc(opt.clients + 1, sizeof(struct pollfd));
	fd_client = calloc(opt.clients, sizeof(int));
	if (!seconds || !clients || !fds || !fd_client)
		die("out of memory");

	monitor_start();
	connect_all(clients, fds);
	t0 = now();
	run(clients, fds, fd_client, &requests_done);

	progress(now(), t0 + opt.duration, 0, 1);
	/* the requests still in flight at an interruption have an unknown fate */
	for (int i = 0; i < opt.clients; i++)
	{
		if (clients[i].state == C_BUSY)
			record(&clients[i], "in_doubt", clients[i].request_id, clients[i].payload, now());
		if (clients[i].conn)
			PQfinish(clients[i].conn);
	}
	fclose(requests_file);
	fclose(samples_file);
	write_reports(requests_done ? requests_done : now(), now(), second_of(now()));
	PQfinish(mon.conn);
	return interrupted ? 130 : 0;
}
