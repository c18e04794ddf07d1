/*
 * blkfront_util.c - the parts of libblkfront that need no hypervisor and no xenstore: vdev
 * names and the translation of caller buffers into blkif segments, so the arithmetic every
 * request depends on is tested on its own.
 */
#include "hv/blkfront.h"
#include "hv/blkfront_internal.h"

#include "common/util.h"

#include <errno.h>
#include <string.h>

#include <xen/io/blkif.h>

#define BF_PAGE 4096u
#define BF_SECT 512u

/*
 * ---- vdev names ----
 */

int blkfront_vdev_to_devid(const char *vdev, uint32_t *devid)
{
	uint64_t disk = 0, v;
	const char *p;

	if (!vdev || !*vdev)
		return -EINVAL;
	if (vdev[0] >= '0' && vdev[0] <= '9') {
		if (util_parse_u64(vdev, 1, UINT32_MAX, &v))
			return -EINVAL;
		*devid = (uint32_t)v;
		return 0;
	}
	if (strncmp(vdev, "xvd", 3) || !vdev[3])
		return -EINVAL;
	/* Bijective base 26 as the toolstack counts: a..z = 0..25, aa = 26, ab = 27, ... */
	for (p = vdev + 3; *p; p++) {
		if (*p < 'a' || *p > 'z')
			return -EINVAL; /* partitions (xvda1) and anything else */
		disk = disk * 26 + (uint64_t)(*p - 'a' + 1);
		if (disk > (1u << 20))
			return -EINVAL;
	}
	disk--;
	if (disk < 16)
		*devid = (202u << 8) | (uint32_t)(disk << 4);
	else if (disk < (1u << 20))
		*devid = (1u << 28) | (uint32_t)(disk << 8);
	else
		return -EINVAL;
	return 0;
}

int bf_iov_to_segs(const void *mem, size_t mem_len, uint32_t sector_size, const struct iovec *iov,
		   int iovcnt, struct bf_seg *segs, unsigned int max_segs, unsigned int *nr_segs,
		   uint64_t *nr_sectors)
{
	uintptr_t base = (uintptr_t)mem;
	unsigned int n = 0;
	uint64_t sects = 0;

	if (iovcnt < 0 || (iovcnt > 0 && !iov) || sector_size < BF_SECT || sector_size > BF_PAGE ||
	    (sector_size & (sector_size - 1)))
		return -EINVAL;

	for (int i = 0; i < iovcnt; i++) {
		uintptr_t addr = (uintptr_t)iov[i].iov_base;
		size_t len = iov[i].iov_len;

		if (!len)
			continue;
		if ((addr | len) & (sector_size - 1))
			return -EINVAL;
		/* Written to avoid overflow: addr + len may wrap for a hostile iov. */
		if (addr < base || addr - base > mem_len || len > mem_len - (addr - base))
			return -EFAULT;

		while (len) {
			size_t off = addr - base;
			uint32_t frame = (uint32_t)(off / BF_PAGE);
			unsigned int in_page = (unsigned int)(off % BF_PAGE);
			size_t chunk = BF_PAGE - in_page;
			uint8_t first, last;

			if (chunk > len)
				chunk = len;
			first = (uint8_t)(in_page / BF_SECT);
			last = (uint8_t)((in_page + chunk) / BF_SECT - 1);

			if (n && segs[n - 1].frame == frame && segs[n - 1].last_sect + 1 == first) {
				segs[n - 1].last_sect = last;
			} else {
				if (n == max_segs)
					return -E2BIG;
				segs[n].frame = frame;
				segs[n].first_sect = first;
				segs[n].last_sect = last;
				n++;
			}
			sects += chunk / BF_SECT;
			addr += chunk;
			len -= chunk;
		}
	}
	if (!n)
		return -EINVAL;
	*nr_segs = n;
	*nr_sectors = sects;
	return 0;
}

unsigned int bf_parts_for_segs(unsigned int nr_segs, unsigned int per_part)
{
	if (!nr_segs || !per_part)
		return 1;
	return (nr_segs + per_part - 1) / per_part;
}

unsigned int bf_pages_to_order(uint64_t pages)
{
	unsigned int order = 0;

	while (pages > 1) {
		pages >>= 1;
		order++;
	}
	return order;
}
