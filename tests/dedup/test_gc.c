/*
 * test_gc.c - the collector: live blocks survive compaction (and a reopen), space comes back,
 * the background collector runs on its own, cancellation, and a duplicate hit prepared against
 * a container keeps it from being collected under it.
 */
#include "tests/dedup/dedup_test.h"
#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define SMALL_CTR (64u << 10) /* 16 slots */

static int dedup_block_is_zero_test(const uint64_t *p)
{
	for (unsigned i = 0; i < TB / 8; i++)
		if (p[i])
			return 0;
	return 1;
}

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

/* ---- everything at once ---------------------------------------------------------------- */

#define ST_BLK 96
#define ST_WRITERS 2
#define ST_WRITES 1500

struct stress {
	struct dedup_store *s;
	struct dedup_vol *v;
	_Atomic uint64_t acked[ST_BLK]; /* last acknowledged version of each block */
	atomic_int writers_left;
	atomic_int errors;
};

/* Version @ver of block @blk: its first 16 bytes say which, the rest follows from them. */
static void st_fill(uint64_t *p, uint64_t blk, uint64_t ver)
{
	t_fill(p, blk * 100000 + ver);
	p[0] = blk;
	p[1] = ver;
}

static int st_valid(const uint64_t *p, uint64_t blk, uint64_t *ver)
{
	uint64_t want[TB / 8];

	if (p[0] == 0 && p[1] == 0 && dedup_block_is_zero_test(p)) {
		*ver = 0;
		return 1;
	}
	if (p[0] != blk)
		return 0;
	st_fill(want, blk, p[1]);
	*ver = p[1];
	return memcmp(p, want, TB) == 0;
}

static void *st_writer(void *arg)
{
	struct stress *x = arg;
	static atomic_int next_id;
	int id = atomic_fetch_add(&next_id, 1) % ST_WRITERS;
	uint64_t buf[TB / 8], rnd = (uint64_t)id + 1;
	struct dedup_ctx *c;

	if (dedup_ctx_open(x->s, &c)) {
		atomic_fetch_add(&x->errors, 1);
		goto out;
	}
	for (int i = 0; i < ST_WRITES; i++) {
		uint64_t blk, ver;

		rnd = t_mix(rnd);
		blk = (rnd % (ST_BLK / ST_WRITERS)) * ST_WRITERS + (uint64_t)id;
		ver = atomic_load(&x->acked[blk]) + 1;
		st_fill(buf, blk, ver);
		if (dedup_vol_write(c, x->v, blk, 1, buf)) {
			atomic_fetch_add(&x->errors, 1);
			break;
		}
		atomic_store(&x->acked[blk], ver);
	}
	dedup_ctx_close(c);
out:
	atomic_fetch_sub(&x->writers_left, 1);
	return NULL;
}

static void *st_reader(void *arg)
{
	struct stress *x = arg;
	uint64_t buf[TB / 8], rnd = 99;
	struct dedup_ctx *c;

	if (dedup_ctx_open(x->s, &c)) {
		atomic_fetch_add(&x->errors, 1);
		return NULL;
	}
	while (atomic_load(&x->writers_left) > 0) {
		uint64_t blk, before, ver;

		rnd = t_mix(rnd);
		blk = rnd % ST_BLK;
		before = atomic_load(&x->acked[blk]);
		/* a read started after an acknowledgement sees that write or a later one */
		if (dedup_vol_read(c, x->v, blk, 1, buf) || !st_valid(buf, blk, &ver) ||
		    ver < before)
			atomic_fetch_add(&x->errors, 1);
	}
	dedup_ctx_close(c);
	return NULL;
}

/*
 * Writers overwriting (so containers die), a reader checking every read against what was
 * acknowledged, and the main thread collecting, snapshotting and deleting, all at once.
 */
static void test_gc_under_load(void)
{
	struct dedup_opts o = { .container_bytes = SMALL_CTR };
	struct stress *x = calloc(1, sizeof(*x));
	pthread_t w[ST_WRITERS], r;
	struct dedup_ctx *c;
	uint64_t buf[TB / 8];
	int rounds = 0;

	CU_ASSERT_FATAL(x != NULL);
	x->s = t_store("gc-load", &o);
	CU_ASSERT_FATAL(x->s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(x->s, "v", ST_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(x->s, "v", &x->v), 0);
	atomic_store(&x->writers_left, ST_WRITERS);
	for (int i = 0; i < ST_WRITERS; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&w[i], NULL, st_writer, x), 0);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&r, NULL, st_reader, x), 0);
	while (atomic_load(&x->writers_left) > 0) {
		char snap[32];

		snprintf(snap, sizeof(snap), "snap%d", rounds++);
		CU_ASSERT_EQUAL(dedup_store_gc(x->s, NULL, NULL), 0);
		CU_ASSERT_EQUAL(dedup_vol_snapshot(x->s, "v", snap), 0);
		CU_ASSERT_EQUAL(dedup_vol_delete(x->s, snap), 0);
	}
	for (int i = 0; i < ST_WRITERS; i++)
		pthread_join(w[i], NULL);
	pthread_join(r, NULL);
	CU_ASSERT_EQUAL(atomic_load(&x->errors), 0);
	CU_ASSERT_TRUE(rounds > 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(x->s, &c), 0);
	for (uint64_t b = 0; b < ST_BLK; b++) {
		uint64_t ver = 0;

		CU_ASSERT_EQUAL(dedup_vol_read(c, x->v, b, 1, buf), 0);
		CU_ASSERT_TRUE(st_valid(buf, b, &ver));
		CU_ASSERT_EQUAL(ver, atomic_load(&x->acked[b]));
	}
	CU_ASSERT_EQUAL(dedup_store_gc(x->s, NULL, NULL), 0);
	CU_ASSERT_TRUE(t_fsck_clean(x->s));
	dedup_ctx_close(c);
	dedup_vol_close(x->v);
	dedup_store_close(x->s);
	free(x);
}

static CU_TestInfo tests[] = {
	{ "gc_moves_live_blocks", test_gc_moves_live_blocks },
	{ "gc_background", test_gc_background },
	{ "gc_cancel", test_gc_cancel },
	{ "gc_respects_prepared_hits", test_gc_respects_prepared_hits },
	{ "gc_under_load", test_gc_under_load },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_gc", NULL, NULL, tests)
