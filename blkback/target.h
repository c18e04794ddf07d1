/*
 * target.h - the storage target interface: the stacking point of blkbackd.
 *
 * A target is an opened volume (raw file or block device today; QoS, dedup and flash stack on
 * the same interface later). I/O is asynchronous and issued through a per-thread queue, so each
 * ring thread owns its own io_uring / libaio context and nothing is shared on the data path.
 *
 * Ownership and lifetime:
 *   - struct target_io is owned by the caller (embedded in blkback's pooled request); the target
 *     keeps a pointer to it from submit until it calls io->done. The iovecs and their buffers
 *     (mapped guest pages) must stay valid until then. No allocation per I/O.
 *   - An async call that returns 0 calls io->done exactly once, from target_queue_poll() (or a
 *     later call on the same queue, never from another thread). A call that returns < 0 never
 *     calls io->done.
 *   - Running out of queue slots is backpressure: submit returns -EAGAIN and the caller keeps the
 *     request (on the ring) and retries after the next poll.
 */
#ifndef SLUICE_BLKBACK_TARGET_H
#define SLUICE_BLKBACK_TARGET_H

#include <stdint.h>
#include <sys/uio.h>

struct target;
struct target_queue;

enum target_op {
	TARGET_OP_READ = 0,
	TARGET_OP_WRITE,
	TARGET_OP_FLUSH,   /**< everything completed before it is durable when it completes */
	TARGET_OP_DISCARD, /**< offset/len range; reads of it afterwards return zeros or old data */
};

enum target_engine {
	TARGET_ENGINE_IO_URING = 0, /**< liburing (default) */
	TARGET_ENGINE_LIBAIO,	    /**< libaio: the fallback */
};

struct target_io {
	enum target_op op;
	uint64_t offset_bytes;	 /**< byte offset in the volume */
	uint64_t len_bytes;	 /**< total bytes (sum of iov lengths; the range for DISCARD) */
	const struct iovec *iov; /**< READ/WRITE buffers (guest pages, in place) */
	unsigned iovcnt;
	/** Completion: @status is 0 or a negative errno. Called once, from target_queue_poll(). */
	void (*done)(struct target_io *io, int status);
	void *priv;		/**< caller's */
	uint64_t target_ctx[4]; /**< the target's per-I/O scratch; no allocation per I/O */
};

struct target_info {
	uint64_t size_bytes;	      /**< current size */
	uint32_t logical_block;	      /**< logical sector size in bytes (512 or 4096) */
	uint32_t physical_block;      /**< physical block size in bytes */
	uint32_t discard_granularity; /**< bytes; 0 when discard is not supported */
	unsigned direct : 1;	      /**< opened with O_DIRECT */
	unsigned readonly : 1;
	unsigned has_flush : 1; /**< volatile cache: FLUSH does work */
};

struct target_open_opts {
	enum target_engine engine;
	int readonly;
	int no_direct; /**< do not try O_DIRECT */
};

/** The ops table each target type provides. */
struct target_ops {
	const char *name;
	int (*open)(const char *path, const struct target_open_opts *o, struct target **out);
	void (*close)(struct target *t);
	int (*info)(struct target *t, struct target_info *info);
	int (*resize)(struct target *t, uint64_t new_size_bytes);
	int (*queue_open)(struct target *t, uint32_t depth, struct target_queue **out);
	void (*queue_close)(struct target_queue *q);
	int (*submit)(struct target_queue *q, struct target_io *io);
	int (*commit)(struct target_queue *q);
	int (*poll)(struct target_queue *q, int wait);
	int (*queue_fd)(struct target_queue *q);
};

/**
 * Open the raw target on @path (a regular file or a block device). Uses O_DIRECT when the file
 * system allows it (unless o->no_direct) and falls back to buffered I/O otherwise.
 * Returns 0, -ENOENT, -EACCES, -EINVAL (unknown engine) or -errno.
 */
int target_raw_open(const char *path, const struct target_open_opts *o, struct target **out);

/** Close a target; every queue must be closed first. */
void target_close(struct target *t);

int target_info(struct target *t, struct target_info *info);

/**
 * Grow or shrink the volume to @new_size_bytes (a multiple of the logical block). A grown range
 * reads as zeros. A shrink refuses new I/O past the new end at once, waits (bounded) for writes
 * already in flight, then cuts the file; reads in flight past the new end may fail with -EIO.
 * A block device cannot be resized by its target: the call re-reads the device's size (after
 * whoever owns it, e.g. lvresize, changed it), keeps that, and returns 0 if it equals
 * @new_size_bytes, else -EOPNOTSUPP.
 * Returns 0, -EINVAL (not a multiple of the logical block), -EROFS (read-only), -EOPNOTSUPP,
 * -EFBIG or -errno (the size is unchanged on error).
 */
int target_resize(struct target *t, uint64_t new_size_bytes);

/** Queue depths above this are clamped (submit then answers -EAGAIN beyond it). */
#define TARGET_QUEUE_MAX_DEPTH 1024u

/**
 * Create a submission queue for the calling thread with room for @depth target_io in flight
 * (one per blkif request, whatever its segment count: the ring size, times the steps of a
 * request that may be in flight at once, is plenty). Everything the queue needs on the I/O
 * path is allocated here. Returns 0, -EINVAL (depth 0), -ENOMEM, -EAGAIN (kernel limit on
 * AIO contexts, fs.aio-max-nr) or -errno.
 */
int target_queue_open(struct target *t, uint32_t depth, struct target_queue **out);

/**
 * Wait for every I/O in flight on @q (calling their done callbacks, from this call), then free
 * the queue. Must be called by the queue's thread.
 */
void target_queue_close(struct target_queue *q);

/**
 * Queue @io. It may not reach the device until target_queue_commit(): the ring thread queues a
 * whole pass over the ring, then commits once (one io_uring_submit per pass).
 * READ/WRITE: iov[0..iovcnt) must sum to len_bytes; offset and length must be multiples of
 * info.logical_block and lie within the current size. A completed READ/WRITE moved every byte
 * (short transfers are resumed inside the target) or failed.
 * FLUSH ignores offset/len. DISCARD needs info.discard_granularity != 0 and logical alignment.
 * Returns 0, -EAGAIN (queue full: retry after a poll), -EINVAL (bad range, alignment or iov),
 * -EROFS (WRITE/DISCARD on a read-only target), -EOPNOTSUPP (DISCARD not supported) or -errno.
 */
int target_submit(struct target_queue *q, struct target_io *io);

/** Send queued I/O to the device. Returns the number submitted or -errno. */
int target_queue_commit(struct target_queue *q);

/**
 * Reap completions and call their done callbacks. @wait non-zero blocks until at least one
 * completes (when any are in flight). Returns the number completed or -errno.
 */
int target_queue_poll(struct target_queue *q, int wait);

/** An fd that becomes readable when completions are ready (eventfd), for the ring thread's poll. */
int target_queue_fd(struct target_queue *q);

/** Number of I/Os submitted and not yet completed. */
uint32_t target_queue_inflight(const struct target_queue *q);

/** Parse "io_uring" / "libaio". Returns 0 or -EINVAL. */
int target_engine_parse(const char *s, enum target_engine *engine);

#endif
