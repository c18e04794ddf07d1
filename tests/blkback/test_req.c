/*
 * test_req.c - request copy and validation: every way a guest can get a request wrong, and the
 * slot copy that must carry every byte (a discard's nr_sectors overlaps seg[0]'s padding).
 */
#include "blkback/blkback_internal.h"
#include "tests/harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DISK_SECT 2048u

static const struct bb_limits lim_rw = {
	.size_sect = DISK_SECT, .logical_block = 512, .ro = 0, .discard = 1, .barrier = 1,
	.max_indirect_segs = 256,
};

static union bb_req_slot rw_req(uint8_t op, uint8_t nseg, uint64_t sector)
{
	union bb_req_slot s;

	memset(&s, 0, sizeof(s));
	s.rw.operation = op;
	s.rw.nr_segments = nseg;
	s.rw.handle = 51712;
	s.rw.id = 0xabcdef0012345678ull;
	s.rw.sector_number = sector;
	for (unsigned i = 0; i < BB_DIRECT_SEGS; i++) {
		s.rw.seg[i].gref = 100 + i;
		s.rw.seg[i].first_sect = 0;
		s.rw.seg[i].last_sect = 7;
	}
	return s;
}

static union bb_req_slot discard_req(uint64_t sector, uint64_t nr)
{
	union bb_req_slot s;

	memset(&s, 0, sizeof(s));
	s.discard.operation = BLKIF_OP_DISCARD;
	s.discard.id = 77;
	s.discard.sector_number = sector;
	s.discard.nr_sectors = nr;
	return s;
}

static int parse(const union bb_req_slot *s, const struct bb_limits *lim, struct bb_parsed *p)
{
	const char *why = NULL;
	int rc = bb_req_parse(s, lim, p, &why);

	CU_ASSERT_PTR_NOT_NULL(why);
	if (rc < 0)
		CU_ASSERT(why && why[0] != '\0');
	return rc;
}

static void test_read_ok(void)
{
	union bb_req_slot s = rw_req(BLKIF_OP_READ, 2, 16);
	struct bb_parsed p;

	s.rw.seg[1].first_sect = 2;
	s.rw.seg[1].last_sect = 5;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.id, 0xabcdef0012345678ull);
	CU_ASSERT_EQUAL(p.op, BLKIF_OP_READ);
	CU_ASSERT_EQUAL(p.sector, 16);
	CU_ASSERT_EQUAL(p.nr_segs, 2);
	CU_ASSERT_EQUAL(p.nr_sect, 8 + 4);
	CU_ASSERT_EQUAL(p.seg[0].gref, 100);
	CU_ASSERT_EQUAL(p.seg[0].off_bytes, 0);
	CU_ASSERT_EQUAL(p.seg[0].len_bytes, 4096);
	CU_ASSERT_EQUAL(p.seg[1].gref, 101);
	CU_ASSERT_EQUAL(p.seg[1].off_bytes, 1024);
	CU_ASSERT_EQUAL(p.seg[1].len_bytes, 2048);
}

static void test_write_11_segments_to_the_last_sector(void)
{
	union bb_req_slot s = rw_req(BLKIF_OP_WRITE, 11, DISK_SECT - 88);
	struct bb_parsed p;

	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.nr_segs, 11);
	CU_ASSERT_EQUAL(p.nr_sect, 88);
}

static void test_opcodes(void)
{
	static const uint8_t bad[] = { BLKIF_OP_RESERVED_1, 7, 77, 255 };
	struct bb_limits lim = lim_rw;
	union bb_req_slot s;
	struct bb_parsed p;

	for (unsigned i = 0; i < sizeof(bad); i++) {
		s = rw_req(bad[i], 1, 0);
		CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EOPNOTSUPP);
		CU_ASSERT_EQUAL(p.id, 0xabcdef0012345678ull); /* answerable */
		CU_ASSERT_EQUAL(p.op, bad[i]);
		CU_ASSERT_EQUAL(bb_req_status(-EOPNOTSUPP), BLKIF_RSP_EOPNOTSUPP);
	}
	/* Barrier, discard and indirect only when advertised. */
	lim.barrier = 0;
	lim.discard = 0;
	lim.max_indirect_segs = 0;
	s = rw_req(BLKIF_OP_INDIRECT, 1, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EOPNOTSUPP);
	s = rw_req(BLKIF_OP_WRITE_BARRIER, 1, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EOPNOTSUPP);
	s = discard_req(0, 8);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EOPNOTSUPP);
	s = rw_req(BLKIF_OP_WRITE_BARRIER, 1, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
}

static void test_nr_segments(void)
{
	static const uint8_t ops[] = { BLKIF_OP_READ, BLKIF_OP_WRITE };
	union bb_req_slot s;
	struct bb_parsed p;

	for (unsigned i = 0; i < sizeof(ops); i++) {
		s = rw_req(ops[i], 0, 0);
		CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
		s = rw_req(ops[i], 12, 0);
		CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
		s = rw_req(ops[i], 200, 0);
		CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
		s = rw_req(ops[i], 255, 0);
		CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
		CU_ASSERT_EQUAL(bb_req_status(-EINVAL), BLKIF_RSP_ERROR);
	}
	/* A flush may come without data, a flush with 12 segments may not. */
	s = rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0xffffffffffffull);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.nr_segs, 0);
	CU_ASSERT_EQUAL(p.nr_sect, 0);
	s = rw_req(BLKIF_OP_FLUSH_DISKCACHE, 12, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
	s = rw_req(BLKIF_OP_FLUSH_DISKCACHE, 3, 8);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.nr_sect, 24);
}

static void test_segment_bounds(void)
{
	union bb_req_slot s;
	struct bb_parsed p;

	s = rw_req(BLKIF_OP_READ, 3, 0);
	s.rw.seg[2].last_sect = 9;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
	s.rw.seg[2].last_sect = 8;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
	s.rw.seg[2].last_sect = 255;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
	s = rw_req(BLKIF_OP_WRITE, 1, 0);
	s.rw.seg[0].first_sect = 5;
	s.rw.seg[0].last_sect = 4;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -EINVAL);
	s.rw.seg[0].first_sect = 7;
	s.rw.seg[0].last_sect = 7;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.seg[0].off_bytes, 3584);
	CU_ASSERT_EQUAL(p.seg[0].len_bytes, 512);
	/* Segments beyond nr_segments are never looked at. */
	s = rw_req(BLKIF_OP_READ, 1, 0);
	s.rw.seg[1].last_sect = 200;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
}

static void test_range(void)
{
	union bb_req_slot s;
	struct bb_parsed p;

	s = rw_req(BLKIF_OP_READ, 1, DISK_SECT - 8);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	s = rw_req(BLKIF_OP_READ, 1, DISK_SECT - 7);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	s = rw_req(BLKIF_OP_WRITE, 1, DISK_SECT);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	s = rw_req(BLKIF_OP_WRITE, 2, UINT64_MAX - 3); /* sector + nr wraps around */
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	s = rw_req(BLKIF_OP_READ, 1, UINT64_MAX);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	CU_ASSERT_EQUAL(bb_req_status(-ERANGE), BLKIF_RSP_ERROR);
}

static void test_alignment_4k(void)
{
	struct bb_limits lim = lim_rw;
	union bb_req_slot s;
	struct bb_parsed p;

	lim.logical_block = 4096;
	s = rw_req(BLKIF_OP_READ, 2, 8);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	s = rw_req(BLKIF_OP_READ, 1, 9); /* misaligned sector */
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = rw_req(BLKIF_OP_WRITE, 1, 8);
	s.rw.seg[0].first_sect = 1; /* misaligned offset in the page */
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = rw_req(BLKIF_OP_WRITE, 1, 8);
	s.rw.seg[0].last_sect = 3; /* a half block */
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = discard_req(4, 8);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = discard_req(8, 12);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = discard_req(8, 16);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
}

static void test_read_only(void)
{
	struct bb_limits lim = lim_rw;
	union bb_req_slot s;
	struct bb_parsed p;

	lim.ro = 1;
	s = rw_req(BLKIF_OP_WRITE, 1, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EROFS);
	CU_ASSERT_EQUAL(bb_req_status(-EROFS), BLKIF_RSP_ERROR);
	s = rw_req(BLKIF_OP_FLUSH_DISKCACHE, 1, 0); /* a flush carrying data writes */
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EROFS);
	s = rw_req(BLKIF_OP_WRITE_BARRIER, 1, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EROFS);
	s = discard_req(0, 8);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EROFS);
	s = rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	s = rw_req(BLKIF_OP_READ, 11, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
}

static void test_discard(void)
{
	union bb_req_slot s;
	struct bb_parsed p;

	s = discard_req(16, 64);
	s.discard.flag = BLKIF_DISCARD_SECURE;
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.id, 77);
	CU_ASSERT_EQUAL(p.sector, 16);
	CU_ASSERT_EQUAL(p.nr_sect, 64);
	CU_ASSERT_EQUAL(p.nr_segs, 0);
	CU_ASSERT_EQUAL(p.discard_flag, BLKIF_DISCARD_SECURE);
	s = discard_req(0, DISK_SECT);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	s = discard_req(1, DISK_SECT);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	s = discard_req(8, UINT64_MAX); /* wraps */
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	s = discard_req(DISK_SECT + 1, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), -ERANGE);
	s = discard_req(5, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim_rw, &p), 0);
	CU_ASSERT_EQUAL(p.nr_sect, 0);
}

/* The copy takes the whole slot: a discard's nr_sectors high bytes sit in seg[0]'s padding. */
static void test_copy_whole_slot(void)
{
	void *page = NULL;
	blkif_sring_t *sring;
	blkif_back_ring_t br;
	struct blkif_request_discard d;
	union bb_req_slot s;
	struct bb_parsed p;
	const char *why;

	CU_ASSERT_EQUAL_FATAL(posix_memalign(&page, 4096, 4096), 0);
	sring = page;
	SHARED_RING_INIT(sring);
	BACK_RING_INIT(&br, sring, 4096);
	CU_ASSERT_EQUAL(RING_SIZE(&br), 32);
	memset(&d, 0, sizeof(d));
	d.operation = BLKIF_OP_DISCARD;
	d.id = 5;
	d.sector_number = 8;
	d.nr_sectors = 0x0102030405060708ull;
	memset(RING_GET_REQUEST(&br, 3), 0xee, sizeof(struct blkif_request));
	memcpy(RING_GET_REQUEST(&br, 3), &d, sizeof(d));
	bb_req_copy(&br, 3, &s);
	CU_ASSERT_EQUAL(s.discard.nr_sectors, 0x0102030405060708ull);
	CU_ASSERT_EQUAL(s.discard.sector_number, 8);
	CU_ASSERT_EQUAL(memcmp(&s, RING_GET_REQUEST(&br, 3), sizeof(s)), 0);
	CU_ASSERT_EQUAL(bb_req_parse(&s, &lim_rw, &p, &why), -ERANGE);
	/* Slot indices wrap around the ring. */
	bb_req_copy(&br, 3 + 32 * 5, &s);
	CU_ASSERT_EQUAL(s.discard.id, 5);
	free(page);
}

static union bb_req_slot ind_req(uint8_t iop, uint16_t nseg, uint64_t sector)
{
	union bb_req_slot s;

	memset(&s, 0, sizeof(s));
	s.indirect.operation = BLKIF_OP_INDIRECT;
	s.indirect.indirect_op = iop;
	s.indirect.nr_segments = nseg;
	s.indirect.id = 4242;
	s.indirect.sector_number = sector;
	s.indirect.handle = 51712;
	for (unsigned i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++)
		s.indirect.indirect_grefs[i] = 900 + i;
	return s;
}

static void test_indirect(void)
{
	static struct blkif_request_segment segs[BB_MAX_SEGS];
	struct bb_limits lim = lim_rw;
	union bb_req_slot s;
	struct bb_parsed p;
	const char *why;

	for (unsigned i = 0; i < BB_MAX_SEGS; i++)
		segs[i] = (struct blkif_request_segment){ .gref = 10 + i, .first_sect = 0,
							  .last_sect = 7 };
	/* The header: answered as the operation it carries. */
	s = ind_req(BLKIF_OP_WRITE, 256, 0); /* the whole 1 MiB disk */
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	CU_ASSERT_EQUAL(p.op, BLKIF_OP_WRITE);
	CU_ASSERT_EQUAL(p.id, 4242);
	CU_ASSERT(p.indirect);
	CU_ASSERT_EQUAL(p.nr_segs, 256);
	CU_ASSERT_EQUAL(p.nr_indirect, 1);
	CU_ASSERT_EQUAL(p.indirect_grefs[0], 900);
	/* Then the segments, copied from the indirect page. */
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), 0);
	CU_ASSERT_EQUAL(p.nr_sect, 256 * 8);
	CU_ASSERT_EQUAL(p.seg[255].gref, 265);

	s = ind_req(BLKIF_OP_DISCARD, 8, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	CU_ASSERT_EQUAL(p.op, BLKIF_OP_DISCARD);
	s = ind_req(BLKIF_OP_INDIRECT, 8, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = ind_req(BLKIF_OP_READ, 0, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = ind_req(BLKIF_OP_READ, 257, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	s = ind_req(BLKIF_OP_READ, 65535, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	lim.max_indirect_segs = 32;
	s = ind_req(BLKIF_OP_READ, 33, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EINVAL);
	lim.max_indirect_segs = 256;

	/* Segments are checked exactly like direct ones. */
	s = ind_req(BLKIF_OP_READ, 20, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	segs[19].last_sect = 9;
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), -EINVAL);
	segs[19].last_sect = 7;
	segs[3].first_sect = 6;
	segs[3].last_sect = 5;
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), -EINVAL);
	segs[3].first_sect = 0;
	segs[3].last_sect = 7;
	s = ind_req(BLKIF_OP_READ, 20, DISK_SECT - 159); /* 160 sectors: one past the end */
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), -ERANGE);
	s = ind_req(BLKIF_OP_READ, 20, DISK_SECT - 160);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), 0);
	lim.logical_block = 4096;
	s = ind_req(BLKIF_OP_READ, 2, 4);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), -EINVAL);
	lim.logical_block = 512;
	lim.ro = 1;
	s = ind_req(BLKIF_OP_WRITE, 2, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), -EROFS); /* refused before mapping anything */
	s = ind_req(BLKIF_OP_READ, 2, 0);
	CU_ASSERT_EQUAL(parse(&s, &lim, &p), 0);
	CU_ASSERT_EQUAL(bb_req_parse_segs(segs, &lim, &p, &why), 0);
}

static void test_op_names(void)
{
	char buf[16];

	CU_ASSERT_STRING_EQUAL(bb_op_name(BLKIF_OP_READ, buf, sizeof(buf)), "read");
	CU_ASSERT_STRING_EQUAL(bb_op_name(BLKIF_OP_DISCARD, buf, sizeof(buf)), "discard");
	CU_ASSERT_STRING_EQUAL(bb_op_name(99, buf, sizeof(buf)), "op 99");
	CU_ASSERT_EQUAL(bb_req_status(0), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(bb_req_status(-EIO), BLKIF_RSP_ERROR);
}

static CU_TestInfo tests[] = {
	{ "read_ok", test_read_ok },
	{ "write_11_segments_to_the_last_sector", test_write_11_segments_to_the_last_sector },
	{ "opcodes", test_opcodes },
	{ "nr_segments", test_nr_segments },
	{ "segment_bounds", test_segment_bounds },
	{ "range", test_range },
	{ "alignment_4k", test_alignment_4k },
	{ "read_only", test_read_only },
	{ "discard", test_discard },
	{ "copy_whole_slot", test_copy_whole_slot },
	{ "indirect", test_indirect },
	{ "op_names", test_op_names },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("req", NULL, NULL, tests)
