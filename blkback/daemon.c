/*
 * daemon.c - blkbackd's lifetime (blkback.h): the pool lock, the hypervisor and xenstore
 * connections, the control thread's event loop, and the orderly shutdown on SIGTERM.
 */
#define LOG_TAG "blkbackd"
#include "blkback/blkback_internal.h"
#include "hv/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <xenstore.h>

void blkback_opts_default(struct blkback_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->hv_kind = HV_KIND_SIM;
	o->engine = TARGET_ENGINE_IO_URING;
	o->max_ring_page_order = BB_MAX_RING_PAGE_ORDER;
	o->max_queues = 0;
	o->max_indirect_segs = BB_MAX_SEGS;
	o->persistent = 1;
}

/* Take POOL/blkbackd.lock: one daemon per pool. */
static int take_lock(struct blkback *bb)
{
	char pid[32];
	int n;

	snprintf(bb->lock_path, sizeof(bb->lock_path), "%s/blkbackd.lock", bb->opts.pool);
	bb->lock_fd = open(bb->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (bb->lock_fd < 0) {
		log_err("cannot open %s: %s", bb->lock_path, strerror(errno));
		return -errno;
	}
	if (flock(bb->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;

		n = (int)pread(bb->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (rc == -EBUSY)
			log_err("pool %s is already served by another blkbackd (pid %s)",
				bb->opts.pool, pid[0] ? pid : "unknown");
		else
			log_err("cannot lock %s: %s", bb->lock_path, strerror(-rc));
		close(bb->lock_fd);
		bb->lock_fd = -1;
		return rc;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(bb->lock_fd, 0) < 0 || pwrite(bb->lock_fd, pid, (size_t)n, 0) != n)
		log_warn("cannot record our pid in %s", bb->lock_path);
	return 0;
}

int blkback_new(struct blkback **out, const struct blkback_opts *o)
{
	struct blkback *bb;
	long cpus;
	int rc;

	if (o->max_ring_page_order > BB_MAX_RING_PAGE_ORDER) {
		log_err("max ring page order %u is above %u", o->max_ring_page_order,
			BB_MAX_RING_PAGE_ORDER);
		return -EINVAL;
	}
	if (o->max_indirect_segs &&
	    (o->max_indirect_segs <= BB_DIRECT_SEGS || o->max_indirect_segs > BB_MAX_SEGS)) {
		log_err("max indirect segments must be 0 (none) or %u..%u, not %u",
			BB_DIRECT_SEGS + 1, BB_MAX_SEGS, o->max_indirect_segs);
		return -EINVAL;
	}
	bb = calloc(1, sizeof(*bb));
	if (!bb)
		return -ENOMEM;
	bb->opts = *o;
	bb->lock_fd = bb->ctl_fd = bb->wake_efd = bb->timer_fd = -1;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	bb->max_queues = o->max_queues ? o->max_queues : (cpus > 0 ? (unsigned)cpus : 1);
	if (bb->max_queues > BB_MAX_QUEUES)
		bb->max_queues = BB_MAX_QUEUES;

	rc = pool_init(o->pool);
	if (rc < 0) {
		log_err("cannot create the pool directory %s: %s", o->pool, strerror(-rc));
		goto err;
	}
	rc = take_lock(bb);
	if (rc < 0)
		goto err;
	rc = bb_dedup_start(bb);
	if (rc < 0)
		goto err;
	rc = bb_qos_start(bb);
	if (rc < 0)
		goto err;
	rc = hv_open(&bb->hv, o->hv_kind, o->hv_dir);
	if (rc < 0) {
		log_err("cannot reach the hypervisor%s%s: %s", o->hv_dir ? " in " : "",
			o->hv_dir ? o->hv_dir : "", hv_strerror(rc));
		goto err;
	}
	bb->xs = hv_xs_open(bb->hv);
	if (!bb->xs) {
		rc = -(errno ? errno : EIO);
		log_err("cannot connect to xenstore: %s", strerror(-rc));
		goto err;
	}
	rc = hv_loop_new(&bb->loop);
	if (rc < 0)
		goto err;
	bb->wake_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	bb->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (bb->wake_efd < 0 || bb->timer_fd < 0) {
		rc = -errno;
		goto err;
	}
	/* xs_fileno before the first watch: libxenstore then signals watch events on that fd. */
	rc = hv_loop_add(bb->loop, xs_fileno(bb->xs), EPOLLIN, bb_xenbus_on_watch, bb);
	rc = rc ?: hv_loop_add(bb->loop, bb->wake_efd, EPOLLIN, bb_xenbus_on_wake, bb);
	rc = rc ?: hv_loop_add(bb->loop, bb->timer_fd, EPOLLIN, bb_xenbus_on_timer, bb);
	if (rc < 0)
		goto err;
	rc = bb_ctl_start(bb);
	if (rc < 0) {
		log_err("cannot listen on %s: %s", bb->ctl_path, strerror(-rc));
		goto err;
	}
	*out = bb;
	return 0;

err:
	blkback_free(bb);
	return rc;
}

int blkback_run(struct blkback *bb, volatile sig_atomic_t *stop)
{
	int rc;

	bb->stop = stop;
	rc = bb_xenbus_start(bb);
	if (rc < 0) {
		log_err("cannot watch the backend directory: %s", strerror(-rc));
		return rc;
	}
	log_info("serving pool %s (control socket %s): ring order up to %u, up to %u queue%s, "
		 "%u indirect segments, persistent grants %s",
		 bb->opts.pool, bb->ctl_path, bb->opts.max_ring_page_order, bb->max_queues,
		 bb->max_queues > 1 ? "s" : "", bb->opts.max_indirect_segs,
		 bb->opts.persistent ? "offered" : "off");
	rc = hv_loop_run(bb->loop, stop, -1);
	if (rc < 0)
		log_err("event loop failed: %s", strerror(-rc));

	log_info("shutting down: completing in-flight requests and closing the frontends");
	bb_ctl_stop_listening(bb);
	bb->loop_stop = 0;
	bb_xenbus_shutdown_begin(bb);
	if (!bb->loop_stop) {
		int rc2 = hv_loop_run(bb->loop, &bb->loop_stop, -1);

		if (rc2 < 0 && rc == 0)
			rc = rc2;
	}
	bb_xenbus_free_all(bb);
	bb_ctl_stop(bb);
	log_info("stopped");
	return rc;
}

void blkback_free(struct blkback *bb)
{
	if (!bb)
		return;
	if (bb->loop) {
		bb_xenbus_free_all(bb);
		bb_ctl_stop(bb);
	}
	if (bb->timer_fd >= 0)
		close(bb->timer_fd);
	if (bb->wake_efd >= 0)
		close(bb->wake_efd);
	hv_loop_free(bb->loop);
	if (bb->xs)
		xs_close(bb->xs);
	if (bb->hv)
		hv_close(bb->hv);
	bb_dedup_stop(bb); /* after every vbd (and so every dedup target) is gone */
	bb_qos_stop(bb);
	if (bb->lock_fd >= 0)
		close(bb->lock_fd); /* releases the flock */
	free(bb);
}
