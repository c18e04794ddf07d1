/*
 * req.c - taking one request off the shared ring and validating it.
 *
 * The frontend can rewrite a ring slot at any moment, so a slot is read exactly once, word by
 * word through volatile loads, into a private copy; every decision afterwards is made on the
 * copy. The copy covers the whole slot, padding included: Xen's public blkif_request has no
 * union, so a DISCARD's nr_sectors lies partly in what is padding of seg[0] for a READ, and a
 * member-wise struct copy (RING_COPY_REQUEST on blkif_request_t) would not be guaranteed to
 * carry those bytes.
 */
#define LOG_TAG "blkback"
#include "blkback/blkback_internal.h"

#include <errno.h>
#include <stdio.h>

_Static_assert(sizeof(union bb_req_slot) == sizeof(struct blkif_request),
	       "a slot copy is exactly one ring entry");
_Static_assert(sizeof(struct blkif_request) % sizeof(uint64_t) == 0, "slot copied in words");

void bb_req_copy(const blkif_back_ring_t *br, RING_IDX idx, union bb_req_slot *out)
{
	const volatile uint64_t *src = (const volatile uint64_t *)RING_GET_REQUEST(br, idx);

	for (size_t i = 0; i < ARRAY_SIZE(out->words); i++)
		out->words[i] = src[i];
}

const char *bb_op_name(uint8_t op, char *buf, size_t len)
{
	switch (op) {
	case BLKIF_OP_READ:
		return "read";
	case BLKIF_OP_WRITE:
		return "write";
	case BLKIF_OP_WRITE_BARRIER:
		return "barrier";
	case BLKIF_OP_FLUSH_DISKCACHE:
		return "flush";
	case BLKIF_OP_DISCARD:
		return "discard";
	case BLKIF_OP_INDIRECT:
		return "indirect";
	default:
		snprintf(buf, len, "op %u", op);
		return buf;
	}
}

int16_t bb_req_status(int rc)
{
	if (rc == 0)
		return BLKIF_RSP_OKAY;
	if (rc == -EOPNOTSUPP)
		return BLKIF_RSP_EOPNOTSUPP;
	return BLKIF_RSP_ERROR;
}

/* Is [sector, sector + nr) inside a disk of @size sectors? Written so nothing can overflow. */
static int range_ok(uint64_t sector, uint64_t nr, uint64_t size)
{
	return sector <= size && nr <= size - sector;
}

/*
 * Check @n segments (a private copy) and fill out->seg[], out->nr_segs and out->nr_sect. Each
 * segment lies inside one 4 KiB frame; consecutive segments are consecutive on the disk.
 */
static int check_segs(const struct blkif_request_segment *segs, unsigned n,
		      const struct bb_limits *lim, struct bb_parsed *out, const char **why)
{
	uint32_t lb_sect = lim->logical_block > 512 ? lim->logical_block >> BB_SECT_SHIFT : 1;
	uint64_t nr_sect = 0;

	for (unsigned i = 0; i < n; i++) {
		uint8_t first = segs[i].first_sect, last = segs[i].last_sect;
		uint32_t nsec;

		if (last >= BB_SECT_PER_PAGE) {
			*why = "last_sect beyond the page";
			return -EINVAL;
		}
		if (first > last) {
			*why = "first_sect after last_sect";
			return -EINVAL;
		}
		nsec = (uint32_t)(last - first) + 1;
		if ((first | nsec) & (lb_sect - 1)) {
			*why = "segment not aligned to sector-size";
			return -EINVAL;
		}
		out->seg[i].gref = segs[i].gref;
		out->seg[i].off_bytes = (uint16_t)(first << BB_SECT_SHIFT);
		out->seg[i].len_bytes = (uint16_t)(nsec << BB_SECT_SHIFT);
		nr_sect += nsec;
	}
	out->nr_segs = n;
	out->nr_sect = nr_sect;
	return 0;
}

/* The checks that need the whole request: alignment, writability, range. */
static int check_extent(uint8_t op, const struct bb_limits *lim, struct bb_parsed *out,
			const char **why)
{
	uint32_t lb_sect = lim->logical_block > 512 ? lim->logical_block >> BB_SECT_SHIFT : 1;

	if (out->nr_segs == 0)
		return 0; /* a pure flush or barrier: sector_number means nothing */
	if (out->sector & (lb_sect - 1)) {
		*why = "sector not aligned to sector-size";
		return -EINVAL;
	}
	if (lim->ro && op != BLKIF_OP_READ) {
		*why = "write to a read-only disk";
		return -EROFS;
	}
	if (!range_ok(out->sector, out->nr_sect, lim->size_sect)) {
		*why = "sectors past the end of the disk";
		return -ERANGE;
	}
	return 0;
}

/* READ, WRITE, FLUSH_DISKCACHE and WRITE_BARRIER: the segment list in the slot. */
static int parse_rw(const struct blkif_request *rq, const struct bb_limits *lim,
		    struct bb_parsed *out, const char **why)
{
	unsigned n = rq->nr_segments;
	int carries_data = rq->operation == BLKIF_OP_READ || rq->operation == BLKIF_OP_WRITE;
	int rc;

	/* A flush or barrier may come without data; a read or write must carry some. */
	if (n == 0 && carries_data) {
		*why = "no segments";
		return -EINVAL;
	}
	if (n > BB_DIRECT_SEGS) {
		*why = "more than 11 segments";
		return -EINVAL;
	}
	out->sector = rq->sector_number;
	rc = check_segs(rq->seg, n, lim, out, why);
	return rc ?: check_extent(rq->operation, lim, out, why);
}

/* INDIRECT: the header only; the segments come from the indirect pages (bb_req_parse_segs). */
static int parse_indirect(const struct blkif_request_indirect *ind, const struct bb_limits *lim,
			  struct bb_parsed *out, const char **why)
{
	unsigned n = ind->nr_segments;

	/* Answered with the operation it carries, as Linux blkback does. */
	out->op = ind->indirect_op;
	out->indirect = 1;
	out->sector = ind->sector_number;
	if (ind->indirect_op != BLKIF_OP_READ && ind->indirect_op != BLKIF_OP_WRITE) {
		*why = "indirect operation is not read or write";
		return -EINVAL;
	}
	if (n == 0) {
		*why = "no segments";
		return -EINVAL;
	}
	if (n > lim->max_indirect_segs) {
		*why = "more indirect segments than feature-max-indirect-segments";
		return -EINVAL;
	}
	out->nr_segs = n;
	out->nr_indirect = (n + BB_SEGS_PER_INDIRECT_PAGE - 1) / BB_SEGS_PER_INDIRECT_PAGE;
	for (unsigned i = 0; i < out->nr_indirect; i++)
		out->indirect_grefs[i] = ind->indirect_grefs[i];
	/* Refuse what needs no segment to refuse, before any page is mapped. */
	if (lim->ro && ind->indirect_op == BLKIF_OP_WRITE) {
		*why = "write to a read-only disk";
		return -EROFS;
	}
	return 0;
}

int bb_req_parse_segs(const struct blkif_request_segment *segs, const struct bb_limits *lim,
		      struct bb_parsed *out, const char **why)
{
	int rc = check_segs(segs, out->nr_segs, lim, out, why);

	return rc ?: check_extent(out->op, lim, out, why);
}

static int parse_discard(const struct blkif_request_discard *d, const struct bb_limits *lim,
			 struct bb_parsed *out, const char **why)
{
	uint32_t lb_sect = lim->logical_block > 512 ? lim->logical_block >> BB_SECT_SHIFT : 1;

	out->discard_flag = d->flag;
	out->sector = d->sector_number;
	out->nr_sect = d->nr_sectors;
	out->nr_segs = 0;
	if (lim->ro) {
		*why = "discard on a read-only disk";
		return -EROFS;
	}
	if ((d->sector_number | d->nr_sectors) & (lb_sect - 1)) {
		*why = "discard not aligned to sector-size";
		return -EINVAL;
	}
	if (!range_ok(d->sector_number, d->nr_sectors, lim->size_sect)) {
		*why = "discard past the end of the disk";
		return -ERANGE;
	}
	return 0;
}

int bb_req_parse(const union bb_req_slot *slot, const struct bb_limits *lim,
		 struct bb_parsed *out, const char **why)
{
	const struct blkif_request *rq = &slot->rw;

	/* id is at offset 8 in every request layout: even an unknown opcode can be answered. */
	out->id = rq->id;
	out->op = rq->operation;
	out->discard_flag = 0;
	out->indirect = 0;
	out->nr_indirect = 0;
	out->sector = 0;
	out->nr_sect = 0;
	out->nr_segs = 0;
	*why = "";

	switch (rq->operation) {
	case BLKIF_OP_READ:
	case BLKIF_OP_WRITE:
	case BLKIF_OP_FLUSH_DISKCACHE:
		return parse_rw(rq, lim, out, why);
	case BLKIF_OP_WRITE_BARRIER:
		if (!lim->barrier) {
			*why = "barrier not offered";
			return -EOPNOTSUPP;
		}
		return parse_rw(rq, lim, out, why);
	case BLKIF_OP_DISCARD:
		if (!lim->discard) {
			*why = "discard not offered";
			return -EOPNOTSUPP;
		}
		return parse_discard(&slot->discard, lim, out, why);
	case BLKIF_OP_INDIRECT:
		if (!lim->max_indirect_segs) {
			/* No feature-max-indirect-segments: a frontend may not send it. */
			*why = "indirect descriptors not offered";
			return -EOPNOTSUPP;
		}
		return parse_indirect(&slot->indirect, lim, out, why);
	default:
		*why = "unknown operation";
		return -EOPNOTSUPP;
	}
}
