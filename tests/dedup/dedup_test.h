/*
 * dedup_test.h - helpers shared by the dedup unit tests: stores in the harness temp dir and
 * deterministic block patterns (a block's content is a function of a 64-bit seed, seed 0 is
 * the zero block), so tests keep a model of what each block should hold.
 */
#ifndef SLUICE_TESTS_DEDUP_TEST_H
#define SLUICE_TESTS_DEDUP_TEST_H

#include "dedup/dedup.h"
#include "tests/harness.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define TB DEDUP_BLOCK_BYTES

static inline uint64_t t_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Fill one block from @seed (0: zeros). */
static inline void t_fill(void *blk, uint64_t seed)
{
	uint64_t *p = blk;

	if (!seed) {
		memset(blk, 0, TB);
		return;
	}
	for (unsigned i = 0; i < TB / 8; i++)
		p[i] = t_mix(seed * 1000003ull + i);
}

/* 1 if @blk holds the pattern of @seed. */
static inline int t_check(const void *blk, uint64_t seed)
{
	uint64_t want[TB / 8];

	t_fill(want, seed);
	return memcmp(blk, want, TB) == 0;
}

/* A fresh store directory path under the test temp dir. */
static inline const char *t_dir(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", harness_tmpdir(), name);
	return buf;
}

/* Create a store in <tmp>/<name> with small containers unless @o says otherwise. */
static inline struct dedup_store *t_store(const char *name, const struct dedup_opts *o)
{
	struct dedup_opts d = { 0 };
	struct dedup_store *s = NULL;
	char path[PATH_MAX];

	if (o)
		d = *o;
	d.create = 1;
	if (!d.container_bytes)
		d.container_bytes = 1u << 20;
	if (dedup_store_open(t_dir(name, path, sizeof(path)), &d, &s))
		return NULL;
	return s;
}

static inline struct dedup_store *t_reopen(const char *name, const struct dedup_opts *o)
{
	struct dedup_opts d = { 0 };
	struct dedup_store *s = NULL;
	char path[PATH_MAX];

	if (o)
		d = *o;
	if (dedup_store_open(t_dir(name, path, sizeof(path)), &d, &s))
		return NULL;
	return s;
}

/* Write one block of pattern @seed at @blk. */
static inline int t_write(struct dedup_ctx *c, struct dedup_vol *v, uint64_t blk, uint64_t seed)
{
	uint64_t buf[TB / 8];

	t_fill(buf, seed);
	return dedup_vol_write(c, v, blk, 1, buf);
}

/* 1 if block @blk reads as pattern @seed. */
static inline int t_reads(struct dedup_ctx *c, struct dedup_vol *v, uint64_t blk, uint64_t seed)
{
	uint64_t buf[TB / 8];

	if (dedup_vol_read(c, v, blk, 1, buf))
		return 0;
	return t_check(buf, seed);
}

/* Do a prepared write's data I/O the way an adapter would (pwritev per extent). */
static inline int t_write_extents(struct dedup_req *r)
{
	for (unsigned i = 0; i < dedup_req_nr_extents(r); i++) {
		const struct dedup_extent *e = dedup_req_extent(r, i);

		if (pwritev(e->fd, e->iov, (int)e->iovcnt, (off_t)e->offset_bytes) !=
		    (ssize_t)((size_t)e->nr_blk * TB))
			return -1;
	}
	return 0;
}

static inline int t_fsck_clean(struct dedup_store *s)
{
	struct dedup_fsck_report r;

	return dedup_store_fsck(s, DEDUP_FSCK_VERIFY, &r) == 0 && dedup_fsck_clean(&r);
}

#endif
