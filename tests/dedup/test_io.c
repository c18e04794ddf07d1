/*
 * test_io.c - the I/O path: data written reads back (also after reopening), duplicates are
 * stored once, zero blocks never, discards read as zeros, concurrent contexts writing one
 * volume, and requests the API must refuse.
 */
#include "tests/dedup/dedup_test.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#define VOL_BLK 4096 /* 16 MiB: two map levels */

static void test_write_read_random(void)
{
	struct dedup_store *s = t_store("io-rw", NULL);
	uint64_t *model = calloc(VOL_BLK, sizeof(*model));
	uint64_t *buf = malloc(16 * TB);
	struct dedup_ctx *c;
	struct dedup_vol *v;
	uint64_t rnd = 42;

	CU_ASSERT_FATAL(s && model && buf);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_create(s, "v", (uint64_t)VOL_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (int i = 0; i < 300; i++) {
		uint64_t first, n;

		rnd = t_mix(rnd);
		n = 1 + rnd % 16;
		first = (rnd >> 8) % (VOL_BLK - n);
		for (uint64_t b = 0; b < n; b++) {
			uint64_t seed = t_mix(rnd + b) % 5 == 0 ? 0 : t_mix(rnd + b) | 1;

			t_fill(buf + b * (TB / 8), seed);
			model[first + b] = seed;
		}
		CU_ASSERT_EQUAL_FATAL(dedup_vol_write(c, v, first, (uint32_t)n, buf), 0);
	}
	for (uint64_t b = 0; b < VOL_BLK; b++)
		CU_ASSERT_TRUE(t_reads(c, v, b, model[b]));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);

	s = t_reopen("io-rw", NULL);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	/* one big read across leaves and zero holes */
	for (uint64_t b = 0; b < VOL_BLK; b += 16) {
		CU_ASSERT_EQUAL_FATAL(dedup_vol_read(c, v, b, 16, buf), 0);
		for (unsigned i = 0; i < 16; i++)
			CU_ASSERT_TRUE(t_check(buf + i * (TB / 8), model[b + i]));
	}
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
	free(model);
	free(buf);
}

static void test_duplicates_stored_once(void)
{
	struct dedup_store *s = t_store("io-dup", NULL);
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *a, *b;
	uint64_t *buf = malloc(8 * TB);

	CU_ASSERT_FATAL(s && buf);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "a", 1u << 20), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "b", 1u << 20), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "a", &a), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "b", &b), 0);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(t_write(c, i % 2 ? a : b, i / 2, 7), 0);
	/* eight identical blocks in one request: deduplicated within the request too */
	for (int i = 0; i < 8; i++)
		t_fill(buf + i * (TB / 8), 9);
	CU_ASSERT_EQUAL(dedup_vol_write(c, a, 100, 8, buf), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 2);
	CU_ASSERT_EQUAL(st.stored_bytes, 2 * TB);
	CU_ASSERT_EQUAL(st.logical_bytes, 108ull * TB);
	CU_ASSERT_DOUBLE_EQUAL(st.dedup_ratio, 54.0, 1e-9);
	CU_ASSERT_EQUAL(st.dead_blocks, 0);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_TRUE(t_reads(c, i % 2 ? a : b, i / 2, 7));
	CU_ASSERT_TRUE(t_reads(c, a, 107, 9));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(a);
	dedup_vol_close(b);
	dedup_ctx_close(c);
	dedup_store_close(s);
	free(buf);
}

static void test_zero_blocks_not_stored(void)
{
	struct dedup_store *s = t_store("io-zero", NULL);
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	uint64_t *buf = calloc(64, TB);

	CU_ASSERT_FATAL(s && buf);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 1u << 20), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	CU_ASSERT_EQUAL(dedup_vol_write(c, v, 0, 64, buf), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 0);
	CU_ASSERT_EQUAL(st.containers, 0);
	CU_ASSERT_EQUAL(st.zero_writes, 64);
	CU_ASSERT_EQUAL(st.zero_blocks, 256);
	/* data, then zeros over it: the reference goes away once reclaimed */
	CU_ASSERT_EQUAL(t_write(c, v, 3, 11), 0);
	CU_ASSERT_EQUAL(t_write(c, v, 3, 0), 0);
	CU_ASSERT_TRUE(t_reads(c, v, 3, 0));
	CU_ASSERT_EQUAL(dedup_store_reclaim(s), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 0);
	CU_ASSERT_EQUAL(st.logical_bytes, 0);
	CU_ASSERT_EQUAL(st.reclaim_pending, 0);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
	free(buf);
}

static void test_discard(void)
{
	struct dedup_store *s = t_store("io-discard", NULL);
	struct dedup_stats st;
	struct dedup_vol_info vi;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	const uint64_t n = 1000;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", (uint64_t)VOL_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t b = 0; b < n; b++)
		CU_ASSERT_EQUAL_FATAL(t_write(c, v, b, b + 1), 0);
	/* a partial leaf, then whole leaves (dropped as subtrees) */
	CU_ASSERT_EQUAL(dedup_vol_discard(c, v, 5, 3), 0);
	CU_ASSERT_EQUAL(dedup_vol_discard(c, v, 62, 62 * 3), 0);
	CU_ASSERT_EQUAL(dedup_vol_get(s, "v", &vi), 0);
	CU_ASSERT_EQUAL(vi.mapped_bytes, (n - 3 - 62 * 3) * TB);
	for (uint64_t b = 0; b < n; b++) {
		int gone = (b >= 5 && b < 8) || (b >= 62 && b < 62 * 4);

		CU_ASSERT_TRUE(t_reads(c, v, b, gone ? 0 : b + 1));
	}
	CU_ASSERT_EQUAL(dedup_store_reclaim(s), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, n - 3 - 62 * 3);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	/* everything */
	CU_ASSERT_EQUAL(dedup_vol_discard(c, v, 0, VOL_BLK), 0);
	CU_ASSERT_EQUAL(dedup_store_reclaim(s), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 0);
	CU_ASSERT_EQUAL(st.map_bytes, 0);
	CU_ASSERT_TRUE(t_reads(c, v, 0, 0));
	CU_ASSERT_EQUAL(dedup_ctx_flush(c), 0);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

#define MT_THREADS 4
#define MT_DEPTH 8
#define MT_WRITES 200

struct mt_arg {
	struct dedup_store *s;
	struct dedup_vol *v;
	int id;
	int errors;
};

/* One ring thread: MT_DEPTH requests in flight, the adapter's way (prepare, write the
 * extents, submit, reap). Every thread also writes content the others write. */
static void *mt_writer(void *p)
{
	struct mt_arg *a = p;
	struct dedup_ctx *c;
	struct dedup_req *req[MT_DEPTH];
	uint64_t *buf[MT_DEPTH];
	int free_slot[MT_DEPTH], nfree = MT_DEPTH, done = 0, sent = 0;

	if (dedup_ctx_open(a->s, &c)) {
		a->errors++;
		return NULL;
	}
	for (int i = 0; i < MT_DEPTH; i++) {
		buf[i] = aligned_alloc(TB, TB);
		if (dedup_req_alloc(1, &req[i]) || !buf[i])
			a->errors++;
		dedup_req_set_priv(req[i], (void *)(intptr_t)i);
		free_slot[i] = i;
	}
	while (done < MT_WRITES && !a->errors) {
		struct dedup_req *r;
		int st;

		if (sent < MT_WRITES && nfree) {
			int i = free_slot[--nfree];
			uint64_t blk = (uint64_t)sent * MT_THREADS + (uint64_t)a->id;
			struct iovec iov = { buf[i], TB };
			int io = 0;

			/* seeds 1..50 are shared by all threads, the rest unique */
			t_fill(buf[i], sent % 2 ? 1 + (uint64_t)(sent / 2) % 50 : 1000 + blk);
			if (dedup_write_prepare(c, a->v, blk, 1, &iov, 1, req[i])) {
				a->errors++;
				break;
			}
			if (t_write_extents(req[i]))
				io = -EIO;
			dedup_write_submit(c, req[i], io);
			sent++;
			continue;
		}
		r = dedup_ctx_reap(c, &st);
		if (!r) {
			struct pollfd pfd = { .fd = dedup_ctx_fd(c), .events = POLLIN };

			poll(&pfd, 1, 10000);
			continue;
		}
		if (st)
			a->errors++;
		free_slot[nfree++] = (int)(intptr_t)dedup_req_priv(r);
		done++;
	}
	for (int i = 0; i < MT_DEPTH; i++) {
		dedup_req_free(req[i]);
		free(buf[i]);
	}
	dedup_ctx_close(c);
	return NULL;
}

static void test_concurrent_contexts(void)
{
	struct dedup_store *s = t_store("io-mt", NULL);
	struct mt_arg a[MT_THREADS];
	pthread_t th[MT_THREADS];
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", (uint64_t)MT_THREADS * MT_WRITES * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (int i = 0; i < MT_THREADS; i++) {
		a[i] = (struct mt_arg){ s, v, i, 0 };
		CU_ASSERT_EQUAL(pthread_create(&th[i], NULL, mt_writer, &a[i]), 0);
	}
	for (int i = 0; i < MT_THREADS; i++) {
		pthread_join(th[i], NULL);
		CU_ASSERT_EQUAL(a[i].errors, 0);
	}
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	for (int t = 0; t < MT_THREADS; t++) {
		for (int i = 0; i < MT_WRITES; i++) {
			uint64_t blk = (uint64_t)i * MT_THREADS + (uint64_t)t;

			CU_ASSERT_TRUE(
			    t_reads(c, v, blk, i % 2 ? 1 + (uint64_t)(i / 2) % 50 : 1000 + blk));
		}
	}
	/* identical content written concurrently is indexed once (spare copies are garbage) */
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 50 + MT_THREADS * MT_WRITES / 2);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_ctx_close(c);
	dedup_vol_close(v);
	dedup_store_close(s);
}

static void test_refusals(void)
{
	struct dedup_store *s = t_store("io-refuse", NULL);
	struct dedup_ctx *c;
	struct dedup_vol *v, *snap;
	struct dedup_req *r;
	uint64_t *buf = aligned_alloc(TB, 2 * TB);
	struct iovec half = { buf, TB / 2 }, two = { buf, 2 * TB };

	CU_ASSERT_FATAL(s && buf);
	memset(buf, 1, 2 * TB);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 16 * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(s, "v", "snap"), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "snap", &snap), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_req_alloc(2, &r), 0);
	CU_ASSERT_EQUAL(dedup_req_alloc(0, &r), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_write(c, v, 16, 1, buf), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_write(c, v, 15, 2, buf), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_read(c, v, UINT64_MAX, 1, buf), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_write(c, snap, 0, 1, buf), -EROFS);
	CU_ASSERT_EQUAL(dedup_vol_discard(c, snap, 0, 1), -EROFS);
	CU_ASSERT_EQUAL(dedup_write_prepare(c, v, 0, 1, &half, 1, r), -EINVAL);
	CU_ASSERT_EQUAL(dedup_write_prepare(c, v, 0, 1, &two, 1, r), -EINVAL);
	CU_ASSERT_EQUAL(dedup_write_prepare(c, v, 0, 3, &two, 1, r), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_delete(s, "v"), -EBUSY);
	/* an aborted write changes nothing */
	CU_ASSERT_EQUAL(dedup_write_prepare(c, v, 0, 2, &two, 1, r), 0);
	dedup_write_submit(c, r, -EIO);
	CU_ASSERT_EQUAL(dedup_req_wait(c, r), -EIO);
	CU_ASSERT_TRUE(t_reads(c, v, 0, 0));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_req_free(r);
	dedup_vol_close(snap);
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
	free(buf);
}

/*
 * Everything read back before any checkpoint comes from the writer's overlay: overwrites, zero
 * writes, discards (whole ranges) and writes into discarded ranges, duplicates of content
 * stored since the checkpoint. Then the same after the checkpoint, from the index.
 */
static void test_reads_before_checkpoint(void)
{
	struct dedup_opts o = { .checkpoint_ms = 600000 };
	struct dedup_store *s = t_store("io-overlay", &o);
	uint64_t model[600] = { 0 }, nonzero = 0;
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 600 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (int round = 0; round < 2; round++) {
		for (uint64_t b = 0; b < 600; b++) {
			model[b] = b % 7 == 0 ? 0 : 1 + (b * 13 + (uint64_t)round) % 97;
			CU_ASSERT_EQUAL(t_write(c, v, b, model[b]), 0);
		}
		CU_ASSERT_EQUAL(dedup_vol_discard(c, v, 100, 250), 0);
		for (uint64_t b = 100; b < 350; b++)
			model[b] = 0;
		CU_ASSERT_EQUAL(t_write(c, v, 200, 4242), 0); /* inside the discarded range */
		model[200] = 4242;
		CU_ASSERT_EQUAL(t_write(c, v, 5, 4242), 0); /* a duplicate of it */
		model[5] = 4242;
		for (uint64_t b = 0; b < 600; b++)
			CU_ASSERT_TRUE(t_reads(c, v, b, model[b]));
	}
	/* stats checkpoint: the same through the index */
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	for (uint64_t b = 0; b < 600; b++)
		nonzero += model[b] != 0;
	CU_ASSERT_EQUAL(st.logical_bytes, nonzero * TB);
	for (uint64_t b = 0; b < 600; b++)
		CU_ASSERT_TRUE(t_reads(c, v, b, model[b]));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
	{ "write_read_random", test_write_read_random },
	{ "reads_before_checkpoint", test_reads_before_checkpoint },
	{ "duplicates_stored_once", test_duplicates_stored_once },
	{ "zero_blocks_not_stored", test_zero_blocks_not_stored },
	{ "discard", test_discard },
	{ "concurrent_contexts", test_concurrent_contexts },
	{ "refusals", test_refusals },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_io", NULL, NULL, tests)
