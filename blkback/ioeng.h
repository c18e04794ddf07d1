/*
 * ioeng.h - the asynchronous I/O engines under the raw target: io_uring (ioeng_uring.c, liburing)
 * and libaio (ioeng_aio.c).
 *
 * An engine owns one kernel submission context for one target queue, used by one thread. It
 * moves tagged operations on one fd to the kernel and hands back (tag, result) pairs. What an
 * operation means (ranges, short transfers, the caller's done callback, operations done
 * synchronously) stays in target_raw.c, so both engines behave the same by construction.
 *
 * Ownership: the iovec arrays given to prep() and their buffers must stay valid until the tag
 * is reaped (the kernel reads the array at submission for io_uring, libaio copies it at
 * io_submit; we keep the stricter rule for both). Nothing is allocated after open().
 */
#ifndef SLUICE_BLKBACK_IOENG_H
#define SLUICE_BLKBACK_IOENG_H

#include <stdint.h>
#include <sys/uio.h>

struct ioeng;

enum ioeng_op {
	IOENG_READV = 0,
	IOENG_WRITEV,
	IOENG_FDATASYNC, /**< fdatasync(fd): every write completed before it is durable */
	IOENG_PUNCH,	 /**< fallocate(PUNCH_HOLE | KEEP_SIZE) on [off, off + len) */
	IOENG_NR_OPS,
};

/** Completion: @res is the byte count (READV/WRITEV), 0 (others) or a negative errno. */
typedef void ioeng_cb_fn(void *arg, uint32_t tag, int64_t res);

struct ioeng_ops {
	const char *name;

	/**
	 * Create a context for up to @depth operations in flight on @fd; every completion signals
	 * the eventfd @efd. Returns 0, -ENOMEM, -EAGAIN (kernel limit on contexts, e.g.
	 * fs.aio-max-nr) or -errno.
	 */
	int (*open)(int fd, int efd, uint32_t depth, struct ioeng **out);

	/** Free the context. Every queued operation must have been reaped. */
	void (*close)(struct ioeng *e);

	/** 1 when @op can be done asynchronously by this context, 0 when the caller must do it. */
	int (*supports)(const struct ioeng *e, enum ioeng_op op);

	/**
	 * Queue one operation under @tag (< depth, unique among operations in flight). It reaches
	 * the kernel at the next commit(). Returns 0, -EAGAIN (no room: more than depth queued)
	 * or -EOPNOTSUPP (see supports()).
	 */
	int (*prep)(struct ioeng *e, uint32_t tag, enum ioeng_op op, const struct iovec *iov,
		    unsigned iovcnt, uint64_t off, uint64_t len);

	/**
	 * Hand every queued operation to the kernel with as few system calls as the engine allows
	 * (io_uring: one io_uring_submit). An operation the kernel refuses at submission is
	 * completed through @cb with its error before commit returns. Returns the number the
	 * kernel accepted, or -EAGAIN / -errno when nothing could be submitted (the operations stay
	 * queued for the next commit).
	 */
	int (*commit)(struct ioeng *e, ioeng_cb_fn *cb, void *arg);

	/** Operations prepared and not yet accepted by the kernel. */
	uint32_t (*pending)(const struct ioeng *e);

	/**
	 * Reap the completions that are ready and call @cb for each. With @wait, block until at
	 * least one is ready (the caller makes sure one is in flight). Returns the number reaped
	 * or -errno.
	 */
	int (*reap)(struct ioeng *e, int wait, ioeng_cb_fn *cb, void *arg);
};

extern const struct ioeng_ops ioeng_uring_ops;
extern const struct ioeng_ops ioeng_aio_ops;

#endif
