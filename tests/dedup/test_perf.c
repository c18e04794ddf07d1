/*
 * test_perf.c - measurements behind docs/dedup.md, small enough for every test run and
 * scalable for the documented numbers:
 *
 *   DEDUP_PERF_BLOCKS=262144 DEDUP_PERF_MAP_BLOCKS=262144 build/tests/dedup-unit dedup_perf
 *
 * 1. map_choice: the block map as Parallax's radix tree (what the store uses) against a plain
 *    LMDB B-tree keyed by (volume, block), same LMDB flags, same batches: write cost, read cost,
 *    bytes per mapped block, and the cost of a snapshot (O(1) against copying the map).
 * 2. library_throughput: 4 KiB unique random writes and reads through the library alone (two
 *    threads, 32 requests in flight each, container data in the page cache, commits synced),
 *    and the content index's bytes per unique block, extrapolated to GB per TB.
 *
 * The assertions check that the measurements measured what they claim (same contents both
 * ways, every write stored once); the numbers are printed.
 */
#include "tests/dedup/dedup_test.h"
#include "dedup/dedup_internal.h"
#include "common/util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

static double secs(uint64_t t0)
{
	return (double)(util_now_ns() - t0) / 1e9;
}

static void fake_hash(uint64_t lba, uint64_t gen, uint8_t h[HASH_BYTES])
{
	for (unsigned i = 0; i < HASH_BYTES / 8; i++) {
		uint64_t x = t_mix(lba * 4 + i + gen * 0x1000000001ull) | 1;

		memcpy(h + i * 8, &x, 8);
	}
}

/* The order blocks are written in: a permutation of [0, span) scattered like random I/O. */
static uint64_t order(uint64_t i, uint64_t span, int sequential)
{
	return sequential ? i : (i * 2654435761ull + 12345) % span;
}

#define MAP_BATCH 256

enum pattern {
	PAT_SPARSE,    /* first writes at random over 4x the data */
	PAT_SEQ,       /* first writes in order */
	PAT_OVERWRITE, /* random overwrites of a fully written range */
	PAT_N
};

static const char *const pat_name[PAT_N] = { "random first writes", "sequential first writes",
					     "random overwrites" };

struct map_result {
	double write_us, read_us, snap_ms, bytes_per_blk;
};

/* The n timed updates of pattern @p: block and generation of update @j. */
static void pat_update(enum pattern p, uint64_t n, uint64_t j, uint64_t *lba, uint64_t *gen)
{
	*lba = p == PAT_SEQ ? j : order(j, p == PAT_SPARSE ? 4 * n : n, 0);
	*gen = p == PAT_OVERWRITE ? 1 : 0;
}

static uint64_t pat_span(enum pattern p, uint64_t n)
{
	return p == PAT_SPARSE ? 4 * n : n;
}

/* Radix: drive the store's map directly (the writer is idle), MAP_BATCH updates per commit. */
static int radix_batch(struct dedup_store *s, enum pattern p, uint64_t n, uint64_t i, int fill)
{
	struct wtx w = { 0 };
	struct wvol *wv;
	uint8_t h[HASH_BYTES];
	int ok = wtx_begin(s, &w) == 0 && wvol_get(&w, "v", &wv) == 0;

	for (uint64_t j = i; ok && j < i + MAP_BATCH && j < n; j++) {
		uint64_t lba = j, gen = 0;

		if (!fill)
			pat_update(p, n, j, &lba, &gen);
		fake_hash(lba, gen, h);
		ok = map_set(&w, &wv->rec, lba, h) == 0;
	}
	if (ok) {
		wv->dirty = 1;
		ok = wtx_commit(&w) == 0;
	} else {
		wtx_abort(&w);
	}
	wtx_free(&w);
	return ok;
}

static void radix_run(uint64_t n, enum pattern p, struct map_result *res)
{
	char name[64];
	struct dedup_store *s;
	struct wtx w = { 0 };
	struct wvol *wv;
	struct dedup_stats st;
	uint8_t h[HASH_BYTES], got[HASH_BYTES];
	uint64_t t0, gen = p == PAT_OVERWRITE;
	int ok = 1;

	snprintf(name, sizeof(name), "perf-radix-%d", p);
	s = t_store(name, NULL);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_create(s, "v", pat_span(p, n) * TB), 0);
	for (uint64_t i = 0; p == PAT_OVERWRITE && ok && i < n; i += MAP_BATCH)
		ok = radix_batch(s, p, n, i, 1);
	t0 = util_now_ns();
	for (uint64_t i = 0; i < n && ok; i += MAP_BATCH)
		ok = radix_batch(s, p, n, i, 0);
	CU_ASSERT_TRUE(ok);
	res->write_us = secs(t0) * 1e6 / (double)n;
	t0 = util_now_ns();
	CU_ASSERT_EQUAL_FATAL(wtx_begin(s, &w), 0);
	CU_ASSERT_EQUAL_FATAL(wvol_get(&w, "v", &wv), 0);
	for (uint64_t j = 0; j < n; j++) {
		uint64_t lba, g;

		pat_update(p, n, t_mix(j) % n, &lba, &g);
		fake_hash(lba, gen, h);
		if (map_get(&w, &wv->rec, lba, got) || memcmp(got, h, HASH_BYTES))
			ok = 0;
	}
	wtx_abort(&w);
	wtx_free(&w);
	res->read_us = secs(t0) * 1e6 / (double)n;
	CU_ASSERT_TRUE(ok);
	t0 = util_now_ns();
	CU_ASSERT_EQUAL(dedup_vol_snapshot(s, "v", "snap"), 0);
	res->snap_ms = secs(t0) * 1e3;
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	res->bytes_per_blk = (double)st.map_bytes / (double)n;
	dedup_store_close(s);
}

static void btree_key(uint32_t vol, uint64_t lba, uint8_t k[12])
{
	/* big-endian, so a volume's blocks sort together and in order */
	for (int i = 0; i < 4; i++)
		k[i] = (uint8_t)(vol >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		k[4 + i] = (uint8_t)(lba >> (56 - 8 * i));
}

static int btree_batch(MDB_env *env, MDB_dbi dbi, enum pattern p, uint64_t n, uint64_t i,
		       int fill)
{
	MDB_txn *txn;
	uint8_t key[12], h[HASH_BYTES];
	int ok = mdb_txn_begin(env, NULL, 0, &txn) == 0;

	for (uint64_t j = i; ok && j < i + MAP_BATCH && j < n; j++) {
		uint64_t lba = j, gen = 0;
		MDB_val k = { sizeof(key), key }, d = { HASH_BYTES, h };

		if (!fill)
			pat_update(p, n, j, &lba, &gen);
		btree_key(1, lba, key);
		fake_hash(lba, gen, h);
		ok = mdb_put(txn, dbi, &k, &d, 0) == 0;
	}
	if (!ok) {
		mdb_txn_abort(txn);
		return 0;
	}
	return mdb_txn_commit(txn) == 0;
}

static void btree_run(uint64_t n, enum pattern p, struct map_result *res)
{
	char path[PATH_MAX];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_stat ms;
	MDB_val k, d;
	uint8_t key[12], h[HASH_BYTES];
	uint64_t t0, copied = 0, gen = p == PAT_OVERWRITE;
	int ok = 1;

	snprintf(path, sizeof(path), "%s/perf-btree-%d.mdb", harness_tmpdir(), p);
	CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
	mdb_env_set_mapsize(env, 4ull << 30);
	CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOMETASYNC | MDB_NOTLS,
					   0600), 0);
	CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
	CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
	CU_ASSERT_EQUAL_FATAL(mdb_txn_commit(txn), 0);
	for (uint64_t i = 0; p == PAT_OVERWRITE && ok && i < n; i += MAP_BATCH)
		ok = btree_batch(env, dbi, p, n, i, 1);
	t0 = util_now_ns();
	for (uint64_t i = 0; i < n && ok; i += MAP_BATCH)
		ok = btree_batch(env, dbi, p, n, i, 0);
	CU_ASSERT_TRUE(ok);
	res->write_us = secs(t0) * 1e6 / (double)n;
	t0 = util_now_ns();
	CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	for (uint64_t j = 0; j < n; j++) {
		uint64_t lba, g;

		pat_update(p, n, t_mix(j) % n, &lba, &g);
		btree_key(1, lba, key);
		fake_hash(lba, gen, h);
		k = (MDB_val){ sizeof(key), key };
		if (mdb_get(txn, dbi, &k, &d) || memcmp(d.mv_data, h, HASH_BYTES))
			ok = 0;
	}
	res->read_us = secs(t0) * 1e6 / (double)n;
	mdb_stat(txn, dbi, &ms);
	res->bytes_per_blk = (double)(ms.ms_branch_pages + ms.ms_leaf_pages) * ms.ms_psize /
			     (double)n;
	mdb_txn_abort(txn);
	CU_ASSERT_TRUE(ok);
	/* a snapshot in a flat map: copy every entry of volume 1 to volume 2 */
	t0 = util_now_ns();
	CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
	CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, dbi, &cur), 0);
	btree_key(1, 0, key);
	k = (MDB_val){ sizeof(key), key };
	for (int rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
	     rc == 0 && ((uint8_t *)k.mv_data)[3] == 1;
	     rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
		uint8_t nk[12], val[HASH_BYTES];
		MDB_val k2 = { sizeof(nk), nk }, d2 = { HASH_BYTES, val };

		memcpy(nk, k.mv_data, sizeof(nk));
		memcpy(val, d.mv_data, HASH_BYTES);
		nk[3] = 2;
		if (mdb_put(txn, dbi, &k2, &d2, 0))
			break;
		copied++;
		/* the put may have moved the cursor's page: find our place again */
		nk[3] = 1;
		k = (MDB_val){ sizeof(nk), nk };
		if (mdb_cursor_get(cur, &k, &d, MDB_SET))
			break;
	}
	mdb_cursor_close(cur);
	CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
	res->snap_ms = secs(t0) * 1e3;
	CU_ASSERT_EQUAL(copied, n);
	mdb_env_close(env);
}

static void test_map_choice(void)
{
	uint64_t n = env_u64("DEDUP_PERF_MAP_BLOCKS", 16384);

	printf("\n    block map, %llu updates, %u per transaction:\n", (unsigned long long)n,
	       MAP_BATCH);
	printf("    %-34s %9s %9s %12s %12s\n", "", "write us", "read us", "bytes/block",
	       "snapshot ms");
	for (int p = 0; p < PAT_N; p++) {
		struct map_result r, b;

		radix_run(n, (enum pattern)p, &r);
		btree_run(n, (enum pattern)p, &b);
		printf("    radix  %-27s %9.2f %9.2f %12.1f %12.2f\n", pat_name[p], r.write_us,
		       r.read_us, r.bytes_per_blk, r.snap_ms);
		printf("    B-tree %-27s %9.2f %9.2f %12.1f %12.2f\n", pat_name[p], b.write_us,
		       b.read_us, b.bytes_per_blk, b.snap_ms);
		CU_ASSERT_TRUE(r.bytes_per_blk > 0 && b.bytes_per_blk > 0);
	}
}

/* ---- library throughput ------------------------------------------------------------------- */

#define TP_THREADS 2
#define TP_DEPTH 32

struct tp_arg {
	struct dedup_store *s;
	struct dedup_vol *v;
	uint64_t first, n, span;
	int write;
	int errors;
	uint64_t extents; /**< data writes the library asked for */
};

static void *tp_thread(void *p)
{
	struct tp_arg *a = p;
	struct dedup_ctx *c;
	struct dedup_req *req[TP_DEPTH];
	uint8_t *buf;
	int free_slot[TP_DEPTH], nfree = TP_DEPTH;
	uint64_t sent = 0, done = 0;

	buf = aligned_alloc(TB, (size_t)TP_DEPTH * TB);
	if (!buf || dedup_ctx_open(a->s, &c)) {
		a->errors++;
		free(buf);
		return NULL;
	}
	for (int i = 0; i < TP_DEPTH; i++) {
		if (dedup_req_alloc(1, &req[i]))
			a->errors++;
		dedup_req_set_priv(req[i], (void *)(intptr_t)i);
		free_slot[i] = i;
	}
	while (done < a->n && !a->errors) {
		int st;

		if (!a->write) {
			/* reads complete synchronously: prepare, pread, finish */
			uint64_t blk = order(a->first + t_mix(done) % a->n, a->span, 0);

			if (dedup_vol_read(c, a->v, blk, 1, buf) || !t_check(buf, blk + 1))
				a->errors++;
			done++;
			continue;
		}
		if (sent < a->n && nfree) {
			int i = free_slot[--nfree];
			uint64_t blk = order(a->first + sent, a->span, 0);
			struct iovec iov = { buf + (size_t)i * TB, TB };

			t_fill(iov.iov_base, blk + 1);
			if (dedup_write_prepare(c, a->v, blk, 1, &iov, 1, req[i]) ||
			    t_write_extents(req[i])) {
				a->errors++;
				break;
			}
			a->extents += dedup_req_nr_extents(req[i]);
			dedup_write_submit(c, req[i], 0);
			sent++;
			continue;
		}
		struct dedup_req *r = dedup_ctx_reap(c, &st);

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
	for (int i = 0; i < TP_DEPTH; i++)
		dedup_req_free(req[i]);
	dedup_ctx_close(c);
	free(buf);
	return NULL;
}

/* @n blocks through TP_THREADS threads; *extents: data writes the library asked for. */
static double tp_phase(struct dedup_store *s, struct dedup_vol *v, uint64_t n, int write,
		       uint64_t *extents)
{
	struct tp_arg a[TP_THREADS];
	pthread_t th[TP_THREADS];
	uint64_t t0 = util_now_ns();
	double t;

	*extents = 0;
	for (int i = 0; i < TP_THREADS; i++) {
		a[i] = (struct tp_arg){ s, v, n / TP_THREADS * (uint64_t)i, n / TP_THREADS, 4 * n,
					write, 0, 0 };
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, tp_thread, &a[i]), 0);
	}
	for (int i = 0; i < TP_THREADS; i++) {
		pthread_join(th[i], NULL);
		CU_ASSERT_EQUAL(a[i].errors, 0);
		*extents += a[i].extents;
	}
	t = secs(t0);
	return (double)(n / TP_THREADS * TP_THREADS) / t;
}

static void test_library_throughput(void)
{
	uint64_t n = env_u64("DEDUP_PERF_BLOCKS", 16384), ext, txn0, txn1;
	struct dedup_opts o = { .container_bytes = 64u << 20 };
	struct dedup_store *s = t_store("perf-lib", &o);
	struct dedup_stats st;
	struct dedup_vol *v, *dup;
	MDB_envinfo ei;
	double w, d, r, per_blk;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_create(s, "v", 4 * n * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_create(s, "dup", 4 * n * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "dup", &dup), 0);
	mdb_env_info(s->env, &ei);
	txn0 = ei.me_last_txnid;
	w = tp_phase(s, v, n, 1, &ext);
	CU_ASSERT_EQUAL(ext, n / TP_THREADS * TP_THREADS);
	mdb_env_info(s->env, &ei);
	txn1 = ei.me_last_txnid;
	/* the same contents again, to another volume: every block a duplicate, no data I/O */
	d = tp_phase(s, dup, n, 1, &ext);
	CU_ASSERT_EQUAL(ext, 0);
	r = tp_phase(s, v, n, 0, &ext);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, n / TP_THREADS * TP_THREADS);
	per_blk = (double)st.index_bytes / (double)st.unique_blocks;
	printf("\n    library, %llu unique 4 KiB blocks, %d threads x %d in flight:\n",
	       (unsigned long long)st.unique_blocks, TP_THREADS, TP_DEPTH);
	printf("    unique random writes    %8.0f/s (%.1f MB/s), %llu index commits\n", w,
	       w * TB / 1e6, (unsigned long long)(txn1 - txn0));
	printf("    duplicate random writes %8.0f/s (%.1f MB/s)\n", d, d * TB / 1e6);
	printf("    random reads            %8.0f/s (%.1f MB/s, page cache)\n", r, r * TB / 1e6);
	printf("    content index %.1f bytes per unique block = %.1f GB per TB of unique data\n",
	       per_blk, per_blk * (1e12 / TB) / 1e9);
	printf("    block maps %.1f bytes per mapped block, metadata file %.1f MB\n",
	       (double)st.map_bytes / (double)(2 * st.unique_blocks),
	       (double)st.meta_file_bytes / 1e6);
	CU_ASSERT_TRUE(per_blk > 40 && per_blk < 200);
	dedup_vol_close(dup);
	dedup_vol_close(v);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
	{ "map_choice", test_map_choice },
	{ "library_throughput", test_library_throughput },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_perf", NULL, NULL, tests)
