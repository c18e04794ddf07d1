/*
 * test_gc.c - the collector: live blocks survive compaction (and a reopen), space comes back,
 * the background collector runs on its own, cancellation, and a duplicate hit prepared against
 * a container keeps it from being collected under it.
 */
#include "tests/dedup/dedup_test.h"
#include "common/util.h"

#include <errno.h>
#include <unistd.h>

#define SMALL_CTR (64u << 10) /* 16 slots */

static void test_gc_moves_live_blocks(void)
{
	struct dedup_opts o = { .container_bytes = SMALL_CTR };
	struct dedup_store *s = t_store("gc-move", &o);
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 256 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 160; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i, 1 + i), 0);
	for (uint64_t i = 0; i < 160; i += 2)
		CU_ASSERT_EQUAL(t_write(c, v, i, 10000 + i), 0);
	CU_ASSERT_EQUAL(dedup_store_reclaim(s), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 160);
	CU_ASSERT_EQUAL(st.dead_blocks, 80);
	CU_ASSERT_EQUAL(st.containers, 15);

	CU_ASSERT_EQUAL(dedup_store_gc(s, NULL, NULL), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 160);
	CU_ASSERT_EQUAL(st.dead_blocks, 0);
	CU_ASSERT_EQUAL(st.containers, 10);
	CU_ASSERT_EQUAL(st.container_bytes, 10 * SMALL_CTR);
	for (uint64_t i = 0; i < 160; i++)
		CU_ASSERT_TRUE(t_reads(c, v, i, i % 2 ? 1 + i : 10000 + i));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);

	s = t_reopen("gc-move", NULL);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 160; i++)
		CU_ASSERT_TRUE(t_reads(c, v, i, i % 2 ? 1 + i : 10000 + i));
	/* appends resume in the partly filled container */
	CU_ASSERT_EQUAL(t_write(c, v, 200, 777), 0);
	CU_ASSERT_TRUE(t_reads(c, v, 200, 777));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static void test_gc_background(void)
{
	struct dedup_opts o = { .container_bytes = SMALL_CTR, .gc_dead_pct = 50 };
	struct dedup_store *s = t_store("gc-auto", &o);
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	uint64_t deadline;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 256 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 64; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i, 1 + i), 0);
	/* three quarters of the first four (full) containers die */
	for (uint64_t i = 0; i < 64; i++)
		if (i % 4)
			CU_ASSERT_EQUAL(t_write(c, v, i, 0), 0);
	/* reclaim and collection happen when the writer is idle: wait for them, bounded */
	deadline = util_now_ns() + 10000000000ull;
	do {
		CU_ASSERT_EQUAL_FATAL(dedup_store_stats(s, &st), 0);
		if (st.containers == 1 && st.reclaim_pending == 0)
			break;
		usleep(2000);
	} while (util_now_ns() < deadline);
	CU_ASSERT_EQUAL(st.containers, 1);
	CU_ASSERT_EQUAL(st.unique_blocks, 16);
	for (uint64_t i = 0; i < 64; i++)
		CU_ASSERT_TRUE(t_reads(c, v, i, i % 4 ? 0 : 1 + i));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static int cancel_now(const struct dedup_progress *p, void *arg)
{
	(void)p;
	(void)arg;
	return 1;
}

static void test_gc_cancel(void)
{
	struct dedup_opts o = { .container_bytes = SMALL_CTR };
	struct dedup_store *s = t_store("gc-cancel", &o);
	struct dedup_ctx *c;
	struct dedup_vol *v;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 64 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 48; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i % 32, 1 + i), 0);
	CU_ASSERT_EQUAL(dedup_store_gc(s, cancel_now, NULL), -ECANCELED);
	for (uint64_t i = 16; i < 48; i++)
		CU_ASSERT_TRUE(t_reads(c, v, i % 32, 1 + i));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

/*
 * A duplicate hit holds its container: the collector skips it until the write commits, and
 * meanwhile (the container retiring) new writes of that content store a fresh copy.
 */
static void test_gc_respects_prepared_hits(void)
{
	struct dedup_opts o = { .container_bytes = SMALL_CTR };
	struct dedup_store *s = t_store("gc-hit", &o);
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	struct dedup_req *r, *r2;
	uint64_t *a = aligned_alloc(TB, TB);
	struct iovec iov = { a, TB };

	CU_ASSERT_FATAL(s && a);
	t_fill(a, 4242);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 64 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_req_alloc(1, &r), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_req_alloc(1, &r2), 0);
	CU_ASSERT_EQUAL(t_write(c, v, 0, 4242), 0);
	CU_ASSERT_EQUAL(t_write(c, v, 1, 5), 0);
	/* a duplicate of block 0, prepared (no data I/O) but not yet submitted */
	CU_ASSERT_EQUAL(dedup_write_prepare(c, v, 2, 1, &iov, 1, r), 0);
	CU_ASSERT_EQUAL(dedup_req_nr_extents(r), 0);
	/* its only committed reference goes */
	CU_ASSERT_EQUAL(t_write(c, v, 0, 0), 0);
	CU_ASSERT_EQUAL(dedup_store_gc(s, NULL, NULL), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.containers, 1); /* busy: not collected */
	/* the container now retires: the same content is stored afresh, not hit */
	CU_ASSERT_EQUAL(dedup_write_prepare(c, v, 3, 1, &iov, 1, r2), 0);
	CU_ASSERT_EQUAL(dedup_req_nr_extents(r2), 1);
	CU_ASSERT_EQUAL(t_write_extents(r2), 0);
	dedup_write_submit(c, r2, 0);
	CU_ASSERT_EQUAL(dedup_req_wait(c, r2), 0);
	dedup_write_submit(c, r, 0);
	CU_ASSERT_EQUAL(dedup_req_wait(c, r), 0);
	CU_ASSERT_TRUE(t_reads(c, v, 2, 4242));
	CU_ASSERT_TRUE(t_reads(c, v, 3, 4242));
	CU_ASSERT_EQUAL(dedup_store_gc(s, NULL, NULL), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 2);
	CU_ASSERT_EQUAL(st.dead_blocks, 0);
	CU_ASSERT_TRUE(t_reads(c, v, 1, 5));
	CU_ASSERT_TRUE(t_reads(c, v, 2, 4242));
	CU_ASSERT_TRUE(t_reads(c, v, 3, 4242));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_req_free(r);
	dedup_req_free(r2);
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
	free(a);
}

static CU_TestInfo tests[] = {
	{ "gc_moves_live_blocks", test_gc_moves_live_blocks },
	{ "gc_background", test_gc_background },
	{ "gc_cancel", test_gc_cancel },
	{ "gc_respects_prepared_hits", test_gc_respects_prepared_hits },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_gc", NULL, NULL, tests)
