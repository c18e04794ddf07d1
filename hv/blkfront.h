/*
 * blkfront.h - libblkfront: a guest domain's Xen block frontend, in userspace over hv.h.
 *
 * It does what Linux xen-blkfront does for one virtual block device (vbd) of a guest of the sim:
 * finds the vbd the toolstack created under /local/domain/<me>/device/vbd/<devid>, performs the
 * frontend half of the XenbusState handshake with the backend named there, grants the shared
 * ring page(s) and every data page of every request to the backend, signals and receives on an
 * event channel, and keeps the device usable across a live resize (the backend rewrites
 * `sectors` and `state`) and across a backend that goes away and comes back: one that closes
 * (Closing/Closed) and later offers InitWait again gets new rings and new event channels, and
 * what was in flight is issued again (blkif_recover); one that dies without closing and is
 * started again attaches to the live ring and answers what was left unanswered (Linux
 * blkback's restart model), so the frontend keeps its ring and waits for it.
 *
 * Units: every sector number and count in this API is in 512-byte sectors, as on the blkif
 * ring, whatever the disk's logical sector size (blkfront_info.sector_size); offsets and lengths
 * must still be multiples of that logical size.
 *
 * Memory: data buffers must lie in the guest's memory (hv_guest_mem(); allocate them with
 * hv_guest_alloc_frames()). The backend reads and writes the caller's pages in place: nothing is
 * copied on either side. The buffer must not be changed (write) or read (read) until the
 * request's completion callback ran. Without persistent grants each data page is granted for
 * the life of the request (read-only for writes) and access is ended when its response arrives.
 * With persistent grants (blkfront_opts.persistent, and the backend offers feature-persistent)
 * a page keeps its grant (read-write) after the request, so the backend keeps it mapped and the
 * next request on the same page costs no grant work at all, as with Linux blkfront; at most
 * BLKFRONT_PERSISTENT_PER_RING pages per ring are kept, beyond that pages are granted per
 * request. Persistent grants end when the device disconnects. Caller pages stay granted that
 * long: free them (hv_guest_free_frames) only after blkfront_close.
 *
 * Requests: a read or write may carry up to BLKFRONT_MAX_SEGS pages. A direct blkif request
 * holds at most BLKIF_MAX_SEGMENTS_PER_REQUEST (11) pages; with indirect descriptors
 * (blkfront_opts.indirect_segs, and the backend's feature-max-indirect-segments) one
 * BLKIF_OP_INDIRECT request holds up to the negotiated count. A request larger than one ring
 * request holds is SPLIT into several ring requests on the same ring (like Linux's block layer
 * splitting at max_segments); the caller still gets exactly one completion, after every part
 * completed, with the first error any part returned. A request beyond BLKFRONT_MAX_SEGS pages is
 * refused with -E2BIG.
 *
 * Thread model: a struct blkfront belongs to one thread at a time (no locks inside, like a
 * libxenevtchn handle). That thread submits, kicks, and calls blkfront_process() when
 * blkfront_fd() is readable. Several devices may share one struct hv context; calls that
 * allocate from the context (blkfront_open, blkfront_close) must then be serialised by the
 * caller, while the I/O calls of different devices may run in different threads.
 *
 * Errors: every function returns 0 (or a count) on success and a negative errno on failure.
 */
#ifndef SLUICE_HV_BLKFRONT_H
#define SLUICE_HV_BLKFRONT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "hv/hv.h"

/** Largest read or write accepted, in 4 KiB pages (1 MiB); larger requests get -E2BIG. */
#define BLKFRONT_MAX_SEGS 256u

/** Most rings (queues) a device asks for, whatever the backend offers. */
#define BLKFRONT_MAX_QUEUES 16u

/** Largest ring, as log2 of its pages: order 4 = 16 pages = 512 requests, as Linux. */
#define BLKFRONT_MAX_RING_ORDER 4u

/** Persistent grants kept per ring: Linux blkback's default max_persistent_grants. */
#define BLKFRONT_PERSISTENT_PER_RING 1056u

struct blkfront;

/**
 * Completion of one accepted request.
 * @arg: blkfront_opts.arg.
 * @id: the id the caller gave at submission.
 * @status: 0; -EIO when the backend answered BLKIF_RSP_ERROR (or an answer did not make
 *	sense); -EOPNOTSUPP for BLKIF_RSP_EOPNOTSUPP; -ENODEV when the device was detached
 *	(the vbd removed from xenstore) with the request still outstanding.
 * Called exactly once per request that a submit call accepted (returned 0), only from inside
 * blkfront_process() or blkfront_close(), never from the submit call itself. The callback may
 * submit new requests on the same device; it must not close it.
 */
typedef void (*blkfront_done_fn)(void *arg, uint64_t id, int status);

/**
 * The backend announced a new capacity (online resize: it rewrote `sectors` and `state`).
 * Called from blkfront_process() after blkfront_info() already reports @new_sectors.
 */
typedef void (*blkfront_resize_fn)(void *arg, uint64_t old_sectors, uint64_t new_sectors);

/** What blkfront_open() asks for; zero-initialised means the defaults. */
struct blkfront_opts {
	unsigned int queues;      /**< rings to ask for (0 = 1); clamped to the backend's
				       multi-queue-max-queues and to BLKFRONT_MAX_QUEUES */
	unsigned int ring_order;  /**< log2 of pages per ring (0 = one page, 32 requests); clamped
				       to the backend's max-ring-page-order */
	unsigned int indirect_segs; /**< 0: direct requests only; else use BLKIF_OP_INDIRECT for
				       requests over 11 pages, with up to this many pages each
				       (clamped to feature-max-indirect-segments and
				       BLKFRONT_MAX_SEGS) */
	bool persistent;          /**< offer feature-persistent (used when the backend offers it) */
	int timeout_ms;           /**< bound on each handshake step in blkfront_open (0 = 10000) */
	blkfront_done_fn done;    /**< completion callback (required) */
	blkfront_resize_fn resized; /**< capacity change callback (optional) */
	void *arg;                /**< passed to both callbacks */
};

/** What the backend told us, and what was negotiated. */
struct blkfront_info {
	uint32_t devid;                /**< Xen vbd number (202<<8 | disk<<4 for xvda..xvdp) */
	domid_t backend_id;            /**< the backend's domain */
	uint64_t sectors;              /**< capacity in 512-byte sectors */
	uint32_t sector_size;          /**< logical sector size in bytes (power of 2, >= 512) */
	uint32_t physical_sector_size; /**< bytes, a multiple of sector_size */
	uint32_t vdisk_info;           /**< VDISK_CDROM / VDISK_REMOVABLE / VDISK_READONLY bits */
	bool readonly;                 /**< VDISK_READONLY: writes and discards are refused */
	bool flush;                    /**< backend takes BLKIF_OP_FLUSH_DISKCACHE */
	bool barrier;                  /**< backend advertised feature-barrier (we never use it) */
	bool discard;                  /**< backend takes BLKIF_OP_DISCARD */
	uint32_t discard_granularity;  /**< bytes (defaults to sector_size) */
	uint32_t discard_alignment;    /**< bytes */
	uint32_t max_indirect_segs;    /**< backend's feature-max-indirect-segments (0 = none) */
	bool backend_persistent;       /**< backend offers feature-persistent */
	unsigned int indirect_segs;    /**< pages per indirect request in use (0 = direct only) */
	bool persistent;               /**< persistent grants in use */
	unsigned int nr_queues;        /**< rings in use */
	unsigned int ring_order;       /**< log2 of pages per ring */
	unsigned int ring_slots;       /**< requests per ring (RING_SIZE) */
	unsigned int reconnects;       /**< times the device reconnected after the backend left */
};

/**
 * Map a Linux/Xen virtual device name to its vbd number, as xen-vbd-interface(7) says:
 * "xvdX" (X = a..z, aa.., disk 0..) -> 202<<8 | disk<<4 for disks 0..15 and
 * 1<<28 | disk<<8 above; "hdX", "sdX" likewise (3<<8 / 22<<8 / 8<<8 ranges); a plain decimal
 * number is taken as the devid itself. Partitions are not accepted (a frontend attaches disks).
 * Returns 0 and *devid, or -EINVAL.
 */
int blkfront_vdev_to_devid(const char *vdev, uint32_t *devid);

/**
 * Connect the guest's virtual device @vdev ("xvda" or a decimal devid) through the guest
 * context @hv (hv_guest_open). Blocks until the backend is Connected (each step bounded by
 * opts->timeout_ms) and the frontend wrote Connected.
 * The device keeps using @hv until blkfront_close(); @hv must outlive it.
 * Errors: -ENOENT no such vbd for this domain; -ETIMEDOUT the backend did not reach InitWait or
 * Connected in time; -ENODEV the backend closed the device during the handshake; -EPROTO a
 * backend node made no sense; -ENOMEM / -ENOSPC out of memory, guest frames or grant refs;
 * -EINVAL bad @opts; errors of hv_evtchn_* and xenstore.
 */
int blkfront_open(struct blkfront **out, struct hv *hv, const char *vdev,
		  const struct blkfront_opts *opts);

/**
 * Disconnect and free: the frontend goes Closing, waits (bounded) for the backend to close,
 * then Closed; grants are ended and ring memory returned. Requests still outstanding complete
 * with -ENODEV before this returns. NULL is accepted.
 */
void blkfront_close(struct blkfront *bf);

/** Copy the current device properties into *info (capacity changes with a resize). */
void blkfront_info(const struct blkfront *bf, struct blkfront_info *info);

/** The vdev name given to blkfront_open (for log lines), valid until blkfront_close. */
const char *blkfront_name(const struct blkfront *bf);

/**
 * A file descriptor that becomes readable (POLLIN) when blkfront_process() has work: a
 * response on a ring or a xenstore change. Owned by the device; do not read or close it.
 */
int blkfront_fd(const struct blkfront *bf);

/**
 * Queue a read of the pages described by @iov into the device starting at @sector.
 * Every iov base and length must be a multiple of the logical sector size, and all of it in
 * guest memory. The request is placed on a ring (or held until a ring slot frees); the backend
 * sees it after blkfront_kick().
 * Returns 0 (the done callback will run once), or:
 *   -EAGAIN   every request slot is in use: reap completions (blkfront_process) and retry;
 *   -EINVAL   empty, or misaligned to the sector size;
 *   -E2BIG    more than BLKFRONT_MAX_SEGS pages;
 *   -EFAULT   a buffer is outside guest memory;
 *   -ENODEV   the device was detached.
 */
int blkfront_readv(struct blkfront *bf, uint64_t sector, const struct iovec *iov, int iovcnt,
		   uint64_t id);

/** As blkfront_readv, writing; also -EROFS on a read-only device. Pages are granted read-only. */
int blkfront_writev(struct blkfront *bf, uint64_t sector, const struct iovec *iov, int iovcnt,
		    uint64_t id);

/**
 * Ask the backend to make every completed write durable (BLKIF_OP_FLUSH_DISKCACHE, no data).
 * -EOPNOTSUPP when the backend did not advertise feature-flush-cache: it then has no volatile
 * cache to flush, completed writes are already durable. Otherwise as blkfront_readv.
 */
int blkfront_flush(struct blkfront *bf, uint64_t id);

/**
 * Discard @nr_sectors from @sector (BLKIF_OP_DISCARD). Both must be multiples of the logical
 * sector size. -EOPNOTSUPP without feature-discard, -EROFS on a read-only device, else as
 * blkfront_readv.
 */
int blkfront_discard(struct blkfront *bf, uint64_t sector, uint64_t nr_sectors, uint64_t id);

/**
 * Publish every request queued since the last kick and notify the backend's event channel
 * if it asked to be (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY). Returns 0 or an hv_evtchn error.
 */
int blkfront_kick(struct blkfront *bf);

/**
 * Do all pending work without blocking: xenstore changes (resize, backend leaving or coming
 * back), responses on every ring (with the final check of ring.h, so no notification is lost),
 * then issue requests held for a free slot, and kick. Completion callbacks run from here.
 * Returns the number of requests completed, or a negative errno when the device failed: then
 * every outstanding request has completed (callbacks ran, with that errno or -ENODEV) and the
 * device stays unusable (every later call returns the same errno; close it). Failures: -ENODEV
 * detached; -EIO the backend broke the ring protocol; a handshake step that failed on
 * reconnect; an error of xenstore or the event channel (the hypervisor went away).
 */
int blkfront_process(struct blkfront *bf);

/**
 * Give up on the device: every outstanding request completes now (callbacks run from here) with
 * @err (a negative errno, e.g. -ECANCELED), and every later call returns @err; close it next.
 * For a caller that must stop while the backend does not answer. Grants the backend still maps
 * cannot be ended: they stay in place (their refs are given up), so the caller must not hand
 * those buffers to anyone else while the process lives. Returns the number completed.
 */
int blkfront_fail(struct blkfront *bf, int err);

/**
 * Wait up to @timeout_ms (-1: forever) for blkfront_fd() to become readable, then
 * blkfront_process(). Returns what blkfront_process returned, 0 on timeout, or -errno.
 */
int blkfront_wait(struct blkfront *bf, int timeout_ms);

/**
 * True when a ring holds responses not yet reaped: a check of shared memory only, no system
 * call, for callers that poll briefly before sleeping on blkfront_fd() (lower latency at low
 * queue depth, at the price of a busy CPU). Responses found are reaped by blkfront_process().
 */
bool blkfront_has_responses(const struct blkfront *bf);

/** Requests accepted and not yet completed (on a ring or held for a slot). */
unsigned int blkfront_inflight(const struct blkfront *bf);

/** True while rings are connected; false while the backend is away and requests are held. */
bool blkfront_connected(const struct blkfront *bf);

#endif
