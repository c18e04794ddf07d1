/*
 * blkfront_internal.h - libblkfront pieces shared between its source files and its unit tests:
 * the translation of caller buffers into blkif segments, which needs no hypervisor.
 */
#ifndef SLUICE_HV_BLKFRONT_INTERNAL_H
#define SLUICE_HV_BLKFRONT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/** One page of a request: a guest frame and the 512-byte sectors used in it (inclusive). */
struct bf_seg {
	uint32_t frame;     /**< page index in guest memory */
	uint8_t first_sect; /**< 0..7 */
	uint8_t last_sect;  /**< first_sect..7 */
};

/**
 * Translate @iov into page segments of the guest memory [@mem, @mem + @mem_len).
 * Each iov base and length must be a multiple of @sector_size (a power of 2, 512..4096);
 * zero-length elements are skipped; a page piece that continues the previous segment inside the
 * same frame is merged into it (as the block layer merges bio_vecs).
 * On success returns 0 and stores the segment count in *nr_segs and the total in 512-byte
 * sectors in *nr_sectors. Errors: -EINVAL nothing to transfer or misaligned; -EFAULT a buffer
 * (partly) outside guest memory; -E2BIG more than @max_segs segments.
 */
int bf_iov_to_segs(const void *mem, size_t mem_len, uint32_t sector_size, const struct iovec *iov,
		   int iovcnt, struct bf_seg *segs, unsigned int max_segs, unsigned int *nr_segs,
		   uint64_t *nr_sectors);

/** Ring requests needed for @nr_segs segments at @per_part per request, at least 1. */
unsigned int bf_parts_for_segs(unsigned int nr_segs, unsigned int per_part);

/** The order (log2 of pages) of a max-ring-pages value, rounding down; 0 for 0 or 1. */
unsigned int bf_pages_to_order(uint64_t pages);

#endif
