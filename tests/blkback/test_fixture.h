/*
 * test_fixture.h - a private hypervisor and blkbackd for blkback's tests (no suite of its own):
 * hvsimd and the blkback daemon library each run in a forked child in a fresh directory under
 * the harness's temp dir; the test talks to them as a toolstack (domains), a control client
 * (ctl.h JSON lines) and a guest (test_front.h).
 */
#ifndef SLUICE_TESTS_BLKBACK_TEST_FIXTURE_H
#define SLUICE_TESTS_BLKBACK_TEST_FIXTURE_H

#include <json.h>
#include <stdint.h>
#include <sys/types.h>

#include <xen/xen.h>

struct bb_fix {
	pid_t hv_pid;   /**< hvsimd child, 0 when stopped */
	pid_t bb_pid;   /**< blkbackd child, 0 when stopped */
	char dir[160];
	char hv_dir[192];
	char pool[192];
	struct xs_handle *xs; /**< dom0 xenstore, for inspecting nodes */
	unsigned poll_us;     /**< blkbackd's adaptive polling (set before fix_start; kept) */
};

/** Start hvsimd and blkbackd in a new directory; returns once both accept. 0 or -errno. */
int fix_start(struct bb_fix *f);

/** Start (again) only blkbackd on the fixture's pool. 0 or -errno. */
int fix_start_bb(struct bb_fix *f);

/** SIGTERM blkbackd and reap it: its exit status (0 on an orderly exit) or -1. */
int fix_stop_bb(struct bb_fix *f);

/** Stop both daemons. */
void fix_stop(struct bb_fix *f);

/** Create guest domain @name (64 MiB). 0 or -errno. */
int fix_domain(struct bb_fix *f, const char *name, domid_t *domid);

/** Destroy a guest domain. 0 or -errno. */
int fix_destroy(struct bb_fix *f, domid_t domid);

/** Create volume @name of @bytes in the pool. */
int fix_vol(struct bb_fix *f, const char *name, uint64_t bytes);

/**
 * Send one request line (printf format) on a new control connection and parse the answer.
 * Returns the answer object (json_object_put it) or NULL when the daemon did not answer.
 */
json_object *fix_ctl(struct bb_fix *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Send a request without waiting: the connection's fd, or -errno. */
int fix_ctl_send(struct bb_fix *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Wait (10 s at most) for the answer on @fd, close it; the answer or NULL. */
json_object *fix_ctl_recv(int fd);

/** 1 when @answer has "ok": true. */
int fix_ok(json_object *answer);

/** The integer field @key of @o, or -1. */
int64_t fix_int(json_object *o, const char *key);

/** Read a dom0 xenstore node (malloc'd) or NULL. */
char *fix_read(struct bb_fix *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** The stats object of vbd (@domain, @vdev) from ctl "stats", or NULL (json_object_put it). */
json_object *fix_stats(struct bb_fix *f, const char *domain, const char *vdev);

#endif
