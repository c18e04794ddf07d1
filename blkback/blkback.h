/*
 * blkback.h - blkbackd, the block backend daemon, as a library: what blkbackd_main.c (and the
 * integration tests) drive.
 *
 * One daemon serves one pool (a directory, see pool.h) on one hypervisor (hv.h). It watches
 * /local/domain/0/backend/vbd in xenstore and drives the blkif XenbusState handshake for every
 * vbd a toolstack (its own control socket, ctl.h, or any other) creates there; one thread per
 * shared ring consumes, validates and serves requests through the volume's target (target.h).
 * The design and the validation rules are in docs/blkback.md.
 */
#ifndef SLUICE_BLKBACK_BLKBACK_H
#define SLUICE_BLKBACK_BLKBACK_H

#include <signal.h>

#include "blkback/target.h"
#include "hv/hv.h"

struct blkback;

struct blkback_opts {
	const char *hv_dir;          /**< the sim's directory (hvsimd --dir); unused for xen */
	const char *pool;            /**< the pool directory */
	enum hv_kind hv_kind;        /**< sim (default) or xen */
	enum target_engine engine;   /**< io_uring (default) or libaio */
	unsigned max_ring_page_order; /**< advertised max-ring-page-order, 0..4 */
	unsigned max_queues;         /**< advertised multi-queue-max-queues; 0 = online CPUs */
	unsigned max_indirect_segs;  /**< advertised feature-max-indirect-segments, 0 or 12..256 */
	int persistent;              /**< advertise feature-persistent */
	unsigned poll_us;            /**< spin this long for work before sleeping (0: off) */
	int no_direct;               /**< open volumes without O_DIRECT */
	int no_qos;                  /**< no I/O scheduling: requests go straight to the target */
	/**
	 * "IOPS[:LAT_US]": every volume shares one simulated device of that speed (qos/simdev.h):
	 * responses are held until the simulated completion. NULL: the real device only.
	 */
	const char *sim_device;
};

/**
 * Fill @o with the defaults: engine io_uring, ring order 4, queues = CPUs, indirect descriptors
 * of up to 256 segments, persistent grants offered.
 */
void blkback_opts_default(struct blkback_opts *o);

/**
 * Start a daemon: create the pool directory if missing, take POOL/blkbackd.lock (-EBUSY when
 * another blkbackd holds it), connect to the hypervisor and xenstore, listen on
 * POOL/blkbackd.sock. Nothing is served until blkback_run(). The strings in @o must outlive
 * the daemon. Returns 0 or -errno (with a log line saying what failed).
 */
int blkback_new(struct blkback **out, const struct blkback_opts *o);

/**
 * Serve until *stop becomes non-zero (a signal handler sets it), then shut down: stop taking
 * requests, complete and answer what is in flight, close every frontend with the
 * Closing/Closed handshake (bounded wait), remove the socket. Returns 0 or -errno.
 */
int blkback_run(struct blkback *bb, volatile sig_atomic_t *stop);

/** Free a daemon (after blkback_run, or instead of it); releases the lock. */
void blkback_free(struct blkback *bb);

#endif
