/*
 * target_io.h - driving one target I/O at a time in blkback's target tests (no suite of its
 * own): a completion recorder, and submit-commit-wait-poll helpers that check target.h's
 * contract on the way (io->done never from submit, the queue fd wakes for the completion,
 * exactly one done call, nothing left in flight).
 */
#ifndef SLUICE_TESTS_BLKBACK_TARGET_IO_H
#define SLUICE_TESTS_BLKBACK_TARGET_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blkback/target.h"

/** What io->done reported: how often, and the last status. */
struct done_rec {
	int calls;
	int status;
};

/** Fill @io (zeroed first) for @op with done = a recorder into @r (zeroed too). */
void tio_set(struct target_io *io, enum target_op op, uint64_t off, uint64_t len,
	     const struct iovec *iov, unsigned iovcnt, struct done_rec *r);

/**
 * Submit @io (prepared by tio_set), commit, wait on the queue fd and poll until it completes.
 * Returns the submit error or the I/O's status.
 */
int run_io(struct target_queue *q, struct target_io *io);

/** READ or WRITE of @len bytes at @off from/to one buffer. */
int run_rw(struct target_queue *q, enum target_op op, uint64_t off, void *buf, size_t len);

/** FLUSH or DISCARD (no data). */
int run_op(struct target_queue *q, enum target_op op, uint64_t off, uint64_t len);

#endif
