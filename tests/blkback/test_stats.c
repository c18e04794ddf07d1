/*
 * test_stats.c - the latency histogram (bucket math, percentiles within the promised 12.5 %)
 * and the summing of per-ring counters.
 */
#include "blkback/blkback_internal.h"
#include "tests/harness.h"

#include <stdlib.h>
#include <string.h>

static void test_buckets_monotonic(void)
{
	unsigned prev = 0;

	CU_ASSERT_EQUAL(bb_hist_bucket(0), 0);
	CU_ASSERT_EQUAL(bb_hist_bucket(7), 7);
	CU_ASSERT_EQUAL(bb_hist_bucket(8), 8);
	CU_ASSERT_EQUAL(bb_hist_bucket(15), 15);
	CU_ASSERT_EQUAL(bb_hist_bucket(16), 16);
	CU_ASSERT_EQUAL(bb_hist_bucket(UINT64_MAX), BB_HIST_BUCKETS - 1);
	for (uint64_t v = 1; v < (1ull << 62); v = v * 3 / 2 + 1) {
		unsigned b = bb_hist_bucket(v);

		CU_ASSERT(b >= prev);
		CU_ASSERT(b < BB_HIST_BUCKETS);
		prev = b;
	}
}

static void test_percentiles(void)
{
	struct bb_hist *h = calloc(1, sizeof(*h));
	uint64_t p50, p99, p100;

	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	CU_ASSERT_EQUAL(bb_hist_percentile(h, 50), 0);
	/* 1..1000 us: p50 ~ 500 us, p99 ~ 990 us, within a bucket's 12.5 %. */
	for (uint64_t us = 1; us <= 1000; us++)
		bb_hist_record(h, us * 1000);
	p50 = bb_hist_percentile(h, 50);
	p99 = bb_hist_percentile(h, 99);
	p100 = bb_hist_percentile(h, 100);
	CU_ASSERT(p50 >= 500000 * 7 / 8 && p50 <= 500000 * 9 / 8);
	CU_ASSERT(p99 >= 990000 * 7 / 8 && p99 <= 990000 * 9 / 8);
	CU_ASSERT(p100 >= 1000000 * 7 / 8 && p100 <= 1000000 * 9 / 8);
	CU_ASSERT(p50 <= p99 && p99 <= p100);

	/* One slow outlier in 100 does not move p50 but is p100. */
	memset(h, 0, sizeof(*h));
	for (int i = 0; i < 99; i++)
		bb_hist_record(h, 20000);
	bb_hist_record(h, 50000000);
	CU_ASSERT(bb_hist_percentile(h, 50) < 25000);
	CU_ASSERT(bb_hist_percentile(h, 99) < 25000);
	CU_ASSERT(bb_hist_percentile(h, 100) > 40000000);
	free(h);
}

static void test_stats_add(void)
{
	struct bb_stats *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	struct bb_stats *sum = calloc(1, sizeof(*sum));

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sum);
	bb_cnt_add(&a->rd_req, 3);
	bb_cnt_add(&a->rd_sect, 24);
	bb_cnt_add(&b->rd_req, 4);
	bb_cnt_add(&b->wr_req, 2);
	bb_cnt_add(&b->f_req, 1);
	bb_cnt_add(&b->ds_req, 5);
	bb_cnt_add(&b->oo_req, 6);
	bb_cnt_add(&b->wr_sect, 16);
	bb_cnt_add(&b->errors, 1);
	bb_cnt_add(&a->inflight, 2);
	bb_cnt_add(&a->inflight, (uint64_t)-1);
	bb_hist_record(&a->rd_lat, 1000);
	bb_hist_record(&b->rd_lat, 1000);
	bb_hist_record(&b->wr_lat, 5000);
	bb_stats_add(sum, a);
	bb_stats_add(sum, b);
	CU_ASSERT_EQUAL(sum->rd_req, 7);
	CU_ASSERT_EQUAL(sum->wr_req, 2);
	CU_ASSERT_EQUAL(sum->f_req, 1);
	CU_ASSERT_EQUAL(sum->ds_req, 5);
	CU_ASSERT_EQUAL(sum->oo_req, 6);
	CU_ASSERT_EQUAL(sum->rd_sect, 24);
	CU_ASSERT_EQUAL(sum->wr_sect, 16);
	CU_ASSERT_EQUAL(sum->errors, 1);
	CU_ASSERT_EQUAL(sum->inflight, 1);
	CU_ASSERT_EQUAL(sum->rd_lat.count[bb_hist_bucket(1000)], 2);
	CU_ASSERT_EQUAL(sum->wr_lat.count[bb_hist_bucket(5000)], 1);
	free(a);
	free(b);
	free(sum);
}

static CU_TestInfo tests[] = {
	{ "buckets_monotonic", test_buckets_monotonic },
	{ "percentiles", test_percentiles },
	{ "stats_add", test_stats_add },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("stats", NULL, NULL, tests)
