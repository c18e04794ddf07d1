/*
 * target_io.c - one target I/O at a time, for the target tests (target_io.h).
 */
#include "tests/blkback/target_io.h"
#include "tests/harness.h"

#include <poll.h>
#include <string.h>

static void rec_done(struct target_io *io, int status)
{
	struct done_rec *r = io->priv;

	r->calls++;
	r->status = status;
}

void tio_set(struct target_io *io, enum target_op op, uint64_t off, uint64_t len,
	     const struct iovec *iov, unsigned iovcnt, struct done_rec *r)
{
	memset(io, 0, sizeof(*io));
	memset(r, 0, sizeof(*r));
	io->op = op;
	io->offset_bytes = off;
	io->len_bytes = len;
	io->iov = iov;
	io->iovcnt = iovcnt;
	io->done = rec_done;
	io->priv = r;
}

int run_io(struct target_queue *q, struct target_io *io)
{
	struct done_rec *r = io->priv;
	int rc = target_submit(q, io);

	if (rc)
		return rc;
	CU_ASSERT_EQUAL(r->calls, 0); /* never from submit */
	CU_ASSERT(target_queue_commit(q) >= 0);
	for (int i = 0; i < 1000 && r->calls == 0; i++) {
		struct pollfd p = {.fd = target_queue_fd(q), .events = POLLIN};

		CU_ASSERT_EQUAL(poll(&p, 1, 5000), 1);
		CU_ASSERT(target_queue_poll(q, 0) >= 0);
	}
	CU_ASSERT_EQUAL(r->calls, 1);
	CU_ASSERT_EQUAL(target_queue_inflight(q), 0);
	return r->status;
}

int run_rw(struct target_queue *q, enum target_op op, uint64_t off, void *buf, size_t len)
{
	struct iovec iov = {buf, len};
	struct target_io io;
	struct done_rec r;

	tio_set(&io, op, off, len, &iov, 1, &r);
	return run_io(q, &io);
}

int run_op(struct target_queue *q, enum target_op op, uint64_t off, uint64_t len)
{
	struct target_io io;
	struct done_rec r;

	tio_set(&io, op, off, len, NULL, 0, &r);
	return run_io(q, &io);
}
