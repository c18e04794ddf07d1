/*
 * test_store.c - opening a store: create, reopen, refusals, the single-opener lock, cleanup of
 * container files no commit refers to; a full LMDB map reports -ENOSPC and loses nothing.
 */
#include "tests/dedup/dedup_test.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static void test_open_refusals(void)
{
	struct dedup_opts o = { .create = 1, .container_bytes = 1000 };
	struct dedup_store *s, *s2;
	char path[PATH_MAX];

	t_dir("store-open", path, sizeof(path));
	CU_ASSERT_EQUAL(dedup_store_open(path, NULL, &s), -ENOENT);
	CU_ASSERT_EQUAL(dedup_store_open(path, &o, &s), -EINVAL);
	o.container_bytes = 0;
	o.map_bytes = 2u << 20;
	o.map_max_bytes = 1u << 20;
	CU_ASSERT_EQUAL(dedup_store_open(path, &o, &s), -EINVAL);
	o.map_bytes = 0;
	o.map_max_bytes = 0;
	o.gc_dead_pct = 101;
	CU_ASSERT_EQUAL(dedup_store_open(path, &o, &s), -EINVAL);
	s = t_store("store-open", NULL);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_store_open(path, NULL, &s2), -EBUSY);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", TB), 0);
	dedup_store_close(s);
	/* reopening ignores a different container size: it is fixed at creation */
	o = (struct dedup_opts){ .container_bytes = 8u << 20 };
	CU_ASSERT_EQUAL_FATAL(dedup_store_open(path, &o, &s), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", TB), -EEXIST);
	dedup_store_close(s);
}

static void test_open_removes_stray_containers(void)
{
	struct dedup_store *s = t_store("store-stray", NULL);
	struct dedup_ctx *c;
	struct dedup_vol *v;
	char stray[PATH_MAX];
	int fd;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 16 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	CU_ASSERT_EQUAL(t_write(c, v, 0, 1), 0);
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
	/* as left by a crash between creating a container and the first commit into it */
	snprintf(stray, sizeof(stray), "%s/store-stray/containers/0000000000000002.ctr",
		 harness_tmpdir());
	fd = open(stray, O_CREAT | O_WRONLY, 0600);
	CU_ASSERT_TRUE(fd >= 0);
	close(fd);
	s = t_reopen("store-stray", NULL);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(access(stray, F_OK), -1);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	CU_ASSERT_TRUE(t_reads(c, v, 0, 1));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

/*
 * A tiny map (grows 256 KiB -> 1 MiB, then stops): unique writes go on until the index no
 * longer fits, which must surface as -ENOSPC with every acknowledged block intact, then and
 * after reopening with room to spare.
 */
static void test_map_full_is_enospc(void)
{
	struct dedup_opts o = { .map_bytes = 256u << 10, .map_max_bytes = 1u << 20 };
	struct dedup_store *s = t_store("store-full", &o);
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	uint64_t acked = 0;
	int rc = 0;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 1u << 30), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	while (acked < 100000) {
		uint64_t buf[8 * TB / 8];

		for (unsigned i = 0; i < 8; i++)
			t_fill(buf + i * (TB / 8), 1 + acked + i);
		rc = dedup_vol_write(c, v, acked, 8, buf);
		if (rc)
			break;
		acked += 8;
	}
	CU_ASSERT_EQUAL(rc, -ENOSPC);
	CU_ASSERT_TRUE(acked > 1000);
	for (uint64_t b = 0; b < acked; b++)
		CU_ASSERT_TRUE(t_reads(c, v, b, 1 + b));
	CU_ASSERT_TRUE(t_reads(c, v, acked, 0)); /* the failed write left nothing */
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, acked);
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);

	o.map_max_bytes = 64u << 20;
	s = t_reopen("store-full", &o);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t b = 0; b < acked; b++)
		CU_ASSERT_TRUE(t_reads(c, v, b, 1 + b));
	CU_ASSERT_EQUAL(t_write(c, v, acked, 1 + acked), 0);
	CU_ASSERT_TRUE(t_reads(c, v, acked, 1 + acked));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
	{ "open_refusals", test_open_refusals },
	{ "open_removes_stray_containers", test_open_removes_stray_containers },
	{ "map_full_is_enospc", test_map_full_is_enospc },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_store", NULL, NULL, tests)
