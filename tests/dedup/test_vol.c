/*
 * test_vol.c - volumes, snapshots and clones: snapshot isolation, clone isolation in both
 * directions, delete everything (refcounts back to zero, space back after gc), online resize,
 * shares, and the name and state checks.
 */
#include "tests/dedup/dedup_test.h"

#include <dirent.h>
#include <errno.h>

/* 3 map levels: snapshot copies happen at every level */
#define BIG_BLK (62ull * 251 * 3)

struct env {
	struct dedup_store *s;
	struct dedup_ctx *c;
};

static int env_open(struct env *e, const char *name)
{
	e->s = t_store(name, NULL);
	if (!e->s)
		return -1;
	return dedup_ctx_open(e->s, &e->c);
}

static void env_close(struct env *e)
{
	dedup_ctx_close(e->c);
	dedup_store_close(e->s);
}

/* Distinct blocks for distinct i (64553 is coprime with BIG_BLK), scattered over the tree. */
static uint64_t spread(uint64_t i)
{
	return (i * 64553 + 11) % BIG_BLK;
}

static void test_snapshot_then_overwrite(void)
{
	struct env e;
	struct dedup_vol *v, *snap;
	struct dedup_vol_info vi;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "vol-snap"), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "v", BIG_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "v", &v), 0);
	for (uint64_t i = 0; i < 200; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, spread(i), 100 + i), 0);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "v", "s1"), 0);
	CU_ASSERT_EQUAL(dedup_vol_get(e.s, "s1", &vi), 0);
	CU_ASSERT_TRUE(vi.readonly);
	CU_ASSERT_STRING_EQUAL(vi.origin, "v");
	CU_ASSERT_EQUAL(vi.mapped_bytes, 200 * TB);
	for (uint64_t i = 0; i < 200; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, spread(i), i % 3 ? 5000 + i : 0), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "s1", &snap), 0);
	CU_ASSERT_TRUE(dedup_vol_readonly(snap));
	for (uint64_t i = 0; i < 200; i++) {
		CU_ASSERT_TRUE(t_reads(e.c, snap, spread(i), 100 + i));
		CU_ASSERT_TRUE(t_reads(e.c, v, spread(i), i % 3 ? 5000 + i : 0));
	}
	/* a second snapshot shares the first one's untouched subtrees */
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "v", "s2"), 0);
	CU_ASSERT_EQUAL(t_write(e.c, v, spread(0), 77), 0);
	CU_ASSERT_TRUE(t_reads(e.c, snap, spread(0), 100));
	CU_ASSERT_TRUE(t_fsck_clean(e.s));
	dedup_vol_close(snap);
	dedup_vol_close(v);
	env_close(&e);
}

static void test_clone_isolation(void)
{
	struct env e;
	struct dedup_vol *v, *c1, *c2;
	struct dedup_stats st;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "vol-clone"), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "gold", BIG_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "gold", &v), 0);
	for (uint64_t i = 0; i < 300; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, spread(i), 1 + i), 0);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "gold", "base"), 0);
	CU_ASSERT_EQUAL(dedup_vol_clone(e.s, "base", "c1"), 0);
	CU_ASSERT_EQUAL(dedup_vol_clone(e.s, "c1", "c2"), 0); /* a clone of a live clone */
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "c1", &c1), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "c2", &c2), 0);
	CU_ASSERT_FALSE(dedup_vol_readonly(c1));
	/* a clone shares every block: nothing new stored */
	CU_ASSERT_EQUAL(dedup_store_stats(e.s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 300);
	CU_ASSERT_EQUAL(st.logical_bytes, 4 * 300 * TB);
	for (uint64_t i = 0; i < 300; i += 2) {
		CU_ASSERT_EQUAL(t_write(e.c, c1, spread(i), 9000 + i), 0);
		CU_ASSERT_EQUAL(t_write(e.c, v, spread(i + 1), 0), 0);
	}
	CU_ASSERT_EQUAL(t_write(e.c, c2, spread(1), 31337), 0);
	for (uint64_t i = 0; i < 300; i++) {
		uint64_t orig = 1 + i;

		CU_ASSERT_TRUE(t_reads(e.c, v, spread(i), i % 2 ? 0 : orig));
		CU_ASSERT_TRUE(t_reads(e.c, c1, spread(i), i % 2 ? orig : 9000 + i));
		CU_ASSERT_TRUE(t_reads(e.c, c2, spread(i), i == 1 ? 31337 : orig));
	}
	CU_ASSERT_TRUE(t_fsck_clean(e.s));
	dedup_vol_close(c2);
	dedup_vol_close(c1);
	dedup_vol_close(v);
	env_close(&e);
}

static int dir_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static int gc_calls;
static struct dedup_progress gc_last;

static int gc_progress(const struct dedup_progress *p, void *arg)
{
	(void)arg;
	CU_ASSERT_TRUE(p->done <= p->total);
	CU_ASSERT_TRUE(p->done >= gc_last.done);
	gc_last = *p;
	gc_calls++;
	return 0;
}

static void test_delete_everything(void)
{
	struct env e;
	struct dedup_vol *v;
	struct dedup_stats st;
	struct dedup_vol_info *list;
	unsigned n;
	char path[PATH_MAX];

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "vol-delete"), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "a", BIG_BLK * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "b", 64 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "a", &v), 0);
	for (uint64_t i = 0; i < 600; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, spread(i), 1 + i % 400), 0);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "a", "snap"), 0);
	CU_ASSERT_EQUAL(dedup_vol_clone(e.s, "snap", "clone"), 0);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, spread(i), 7000 + i), 0);
	dedup_vol_close(v);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "b", &v), 0);
	for (uint64_t i = 0; i < 64; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, i, 1 + i), 0);
	dedup_vol_close(v);
	CU_ASSERT_EQUAL(dedup_store_stats(e.s, &st), 0);
	CU_ASSERT_EQUAL(st.volumes, 3);
	CU_ASSERT_EQUAL(st.snapshots, 1);
	CU_ASSERT_TRUE(st.containers > 1);

	CU_ASSERT_EQUAL(dedup_vol_list(e.s, &list, &n), 0);
	CU_ASSERT_EQUAL(n, 4);
	for (unsigned i = 0; i < n; i++)
		CU_ASSERT_EQUAL(dedup_vol_delete(e.s, list[i].name), 0);
	free(list);
	CU_ASSERT_EQUAL(dedup_vol_delete(e.s, "a"), -ENOENT);
	CU_ASSERT_EQUAL(dedup_store_reclaim(e.s), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(e.s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 0); /* every refcount is zero */
	CU_ASSERT_EQUAL(st.logical_bytes, 0);
	CU_ASSERT_EQUAL(st.map_bytes, 0);
	CU_ASSERT_EQUAL(st.reclaim_pending, 0);
	CU_ASSERT_TRUE(t_fsck_clean(e.s));

	gc_calls = 0;
	memset(&gc_last, 0, sizeof(gc_last));
	CU_ASSERT_EQUAL(dedup_store_gc(e.s, gc_progress, NULL), 0);
	CU_ASSERT_TRUE(gc_calls >= 2);
	CU_ASSERT_EQUAL(gc_last.done, gc_last.total);
	CU_ASSERT_TRUE(gc_last.freed_bytes > 0);
	CU_ASSERT_EQUAL(dedup_store_stats(e.s, &st), 0);
	CU_ASSERT_EQUAL(st.containers, 0);
	CU_ASSERT_EQUAL(st.container_bytes, 0);
	CU_ASSERT_EQUAL(st.index_bytes, 0); /* the zombies went with their containers */
	CU_ASSERT_EQUAL(dir_entries(t_dir("vol-delete/containers", path, sizeof(path))), 0);
	CU_ASSERT_TRUE(t_fsck_clean(e.s));
	env_close(&e);
}

static void test_resize(void)
{
	struct env e;
	struct dedup_vol *v;
	struct dedup_vol_info vi;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "vol-resize"), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "v", 100 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "v", &v), 0);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(t_write(e.c, v, i, 1 + i), 0);
	CU_ASSERT_EQUAL(t_write(e.c, v, 100, 1), -EINVAL);
	/* grow from one level to three: the old root moves down */
	CU_ASSERT_EQUAL(dedup_vol_resize(e.s, "v", BIG_BLK * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_size(v), BIG_BLK * TB);
	CU_ASSERT_EQUAL(t_write(e.c, v, BIG_BLK - 1, 555), 0);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_TRUE(t_reads(e.c, v, i, 1 + i));
	CU_ASSERT_TRUE(t_reads(e.c, v, BIG_BLK - 1, 555));
	/* shrink: blocks past the end go, and stay gone when it grows back */
	CU_ASSERT_EQUAL(dedup_vol_resize(e.s, "v", 50 * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_get(e.s, "v", &vi), 0);
	CU_ASSERT_EQUAL(vi.mapped_bytes, 50 * TB);
	CU_ASSERT_EQUAL(t_write(e.c, v, 50, 1), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_resize(e.s, "v", 200 * TB), 0);
	CU_ASSERT_TRUE(t_reads(e.c, v, 49, 50));
	CU_ASSERT_TRUE(t_reads(e.c, v, 50, 0));
	CU_ASSERT_TRUE(t_reads(e.c, v, 99, 0));
	CU_ASSERT_EQUAL(dedup_vol_resize(e.s, "v", 1000), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_resize(e.s, "nope", TB), -ENOENT);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "v", "s"), 0);
	CU_ASSERT_EQUAL(dedup_vol_resize(e.s, "s", TB), -EROFS);
	CU_ASSERT_TRUE(t_fsck_clean(e.s));
	dedup_vol_close(v);
	env_close(&e);
}

static void test_share(void)
{
	struct env e;
	struct dedup_vol *a, *b;
	struct dedup_stats st;
	uint64_t sa, sb, ss;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "vol-share"), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "a", 1024 * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "b", 1024 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "a", &a), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "b", &b), 0);
	for (uint64_t i = 0; i < 100; i++) {
		CU_ASSERT_EQUAL(t_write(e.c, a, i, 1 + i), 0);       /* 100 shared */
		CU_ASSERT_EQUAL(t_write(e.c, b, 500 + i, 1 + i), 0);
		CU_ASSERT_EQUAL(t_write(e.c, b, i, 1000 + i), 0);    /* 100 own */
	}
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "a", "sa"), 0);
	CU_ASSERT_EQUAL(dedup_vol_share(e.s, "a", &sa), 0);
	CU_ASSERT_EQUAL(dedup_vol_share(e.s, "b", &sb), 0);
	CU_ASSERT_EQUAL(dedup_vol_share(e.s, "sa", &ss), 0);
	/* a's blocks are shared with b (content) and with its snapshot (map) */
	CU_ASSERT_EQUAL(sa, 100 * TB / 4);
	CU_ASSERT_EQUAL(ss, 100 * TB / 4);
	CU_ASSERT_EQUAL(sb, 100 * TB + 100 * TB / 2);
	CU_ASSERT_EQUAL(dedup_store_stats(e.s, &st), 0);
	CU_ASSERT_EQUAL(sa + sb + ss, st.stored_bytes);
	dedup_vol_close(a);
	dedup_vol_close(b);
	env_close(&e);
}

static void test_names_and_states(void)
{
	struct env e;
	struct dedup_vol *v;
	struct dedup_vol_info vi;
	char longname[80];

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CU_ASSERT_EQUAL_FATAL(env_open(&e, "vol-names"), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "", TB), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, ".hidden", TB), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "a/b", TB), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, longname, TB), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "v", 0), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "v", 512), -EINVAL);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "v-1.img_", TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(e.s, "v-1.img_", TB), -EEXIST);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "missing", "x"), -ENOENT);
	CU_ASSERT_EQUAL(dedup_vol_snapshot(e.s, "v-1.img_", "v-1.img_"), -EEXIST);
	CU_ASSERT_EQUAL(dedup_vol_clone(e.s, "v-1.img_", "c"), 0);
	CU_ASSERT_EQUAL(dedup_vol_get(e.s, "c", &vi), 0);
	CU_ASSERT_FALSE(vi.readonly);
	CU_ASSERT_EQUAL(dedup_vol_get(e.s, "missing", &vi), -ENOENT);
	CU_ASSERT_EQUAL(dedup_vol_open(e.s, "missing", &v), -ENOENT);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(e.s, "c", &v), 0);
	CU_ASSERT_EQUAL(dedup_vol_delete(e.s, "c"), -EBUSY);
	dedup_vol_close(v);
	CU_ASSERT_EQUAL(dedup_vol_delete(e.s, "c"), 0);
	env_close(&e);
}

static CU_TestInfo tests[] = {
	{ "snapshot_then_overwrite", test_snapshot_then_overwrite },
	{ "clone_isolation", test_clone_isolation },
	{ "delete_everything", test_delete_everything },
	{ "resize", test_resize },
	{ "share", test_share },
	{ "names_and_states", test_names_and_states },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_vol", NULL, NULL, tests)
