/*
 * ioeng_uring.c - the io_uring engine (liburing): one ring per target queue.
 *
 * prep() only fills SQEs; commit() is the one io_uring_submit() of a pass, so a whole pass over
 * a blkif ring costs one system call. The file is registered with the ring so the kernel does
 * not look the fd up per I/O. Completions signal the queue's eventfd (io_uring_register_eventfd).
 */
#define LOG_TAG "uring"

#include "blkback/ioeng.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <stdlib.h>

#include "common/log.h"

/* The kernel's IORING_MAX_ENTRIES. */
#define URING_MAX_ENTRIES 32768u

struct ioeng_uring {
	struct io_uring ring;
	int fd;		   /**< fd as SQEs name it: 0 (fixed file index) or the real fd */
	uint8_t sqe_flags; /**< IOSQE_FIXED_FILE when the file is registered */
	uint32_t depth;
	uint8_t has[IOENG_NR_OPS]; /**< opcodes the running kernel supports */
};

static int uring_probe_ops(struct ioeng_uring *u)
{
	static const uint8_t opcode[IOENG_NR_OPS] = {
	    [IOENG_READV] = IORING_OP_READV,
	    [IOENG_WRITEV] = IORING_OP_WRITEV,
	    [IOENG_FDATASYNC] = IORING_OP_FSYNC,
	    [IOENG_PUNCH] = IORING_OP_FALLOCATE,
	};
	struct io_uring_probe *p = io_uring_get_probe_ring(&u->ring);

	if (!p)
		return -ENOMEM;
	for (int i = 0; i < IOENG_NR_OPS; i++)
		u->has[i] = io_uring_opcode_supported(p, opcode[i]) ? 1 : 0;
	io_uring_free_probe(p);
	/* Without vectored read and write there is nothing this engine can do. */
	if (!u->has[IOENG_READV] || !u->has[IOENG_WRITEV])
		return -EOPNOTSUPP;
	return 0;
}

static int uring_open(int fd, int efd, uint32_t depth, struct ioeng **out)
{
	struct ioeng_uring *u;
	int rc;

	if (depth == 0 || depth > URING_MAX_ENTRIES)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->depth = depth;

	/*
	 * The kernel rounds the SQ up to a power of two and sizes the CQ at twice that, so with at
	 * most depth operations in flight neither ring can overflow. SUBMIT_ALL keeps one bad SQE
	 * from holding back the rest of the batch (older kernels: without it).
	 */
	rc = io_uring_queue_init(depth, &u->ring, IORING_SETUP_SUBMIT_ALL);
	if (rc == -EINVAL)
		rc = io_uring_queue_init(depth, &u->ring, 0);
	if (rc < 0) {
		log_err("io_uring_queue_init(%u): %d", depth, rc);
		goto err_free;
	}
	rc = uring_probe_ops(u);
	if (rc < 0) {
		log_err("io_uring lacks readv/writev (%d)", rc);
		goto err_exit;
	}
	if (io_uring_register_files(&u->ring, &fd, 1) == 0) {
		u->fd = 0;
		u->sqe_flags = IOSQE_FIXED_FILE;
	} else {
		u->fd = fd;
		u->sqe_flags = 0;
	}
	rc = io_uring_register_eventfd(&u->ring, efd);
	if (rc < 0) {
		log_err("io_uring_register_eventfd: %d", rc);
		goto err_exit;
	}
	*out = (struct ioeng *)u;
	return 0;

err_exit:
	io_uring_queue_exit(&u->ring);
err_free:
	free(u);
	return rc;
}

static void uring_close(struct ioeng *e)
{
	struct ioeng_uring *u = (struct ioeng_uring *)e;

	if (!u)
		return;
	/*
	 * The ring's teardown runs asynchronously in the kernel and would keep the registered file
	 * (and an O_EXCL claim on a block device) alive after we return; unregistering waits.
	 */
	if (u->sqe_flags & IOSQE_FIXED_FILE)
		io_uring_unregister_files(&u->ring);
	io_uring_queue_exit(&u->ring);
	free(u);
}

static int uring_supports(const struct ioeng *e, enum ioeng_op op)
{
	const struct ioeng_uring *u = (const struct ioeng_uring *)e;

	return op < IOENG_NR_OPS && u->has[op];
}

static int uring_prep(struct ioeng *e, uint32_t tag, enum ioeng_op op, const struct iovec *iov,
		      unsigned iovcnt, uint64_t off, uint64_t len)
{
	struct ioeng_uring *u = (struct ioeng_uring *)e;
	struct io_uring_sqe *sqe;

	if (op >= IOENG_NR_OPS || !u->has[op])
		return -EOPNOTSUPP;
	sqe = io_uring_get_sqe(&u->ring);
	if (!sqe)
		return -EAGAIN;
	switch (op) {
	case IOENG_READV:
		io_uring_prep_readv(sqe, u->fd, iov, iovcnt, off);
		break;
	case IOENG_WRITEV:
		io_uring_prep_writev(sqe, u->fd, iov, iovcnt, off);
		break;
	case IOENG_FDATASYNC:
		io_uring_prep_fsync(sqe, u->fd, IORING_FSYNC_DATASYNC);
		break;
	case IOENG_PUNCH:
		io_uring_prep_fallocate(sqe, u->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)off, (off_t)len);
		break;
	default:
		return -EOPNOTSUPP;
	}
	sqe->flags |= u->sqe_flags;
	sqe->user_data = tag;
	return 0;
}

static uint32_t uring_pending(const struct ioeng *e)
{
	const struct ioeng_uring *u = (const struct ioeng_uring *)e;

	return io_uring_sq_ready(&u->ring);
}

static int uring_commit(struct ioeng *e, ioeng_cb_fn *cb, void *arg)
{
	struct ioeng_uring *u = (struct ioeng_uring *)e;
	int rc;

	/* The kernel reports an SQE it cannot start as a CQE, so nothing is completed here. */
	(void)cb;
	(void)arg;
	if (io_uring_sq_ready(&u->ring) == 0)
		return 0;
	do {
		rc = io_uring_submit(&u->ring);
	} while (rc == -EINTR);
	/* -EAGAIN / -EBUSY: kernel short of resources; the SQEs stay queued for the next try. */
	if (rc == -EBUSY)
		rc = -EAGAIN;
	return rc;
}

static int uring_reap(struct ioeng *e, int wait, ioeng_cb_fn *cb, void *arg)
{
	struct ioeng_uring *u = (struct ioeng_uring *)e;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int rc;

	if (wait && io_uring_cq_ready(&u->ring) == 0) {
		rc = io_uring_wait_cqe(&u->ring, &cqe);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN)
			return rc;
	}
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		cb(arg, (uint32_t)cqe->user_data, cqe->res);
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	return (int)n;
}

const struct ioeng_ops ioeng_uring_ops = {
    .name = "io_uring",
    .open = uring_open,
    .close = uring_close,
    .supports = uring_supports,
    .prep = uring_prep,
    .commit = uring_commit,
    .pending = uring_pending,
    .reap = uring_reap,
};
