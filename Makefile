# queue: PGXS build. The version comes from queue.control alone.

EXTENSION  = queue
EXTVERSION = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" queue.control)

MODULE_big = queue
OBJS = \
	extension/queue.o \
	extension/validate.o \
	extension/shmem.o \
	extension/hidden.o \
	extension/catalog.o \
	extension/storage.o \
	extension/segment.o \
	extension/segment_indexes.o \
	extension/queue_admin.o \
	extension/lease.o \
	extension/message.o \
	extension/consumer.o \
	extension/consumer_views.o \
	extension/maintain.o \
	extension/dedup.o \
	extension/fifo_head.o \
	bgworker/registry.o \
	bgworker/ratelimit.o \
	bgworker/maintenance.o \
	bgworker/launcher.o \
	bgworker/drain.o

DATA = extension/queue--$(EXTVERSION).sql $(wildcard extension/queue--*--*.sql)

PG_CONFIG ?= pg_config

# Warnings are errors.  PostgreSQL's own headers are included as system
# headers, so that -Wextra judges our code and not theirs.
PG_CFLAGS += -Wall -Wextra -Werror
PG_CPPFLAGS += -I$(CURDIR)/extension -isystem $(shell $(PG_CONFIG) --includedir-server)

# pg_regress: sql/ and expected/ at the top, contrib's convention.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=queue

# Isolation specs live in test/isolation/{specs,expected}.
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=test/isolation/output

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PGXS := $(shell $(PG_CONFIG) --pgxs)
# On a fresh machine PGXS is not there yet: make test installs it first.
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
endif

# PGXS knows nothing of headers: every object depends on ours.
$(OBJS): extension/queue.h extension/compat.h

.PHONY: test demo bench soak

# Everything CI runs: installs what is missing, builds, installs, runs every
# suite, and one minute of the soak.
test:
	test/run

# Builds, installs, starts a throwaway cluster and runs the main scenario.
demo:
	test/run --demo

bench:
	test/run --bench

# The soak: producers, external consumers and drain workers for 10 minutes
# (SOAK_SECONDS), with a ledger; see test/soak.sh.
soak:
	test/run --soak
