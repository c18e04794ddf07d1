/*
 * test_target_dedup.c - the dedup target through the generic target interface: info, data in
 * place through iovecs (multi-block, duplicates, zeros), completions only from poll and the
 * queue fd waking for them, discard, flush, resize, a snapshot as a read-only target,
 * validation, backpressure, and a random mix checked against a shadow copy.
 */
#include "blkback/target_dedup.h"
#include "tests/blkback/target_io.h"
#include "tests/harness.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup/dedup.h"

#define BLK 4096u

static void fill(void *buf, size_t len, uint32_t seed)
{
	uint32_t *p = buf;

	for (size_t i = 0; i < len / 4; i++)
		p[i] = seed * 2654435761u + (uint32_t)i;
}

/* A fresh store with volume "v" of @size. */
static struct dedup_store *new_store(const char *tag, uint64_t size)
{
	struct dedup_opts o = {.create = 1, .container_bytes = 1 << 20};
	struct dedup_store *s = NULL;
	char dir[512];

	snprintf(dir, sizeof(dir), "%s/tdd-%s", harness_tmpdir(), tag);
	CU_ASSERT_EQUAL_FATAL(dedup_store_open(dir, &o, &s), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_create(s, "v", size), 0);
	return s;
}

static void test_info_and_rw(void)
{
	struct dedup_store *s = new_store("rw", 8 << 20);
	struct target_open_opts o = {0};
	struct target_queue *q;
	struct target_info info;
	struct target *t;
	char *a = malloc(64 * BLK), *b = malloc(64 * BLK);
	struct dedup_stats st;

	CU_ASSERT_EQUAL(target_dedup_open(s, "nope", &o, &t), -ENOENT);
	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "v", &o, &t), 0);
	CU_ASSERT_EQUAL(target_info(t, &info), 0);
	CU_ASSERT_EQUAL(info.size_bytes, 8 << 20);
	CU_ASSERT_EQUAL(info.logical_block, BLK);
	CU_ASSERT_EQUAL(info.physical_block, BLK);
	CU_ASSERT_EQUAL(info.discard_granularity, BLK);
	CU_ASSERT(info.has_flush);
	CU_ASSERT(!info.readonly);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, 8, &q), 0);

	/* Never written: zeros. */
	memset(b, 0xff, 64 * BLK);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 0, b, 16 * BLK), 0);
	for (unsigned i = 0; i < 16 * BLK; i++)
		if (b[i]) {
			CU_FAIL("unwritten block not zero");
			break;
		}

	/* 64 blocks in three iovecs, the same data written twice at two places. */
	fill(a, 64 * BLK, 7);
	struct iovec iov[3] = {{a, 4 * BLK}, {a + 4 * BLK, 40 * BLK}, {a + 44 * BLK, 20 * BLK}};
	struct target_io io;
	struct done_rec r;

	tio_set(&io, TARGET_OP_WRITE, 0, 64 * BLK, iov, 3, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), 0);
	tio_set(&io, TARGET_OP_WRITE, 128 * BLK, 64 * BLK, iov, 3, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), 0);
	memset(b, 0, 64 * BLK);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 128 * BLK, b, 64 * BLK), 0);
	CU_ASSERT_EQUAL(memcmp(a, b, 64 * BLK), 0);
	CU_ASSERT_EQUAL(run_op(q, TARGET_OP_FLUSH, 0, 0), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 64);
	CU_ASSERT_EQUAL(st.logical_bytes, 128 * BLK);

	/* Discard: reads as zeros. */
	CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 130 * BLK, 2 * BLK), 0);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 128 * BLK, b, 4 * BLK), 0);
	CU_ASSERT_EQUAL(memcmp(a, b, 2 * BLK), 0);
	CU_ASSERT(b[2 * BLK] == 0 && b[4 * BLK - 1] == 0);

	target_queue_close(q);
	target_close(t);
	free(a);
	free(b);
	dedup_store_close(s);
}

static void test_validation_and_resize(void)
{
	struct dedup_store *s = new_store("val", 1 << 20);
	struct target_open_opts o = {0};
	struct target_queue *q;
	struct target_info info;
	struct target *t;
	char *buf = calloc(1, 2 * BLK);

	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "v", &o, &t), 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, 4, &q), 0);
	/* Not 4 KiB aligned, or past the end. */
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 512, buf, BLK), -EINVAL);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 0, buf, 512), -EINVAL);
	CU_ASSERT(run_rw(q, TARGET_OP_WRITE, 1 << 20, buf, BLK) < 0);
	CU_ASSERT_EQUAL(target_queue_inflight(q), 0);

	/* Grow: the new range is usable and reads zeros. Shrink: the tail is gone. */
	CU_ASSERT_EQUAL(target_resize(t, 1000), -EINVAL);
	CU_ASSERT_EQUAL(target_resize(t, 2 << 20), 0);
	CU_ASSERT_EQUAL(target_info(t, &info), 0);
	CU_ASSERT_EQUAL(info.size_bytes, 2 << 20);
	fill(buf, BLK, 3);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, (2 << 20) - BLK, buf, BLK), 0);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, (2 << 20) - BLK, buf + BLK, BLK), 0);
	CU_ASSERT_EQUAL(memcmp(buf, buf + BLK, BLK), 0);
	CU_ASSERT_EQUAL(target_resize(t, 1 << 20), 0);
	CU_ASSERT(run_rw(q, TARGET_OP_READ, (2 << 20) - BLK, buf, BLK) < 0);

	target_queue_close(q);
	target_close(t);
	free(buf);
	dedup_store_close(s);
}

static void test_snapshot_readonly(void)
{
	struct dedup_store *s = new_store("ro", 1 << 20);
	struct target_open_opts o = {0};
	struct target_queue *q, *qs;
	struct target_info info;
	struct target *t, *ts;
	char *a = malloc(BLK), *b = malloc(BLK), *c = malloc(BLK);

	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "v", &o, &t), 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, 4, &q), 0);
	fill(a, BLK, 1);
	fill(b, BLK, 2);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 0, a, BLK), 0);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(s, "v", "snap"), 0);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 0, b, BLK), 0);

	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "snap", &o, &ts), 0);
	CU_ASSERT_EQUAL(target_info(ts, &info), 0);
	CU_ASSERT(info.readonly);
	CU_ASSERT_EQUAL(info.discard_granularity, 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(ts, 4, &qs), 0);
	CU_ASSERT_EQUAL(run_rw(qs, TARGET_OP_READ, 0, c, BLK), 0);
	CU_ASSERT_EQUAL(memcmp(a, c, BLK), 0);
	CU_ASSERT_EQUAL(run_rw(qs, TARGET_OP_WRITE, 0, b, BLK), -EROFS);
	CU_ASSERT_EQUAL(run_op(qs, TARGET_OP_DISCARD, 0, BLK), -EROFS);
	CU_ASSERT_EQUAL(target_resize(ts, 2 << 20), -EROFS);
	/* An open volume cannot be deleted. */
	CU_ASSERT_EQUAL(dedup_vol_delete(s, "snap"), -EBUSY);

	target_queue_close(qs);
	target_close(ts);
	target_queue_close(q);
	target_close(t);
	free(a);
	free(b);
	free(c);
	dedup_store_close(s);
}

/* depth 4: the fifth submit is backpressure; all complete through poll; random mix vs shadow. */
static void test_backpressure_and_mix(void)
{
	enum { NBLK = 256, DEPTH = 4 };
	struct dedup_store *s = new_store("mix", NBLK * BLK);
	struct target_open_opts o = {0};
	char *shadow = calloc(NBLK, BLK), *bufs = malloc(DEPTH * 8 * BLK), *rd = malloc(8 * BLK);
	struct target_io io[DEPTH + 1];
	struct done_rec r[DEPTH + 1];
	struct iovec iov[DEPTH + 1];
	struct target_queue *q;
	struct target *t;
	unsigned seed = 12345;

	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "v", &o, &t), 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, DEPTH, &q), 0);
	for (int i = 0; i <= DEPTH; i++) {
		fill(bufs + (size_t)(i % DEPTH) * 8 * BLK, BLK, (uint32_t)i);
		iov[i] = (struct iovec){bufs + (size_t)(i % DEPTH) * 8 * BLK, BLK};
		tio_set(&io[i], TARGET_OP_WRITE, (uint64_t)i * BLK, BLK, &iov[i], 1, &r[i]);
	}
	for (int i = 0; i < DEPTH; i++)
		CU_ASSERT_EQUAL(target_submit(q, &io[i]), 0);
	CU_ASSERT_EQUAL(target_submit(q, &io[DEPTH]), -EAGAIN);
	CU_ASSERT_EQUAL(target_queue_inflight(q), DEPTH);
	target_queue_commit(q);
	for (int n = 0; n < DEPTH;) {
		int k = target_queue_poll(q, 1);

		CU_ASSERT_FATAL(k >= 0);
		n += k;
	}
	for (int i = 0; i < DEPTH; i++) {
		CU_ASSERT_EQUAL(r[i].calls, 1);
		CU_ASSERT_EQUAL(r[i].status, 0);
		memcpy(shadow + (size_t)i * BLK, iov[i].iov_base, BLK);
	}

	/* Random writes (some repeating earlier content, some zeros), discards and reads. */
	for (int round = 0; round < 400; round++) {
		unsigned op = rand_r(&seed) % 10, nb = 1 + rand_r(&seed) % 8;
		unsigned at = rand_r(&seed) % (NBLK - nb);

		if (op < 5) {
			for (unsigned k = 0; k < nb; k++) {
				unsigned kind = rand_r(&seed) % 4;
				char *p = bufs + (size_t)k * BLK;

				if (kind == 0)
					memset(p, 0, BLK);
				else
					fill(p, BLK, kind == 1 ? 99 : (uint32_t)rand_r(&seed));
			}
			CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, (uint64_t)at * BLK, bufs,
					       (size_t)nb * BLK), 0);
			memcpy(shadow + (size_t)at * BLK, bufs, (size_t)nb * BLK);
		} else if (op < 6) {
			CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, (uint64_t)at * BLK,
					       (uint64_t)nb * BLK), 0);
			memset(shadow + (size_t)at * BLK, 0, (size_t)nb * BLK);
		} else {
			CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, (uint64_t)at * BLK, rd,
					       (size_t)nb * BLK), 0);
			CU_ASSERT_EQUAL(memcmp(rd, shadow + (size_t)at * BLK, (size_t)nb * BLK), 0);
		}
	}
	for (unsigned at = 0; at < NBLK; at += 8) {
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, (uint64_t)at * BLK, rd, 8 * BLK), 0);
		CU_ASSERT_EQUAL(memcmp(rd, shadow + (size_t)at * BLK, 8 * BLK), 0);
	}
	target_queue_close(q);
	target_close(t);

	struct dedup_fsck_report rep;

	CU_ASSERT_EQUAL(dedup_store_fsck(s, DEDUP_FSCK_VERIFY, &rep), 0);
	CU_ASSERT(dedup_fsck_clean(&rep));
	free(shadow);
	free(bufs);
	free(rd);
	dedup_store_close(s);
}

/* Closing a queue with I/O in flight completes it first. */
static void test_close_with_inflight(void)
{
	struct dedup_store *s = new_store("close", 1 << 20);
	struct target_open_opts o = {0};
	struct target_queue *q;
	struct target *t;
	char *buf = malloc(BLK);
	struct target_io io[2];
	struct done_rec r[2];
	struct iovec iov = {buf, BLK};

	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "v", &o, &t), 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, 4, &q), 0);
	fill(buf, BLK, 5);
	tio_set(&io[0], TARGET_OP_WRITE, 0, BLK, &iov, 1, &r[0]);
	tio_set(&io[1], TARGET_OP_READ, BLK, BLK, &iov, 1, &r[1]);
	CU_ASSERT_EQUAL(target_submit(q, &io[0]), 0);
	CU_ASSERT_EQUAL(target_submit(q, &io[1]), 0);
	target_queue_close(q);
	CU_ASSERT_EQUAL(r[0].calls, 1);
	CU_ASSERT_EQUAL(r[0].status, 0);
	CU_ASSERT_EQUAL(r[1].calls, 1);
	CU_ASSERT_EQUAL(r[1].status, 0);
	target_close(t);
	free(buf);
	dedup_store_close(s);
}

/*
 * A guest that changes its page after submitting a write (blkfront does not promise stable
 * pages) must not leave a container block whose data differs from its SHA-256: another volume
 * writing the data the block was named by dedups to it and must read that data back.
 */
static void test_page_changed_after_submit(void)
{
	struct dedup_store *s = new_store("stable", 1 << 20);
	struct target_open_opts o = {0};
	struct target_queue *q, *q2;
	struct target *t, *t2;
	char *page = aligned_alloc(BLK, BLK), *want = malloc(BLK), *got = malloc(BLK);
	struct iovec iov = {page, BLK};
	struct target_io io;
	struct done_rec r;

	CU_ASSERT_EQUAL_FATAL(dedup_vol_create(s, "w", 1 << 20), 0);
	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "v", &o, &t), 0);
	CU_ASSERT_EQUAL_FATAL(target_dedup_open(s, "w", &o, &t2), 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, 4, &q), 0);
	CU_ASSERT_EQUAL_FATAL(target_queue_open(t2, 4, &q2), 0);
	fill(want, BLK, 41);
	memcpy(page, want, BLK);
	tio_set(&io, TARGET_OP_WRITE, 0, BLK, &iov, 1, &r);
	CU_ASSERT_EQUAL(target_submit(q, &io), 0);
	fill(page, BLK, 42); /* before the container write is even sent */
	CU_ASSERT(target_queue_commit(q) >= 0);
	while (r.calls == 0) {
		struct pollfd p = {.fd = target_queue_fd(q), .events = POLLIN};

		CU_ASSERT_EQUAL_FATAL(poll(&p, 1, 5000), 1);
		CU_ASSERT(target_queue_poll(q, 0) >= 0);
	}
	CU_ASSERT_EQUAL(r.status, 0);
	/* Volume w writes the original data: a duplicate of v's block. */
	memcpy(got, want, BLK);
	CU_ASSERT_EQUAL(run_rw(q2, TARGET_OP_WRITE, 0, got, BLK), 0);
	memset(got, 0, BLK);
	CU_ASSERT_EQUAL(run_rw(q2, TARGET_OP_READ, 0, got, BLK), 0);
	CU_ASSERT_EQUAL(memcmp(got, want, BLK), 0);
	memset(got, 0, BLK);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 0, got, BLK), 0);
	CU_ASSERT_EQUAL(memcmp(got, want, BLK), 0); /* what v was written with, as hashed */
	target_queue_close(q);
	target_queue_close(q2);
	target_close(t);
	target_close(t2);
	free(page);
	free(want);
	free(got);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
    {"info_and_rw", test_info_and_rw},
    {"validation_and_resize", test_validation_and_resize},
    {"snapshot_readonly", test_snapshot_readonly},
    {"backpressure_and_mix", test_backpressure_and_mix},
    {"close_with_inflight", test_close_with_inflight},
    {"page_changed_after_submit", test_page_changed_after_submit},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("target_dedup", NULL, NULL, tests)
