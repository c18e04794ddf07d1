/*
 * stats.c - per-ring counters and latency histograms.
 *
 * Each ring thread is the only writer of its struct bb_stats; the control thread sums the rings
 * of a vbd when blkctl asks. Counters are updated with a relaxed load and store (no lock, no
 * atomic read-modify-write) and read with relaxed loads, so the data path pays nothing and a
 * reader sees each counter torn-free (a sum across counters may be a few requests apart).
 *
 * The histogram is log-linear: values below 8 ns have a bucket each, above that each power of
 * two is split in 8 equal buckets, so any percentile is within 12.5 % of the true value.
 */
#define LOG_TAG "blkback"
#include "blkback/blkback_internal.h"

unsigned bb_hist_bucket(uint64_t ns)
{
	unsigned msb;

	if (ns < (1u << BB_HIST_SUB_BITS))
		return (unsigned)ns;
	msb = 63u - (unsigned)__builtin_clzll(ns);
	return ((msb - BB_HIST_SUB_BITS + 1) << BB_HIST_SUB_BITS) +
	       (unsigned)((ns >> (msb - BB_HIST_SUB_BITS)) & ((1u << BB_HIST_SUB_BITS) - 1));
}

/* [lo, hi] of bucket @b. */
static void bucket_bounds(unsigned b, uint64_t *lo, uint64_t *hi)
{
	unsigned sub_n = 1u << BB_HIST_SUB_BITS, shift;

	if (b < sub_n) {
		*lo = *hi = b;
		return;
	}
	shift = (b >> BB_HIST_SUB_BITS) - 1; /* msb - SUB_BITS */
	*lo = (uint64_t)(sub_n + (b & (sub_n - 1))) << shift;
	*hi = *lo + ((1ull << shift) - 1);
}

void bb_hist_record(struct bb_hist *h, uint64_t ns)
{
	bb_cnt_add(&h->count[bb_hist_bucket(ns)], 1);
}

uint64_t bb_hist_percentile(const struct bb_hist *h, double pct)
{
	uint64_t total = 0, rank, seen = 0;

	for (unsigned b = 0; b < BB_HIST_BUCKETS; b++)
		total += bb_cnt_get(&h->count[b]);
	if (total == 0 || pct <= 0)
		return 0;
	if (pct > 100)
		pct = 100;
	/* The rank-th smallest sample, 1-based: p99 of 100 samples is the 99th. */
	rank = (uint64_t)((double)total * pct / 100.0);
	if ((double)rank < (double)total * pct / 100.0)
		rank++;
	if (rank == 0)
		rank = 1;
	for (unsigned b = 0; b < BB_HIST_BUCKETS; b++) {
		seen += bb_cnt_get(&h->count[b]);
		if (seen >= rank) {
			uint64_t lo, hi;

			bucket_bounds(b, &lo, &hi);
			return lo + (hi - lo) / 2;
		}
	}
	return 0; /* not reached: seen == total >= rank at the last bucket */
}

static void hist_add(struct bb_hist *dst, const struct bb_hist *src)
{
	for (unsigned b = 0; b < BB_HIST_BUCKETS; b++)
		dst->count[b] += bb_cnt_get(&src->count[b]);
}

void bb_stats_add(struct bb_stats *dst, const struct bb_stats *src)
{
	dst->rd_req += bb_cnt_get(&src->rd_req);
	dst->wr_req += bb_cnt_get(&src->wr_req);
	dst->f_req += bb_cnt_get(&src->f_req);
	dst->ds_req += bb_cnt_get(&src->ds_req);
	dst->oo_req += bb_cnt_get(&src->oo_req);
	dst->rd_sect += bb_cnt_get(&src->rd_sect);
	dst->wr_sect += bb_cnt_get(&src->wr_sect);
	dst->errors += bb_cnt_get(&src->errors);
	dst->inflight += bb_cnt_get(&src->inflight);
	hist_add(&dst->rd_lat, &src->rd_lat);
	hist_add(&dst->wr_lat, &src->wr_lat);
}
