/* test_blkfront_util.c - vdev numbering and buffer-to-segment translation of libblkfront: what
 * decides which xenstore directory a device is and which guest pages the backend may touch. */
#include "hv/blkfront.h"
#include "hv/blkfront_internal.h"
#include "tests/harness.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static void test_vdev_xvd(void)
{
	uint32_t d = 0;

	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvda", &d), 0);
	CU_ASSERT_EQUAL(d, 51712); /* 202 << 8 */
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdb", &d), 0);
	CU_ASSERT_EQUAL(d, 51728);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdp", &d), 0);
	CU_ASSERT_EQUAL(d, (202u << 8) | (15u << 4));
	/* Disk 16 and up use the extended scheme. */
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdq", &d), 0);
	CU_ASSERT_EQUAL(d, (1u << 28) | (16u << 8));
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdz", &d), 0);
	CU_ASSERT_EQUAL(d, (1u << 28) | (25u << 8));
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdaa", &d), 0);
	CU_ASSERT_EQUAL(d, (1u << 28) | (26u << 8));
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdba", &d), 0);
	CU_ASSERT_EQUAL(d, (1u << 28) | (52u << 8));
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("51744", &d), 0);
	CU_ASSERT_EQUAL(d, 51744);
}

static void test_vdev_bad(void)
{
	uint32_t d = 7;

	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid(NULL, &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvd", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvda1", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdA", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("sda", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("0", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("12x", &d), -EINVAL);
	CU_ASSERT_EQUAL(blkfront_vdev_to_devid("xvdzzzzzzz", &d), -EINVAL);
	CU_ASSERT_EQUAL(d, 7);
}

#define NPAGES 8
static uint8_t *mem;

static int suite_init(void)
{
	mem = aligned_alloc(4096, NPAGES * 4096);
	return mem ? 0 : -1;
}

static int suite_clean(void)
{
	free(mem);
	return 0;
}

static int to_segs(uint32_t ss, const struct iovec *iov, int n, struct bf_seg *segs,
		   unsigned int max, unsigned int *nr, uint64_t *sects)
{
	return bf_iov_to_segs(mem, NPAGES * 4096, ss, iov, n, segs, max, nr, sects);
}

static void test_segs_pages(void)
{
	struct bf_seg segs[16];
	unsigned int nr = 0;
	uint64_t sects = 0;
	struct iovec one = { mem + 4096, 4096 };
	struct iovec two = { mem + 2 * 4096, 8192 };

	CU_ASSERT_EQUAL(to_segs(512, &one, 1, segs, 16, &nr, &sects), 0);
	CU_ASSERT_EQUAL(nr, 1);
	CU_ASSERT_EQUAL(sects, 8);
	CU_ASSERT_EQUAL(segs[0].frame, 1);
	CU_ASSERT_EQUAL(segs[0].first_sect, 0);
	CU_ASSERT_EQUAL(segs[0].last_sect, 7);

	CU_ASSERT_EQUAL(to_segs(4096, &two, 1, segs, 16, &nr, &sects), 0);
	CU_ASSERT_EQUAL(nr, 2);
	CU_ASSERT_EQUAL(sects, 16);
	CU_ASSERT_EQUAL(segs[0].frame, 2);
	CU_ASSERT_EQUAL(segs[1].frame, 3);
	CU_ASSERT_EQUAL(segs[1].last_sect, 7);
}

static void test_segs_unaligned_pages(void)
{
	struct bf_seg segs[16];
	unsigned int nr = 0;
	uint64_t sects = 0;
	/* 4 KiB starting 512 bytes into frame 0: sectors 1..7 of frame 0, 0..0 of frame 1. */
	struct iovec iov = { mem + 512, 4096 };

	CU_ASSERT_EQUAL(to_segs(512, &iov, 1, segs, 16, &nr, &sects), 0);
	CU_ASSERT_EQUAL(nr, 2);
	CU_ASSERT_EQUAL(sects, 8);
	CU_ASSERT_EQUAL(segs[0].frame, 0);
	CU_ASSERT_EQUAL(segs[0].first_sect, 1);
	CU_ASSERT_EQUAL(segs[0].last_sect, 7);
	CU_ASSERT_EQUAL(segs[1].frame, 1);
	CU_ASSERT_EQUAL(segs[1].first_sect, 0);
	CU_ASSERT_EQUAL(segs[1].last_sect, 0);
}

static void test_segs_merge_and_skip(void)
{
	struct bf_seg segs[16];
	unsigned int nr = 0;
	uint64_t sects = 0;
	struct iovec iov[4] = {
		{ mem + 5 * 4096, 512 },
		{ mem + 5 * 4096 + 512, 1024 }, /* continues in the same page: merged */
		{ mem, 0 },                     /* empty: skipped */
		{ mem + 5 * 4096 + 3072, 512 }, /* a gap in the same page: a new segment */
	};

	CU_ASSERT_EQUAL(to_segs(512, iov, 4, segs, 16, &nr, &sects), 0);
	CU_ASSERT_EQUAL(nr, 2);
	CU_ASSERT_EQUAL(sects, 4);
	CU_ASSERT_EQUAL(segs[0].frame, 5);
	CU_ASSERT_EQUAL(segs[0].first_sect, 0);
	CU_ASSERT_EQUAL(segs[0].last_sect, 2);
	CU_ASSERT_EQUAL(segs[1].first_sect, 6);
	CU_ASSERT_EQUAL(segs[1].last_sect, 6);
}

static void test_segs_errors(void)
{
	struct bf_seg segs[16];
	unsigned int nr = 99;
	uint64_t sects = 99;
	struct iovec mis = { mem + 256, 512 };
	struct iovec mis4k = { mem + 512, 4096 };
	struct iovec shortlen = { mem, 100 };
	struct iovec below = { mem - 4096, 4096 };
	struct iovec past = { mem + (NPAGES - 1) * 4096, 8192 };
	struct iovec wrap = { (void *)(UINTPTR_MAX & ~(uintptr_t)4095), 8192 };
	struct iovec big = { mem, NPAGES * 4096 };
	struct iovec empty = { mem, 0 };

	CU_ASSERT_EQUAL(to_segs(512, &mis, 1, segs, 16, &nr, &sects), -EINVAL);
	CU_ASSERT_EQUAL(to_segs(4096, &mis4k, 1, segs, 16, &nr, &sects), -EINVAL);
	CU_ASSERT_EQUAL(to_segs(512, &shortlen, 1, segs, 16, &nr, &sects), -EINVAL);
	CU_ASSERT_EQUAL(to_segs(512, &below, 1, segs, 16, &nr, &sects), -EFAULT);
	CU_ASSERT_EQUAL(to_segs(512, &past, 1, segs, 16, &nr, &sects), -EFAULT);
	CU_ASSERT_EQUAL(to_segs(512, &wrap, 1, segs, 16, &nr, &sects), -EFAULT);
	CU_ASSERT_EQUAL(to_segs(512, &big, 1, segs, NPAGES - 1, &nr, &sects), -E2BIG);
	CU_ASSERT_EQUAL(to_segs(512, &empty, 1, segs, 16, &nr, &sects), -EINVAL);
	CU_ASSERT_EQUAL(to_segs(512, NULL, 0, segs, 16, &nr, &sects), -EINVAL);
	CU_ASSERT_EQUAL(to_segs(768, &big, 1, segs, 16, &nr, &sects), -EINVAL);
	CU_ASSERT_EQUAL(nr, 99); /* outputs untouched on failure */
	CU_ASSERT_EQUAL(sects, 99);
	/* The whole memory is fine with enough segments. */
	CU_ASSERT_EQUAL(to_segs(512, &big, 1, segs, NPAGES, &nr, &sects), 0);
	CU_ASSERT_EQUAL(nr, NPAGES);
}

static void test_parts_and_order(void)
{
	CU_ASSERT_EQUAL(bf_parts_for_segs(0, 11), 1);
	CU_ASSERT_EQUAL(bf_parts_for_segs(1, 11), 1);
	CU_ASSERT_EQUAL(bf_parts_for_segs(11, 11), 1);
	CU_ASSERT_EQUAL(bf_parts_for_segs(12, 11), 2);
	CU_ASSERT_EQUAL(bf_parts_for_segs(BLKFRONT_MAX_SEGS, 11), 24);
	CU_ASSERT_EQUAL(bf_parts_for_segs(BLKFRONT_MAX_SEGS, 256), 1);
	CU_ASSERT_EQUAL(bf_parts_for_segs(BLKFRONT_MAX_SEGS, 32), 8);
	CU_ASSERT_EQUAL(bf_parts_for_segs(33, 32), 2);
	CU_ASSERT_EQUAL(bf_pages_to_order(0), 0);
	CU_ASSERT_EQUAL(bf_pages_to_order(1), 0);
	CU_ASSERT_EQUAL(bf_pages_to_order(2), 1);
	CU_ASSERT_EQUAL(bf_pages_to_order(16), 4);
	CU_ASSERT_EQUAL(bf_pages_to_order(17), 4);
}

static CU_TestInfo tests[] = {
	{ "vdev_xvd", test_vdev_xvd },
	{ "vdev_bad", test_vdev_bad },
	{ "segs_pages", test_segs_pages },
	{ "segs_unaligned_pages", test_segs_unaligned_pages },
	{ "segs_merge_and_skip", test_segs_merge_and_skip },
	{ "segs_errors", test_segs_errors },
	{ "parts_and_order", test_parts_and_order },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("blkfront_util", suite_init, suite_clean, tests)
