/*
 * test_pool.c - the pool library: names, sizes, sparse data files, metadata that is parsed
 * strictly and replaced atomically, listing, and writers from several processes at once.
 */
#include "blkback/pool.h"
#include "tests/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A fresh pool directory per test: POOL itself does not exist yet. */
static const char *new_pool(const char *tag)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "%s/pool-%s", harness_tmpdir(), tag);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(text, f);
	fclose(f);
}

static void meta_file(const char *pool, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/vols/%s.json", pool, name);
}

static void test_name_ok(void)
{
	char long_name[POOL_VOL_NAME_MAX + 2];

	CU_ASSERT_EQUAL(pool_vol_name_ok("vol1"), 1);
	CU_ASSERT_EQUAL(pool_vol_name_ok("A-b_c.9"), 1);
	CU_ASSERT_EQUAL(pool_vol_name_ok("x"), 1);
	CU_ASSERT_EQUAL(pool_vol_name_ok("a..b"), 1);
	CU_ASSERT_EQUAL(pool_vol_name_ok(NULL), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok(""), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok(".hidden"), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok(".."), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok("../x"), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok("a/b"), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok("a b"), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok("vol\n"), 0);
	CU_ASSERT_EQUAL(pool_vol_name_ok("v\xc3\xa9"), 0);

	memset(long_name, 'a', sizeof(long_name));
	long_name[POOL_VOL_NAME_MAX] = '\0';
	CU_ASSERT_EQUAL(pool_vol_name_ok(long_name), 1);
	long_name[POOL_VOL_NAME_MAX] = 'a';
	long_name[POOL_VOL_NAME_MAX + 1] = '\0';
	CU_ASSERT_EQUAL(pool_vol_name_ok(long_name), 0);
}

static void test_paths(void)
{
	char buf[64];

	CU_ASSERT_EQUAL(pool_vol_path("/p", "v", buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/p/vols/v.img");
	CU_ASSERT_EQUAL(pool_ctl_path("/p", buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/p/blkbackd.sock");
	CU_ASSERT_EQUAL(pool_vol_path("/p", "../etc/passwd", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_path("/p", "vvvvvvvvvvvvvvv", buf, 16), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(pool_ctl_path("/a-long-pool-directory", buf, 16), -ENAMETOOLONG);
}

static void test_init(void)
{
	const char *pool = new_pool("init");
	char path[PATH_MAX];
	struct stat st;

	CU_ASSERT_EQUAL(pool_init(pool), 0);
	CU_ASSERT_EQUAL(pool_init(pool), 0); /* idempotent */
	snprintf(path, sizeof(path), "%s/vols", pool);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT(S_ISDIR(st.st_mode));

	/* Parents are made as with mkdir -p. */
	snprintf(path, sizeof(path), "%s/deep/er/pool", harness_tmpdir());
	CU_ASSERT_EQUAL(pool_init(path), 0);
	snprintf(path, sizeof(path), "%s/deep/er/pool/vols", harness_tmpdir());
	CU_ASSERT_EQUAL(stat(path, &st), 0);

	/* A file where the pool should be is refused, not silently used. */
	snprintf(path, sizeof(path), "%s/notadir", harness_tmpdir());
	write_file(path, "x");
	CU_ASSERT_EQUAL(pool_init(path), -ENOTDIR);
	snprintf(path, sizeof(path), "%s/notadir/pool", harness_tmpdir());
	CU_ASSERT_EQUAL(pool_init(path), -ENOTDIR);
}

static void test_create_get(void)
{
	const char *pool = new_pool("create");
	char img[PATH_MAX];
	struct pool_vol v;
	struct stat st;
	time_t before = time(NULL);

	/* create makes the pool directories itself. */
	CU_ASSERT_EQUAL(pool_vol_create(pool, "vol1", 20ull << 30), 0);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "vol1", &v), 0);
	CU_ASSERT_STRING_EQUAL(v.name, "vol1");
	CU_ASSERT_EQUAL(v.size_bytes, 20ull << 30);
	CU_ASSERT_STRING_EQUAL(v.store, "raw");
	CU_ASSERT(v.created >= before && v.created <= time(NULL));

	/* The data file has the size and no blocks: 20 GiB costs nothing until written. */
	CU_ASSERT_EQUAL(pool_vol_path(pool, "vol1", img, sizeof(img)), 0);
	CU_ASSERT_EQUAL_FATAL(stat(img, &st), 0);
	CU_ASSERT(S_ISREG(st.st_mode));
	CU_ASSERT_EQUAL((uint64_t)st.st_size, 20ull << 30);
	CU_ASSERT(st.st_blocks < 64);

	CU_ASSERT_EQUAL(pool_vol_create(pool, "vol1", 4096), -EEXIST);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "vol1", &v), 0);
	CU_ASSERT_EQUAL(v.size_bytes, 20ull << 30); /* the refused create changed nothing */
	CU_ASSERT_EQUAL(stat(img, &st), 0);
	CU_ASSERT_EQUAL((uint64_t)st.st_size, 20ull << 30);

	CU_ASSERT_EQUAL(pool_vol_create(pool, "tiny", 512), 0);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "tiny", &v), 0);
	CU_ASSERT_EQUAL(v.size_bytes, 512);

	CU_ASSERT_EQUAL(pool_vol_get(pool, "nope", &v), -ENOENT);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "../vol1", &v), -EINVAL);
}

static void test_create_bad(void)
{
	const char *pool = new_pool("bad");
	char path[PATH_MAX];
	struct stat st;

	CU_ASSERT_EQUAL(pool_vol_create(pool, "v", 0), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "v", 511), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "v", 4097), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "v", UINT64_MAX - 511), -EINVAL); /* > INT64_MAX */
	CU_ASSERT_EQUAL(pool_vol_create(pool, "", 4096), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_create(pool, ".v", 4096), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "a/b", 4096), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "../../escape", 4096), -EINVAL);
	/* Nothing was left behind by the refusals. */
	snprintf(path, sizeof(path), "%s/vols/v.img", pool);
	CU_ASSERT_EQUAL(stat(path, &st), -1);
	snprintf(path, sizeof(path), "%s/escape.img", harness_tmpdir());
	CU_ASSERT_EQUAL(stat(path, &st), -1);
}

static void test_delete(void)
{
	const char *pool = new_pool("delete");
	char img[PATH_MAX], meta[PATH_MAX];
	struct pool_vol v;
	struct stat st;

	CU_ASSERT_EQUAL(pool_vol_create(pool, "gone", 1 << 20), 0);
	CU_ASSERT_EQUAL(pool_vol_path(pool, "gone", img, sizeof(img)), 0);
	meta_file(pool, "gone", meta, sizeof(meta));
	CU_ASSERT_EQUAL(pool_vol_delete(pool, "gone"), 0);
	CU_ASSERT_EQUAL(stat(img, &st), -1);
	CU_ASSERT_EQUAL(stat(meta, &st), -1);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "gone", &v), -ENOENT);
	CU_ASSERT_EQUAL(pool_vol_delete(pool, "gone"), -ENOENT);
	CU_ASSERT_EQUAL(pool_vol_delete(pool, "../gone"), -EINVAL);

	/* The name can be reused, with the new size. */
	CU_ASSERT_EQUAL(pool_vol_create(pool, "gone", 8192), 0);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "gone", &v), 0);
	CU_ASSERT_EQUAL(v.size_bytes, 8192);
}

/* A crash between data file and metadata leaves an orphan .img: invisible, reclaimed by create. */
static void test_orphan_data_file(void)
{
	const char *pool = new_pool("orphan");
	struct pool_vol *list = NULL;
	char img[PATH_MAX];
	unsigned n = 99;
	struct stat st;

	CU_ASSERT_EQUAL(pool_init(pool), 0);
	CU_ASSERT_EQUAL(pool_vol_path(pool, "half", img, sizeof(img)), 0);
	write_file(img, "stale data from a crashed create");
	CU_ASSERT_EQUAL(pool_vol_list(pool, &list, &n), 0);
	CU_ASSERT_EQUAL(n, 0);
	free(list);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "half", 4096), 0);
	CU_ASSERT_EQUAL(stat(img, &st), 0);
	CU_ASSERT_EQUAL(st.st_size, 4096);
	CU_ASSERT(st.st_blocks == 0); /* truncated: the stale bytes are gone */
}

static void test_set_size(void)
{
	const char *pool = new_pool("setsize");
	char meta[PATH_MAX];
	struct stat before, after;
	struct pool_vol v, v2;

	CU_ASSERT_EQUAL(pool_vol_create(pool, "grow", 1 << 20), 0);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "grow", &v), 0);
	meta_file(pool, "grow", meta, sizeof(meta));
	CU_ASSERT_EQUAL(stat(meta, &before), 0);

	CU_ASSERT_EQUAL(pool_vol_set_size(pool, "grow", 40ull << 30), 0);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "grow", &v2), 0);
	CU_ASSERT_EQUAL(v2.size_bytes, 40ull << 30);
	CU_ASSERT_STRING_EQUAL(v2.store, v.store);
	CU_ASSERT_EQUAL(v2.created, v.created);
	/* Replaced by rename, not rewritten in place: a reader never sees a half-written file. */
	CU_ASSERT_EQUAL(stat(meta, &after), 0);
	CU_ASSERT_NOT_EQUAL(before.st_ino, after.st_ino);

	CU_ASSERT_EQUAL(pool_vol_set_size(pool, "grow", 0), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_set_size(pool, "grow", 1000), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_set_size(pool, "nope", 4096), -ENOENT);
	CU_ASSERT_EQUAL(pool_vol_set_size(pool, "a/b", 4096), -EINVAL);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "grow", &v2), 0);
	CU_ASSERT_EQUAL(v2.size_bytes, 40ull << 30);

	/* set_size records metadata only: resizing the data file is the target's job. */
	CU_ASSERT_EQUAL(pool_vol_set_size(pool, "grow", 4096), 0);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "grow", &v2), 0);
	CU_ASSERT_EQUAL(v2.size_bytes, 4096);
}

/* Metadata that is not exactly what we write is -EINVAL, never a guessed volume. */
static void test_corrupt_metadata(void)
{
	static const char *const bad[] = {
	    "",
	    "not json",
	    "[1,2]",
	    "{\"name\":\"c\",\"size\":4096,\"store\":\"raw\"",
	    "{\"size\":4096,\"store\":\"raw\"}",
	    "{\"name\":\"other\",\"size\":4096,\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":\"4096\",\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":-4096,\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":0,\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":4000,\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":4096.5,\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":18446744073709551104,\"store\":\"raw\"}",
	    "{\"name\":\"c\",\"size\":4096}",
	    "{\"name\":\"c\",\"size\":4096,\"store\":\"\"}",
	    "{\"name\":\"c\",\"size\":4096,\"store\":\"a-store-name-too-long\"}",
	    "{\"name\":\"c\",\"size\":4096,\"store\":\"raw\",\"created\":\"yesterday\"}",
	};
	const char *pool = new_pool("corrupt");
	char meta[PATH_MAX], big[8192];
	struct pool_vol v;

	CU_ASSERT_EQUAL(pool_init(pool), 0);
	meta_file(pool, "c", meta, sizeof(meta));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(meta, bad[i]);
		if (pool_vol_get(pool, "c", &v) != -EINVAL)
			CU_FAIL_FATAL(bad[i]);
	}
	memset(big, ' ', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	write_file(meta, big);
	CU_ASSERT_EQUAL(pool_vol_get(pool, "c", &v), -EINVAL);

	/* What we accept: our own format, "created" optional. */
	write_file(meta, "{\"name\":\"c\",\"size\":1048576,\"store\":\"dedup\"}");
	CU_ASSERT_EQUAL(pool_vol_get(pool, "c", &v), 0);
	CU_ASSERT_EQUAL(v.size_bytes, 1048576);
	CU_ASSERT_STRING_EQUAL(v.store, "dedup");
	CU_ASSERT_EQUAL(v.created, 0);
}

static void test_list(void)
{
	const char *pool = new_pool("list");
	struct pool_vol *list = NULL;
	char path[PATH_MAX];
	unsigned n = 0;

	CU_ASSERT_EQUAL(pool_vol_list(pool, &list, &n), -ENOENT); /* no pool yet */
	CU_ASSERT_EQUAL(pool_init(pool), 0);
	CU_ASSERT_EQUAL(pool_vol_list(pool, &list, &n), 0);
	CU_ASSERT_EQUAL(n, 0);
	free(list);

	CU_ASSERT_EQUAL(pool_vol_create(pool, "zeta", 4096), 0);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "alpha", 8192), 0);
	CU_ASSERT_EQUAL(pool_vol_create(pool, "Mid.1", 512), 0);
	/* Not volumes: temp and lock files, other extensions, a corrupt one, a bad name. */
	snprintf(path, sizeof(path), "%s/vols/.alpha.json.123.tmp", pool);
	write_file(path, "{");
	snprintf(path, sizeof(path), "%s/vols/notes.txt", pool);
	write_file(path, "hello");
	snprintf(path, sizeof(path), "%s/vols/broken.json", pool);
	write_file(path, "{\"name\":\"broken\"}");
	snprintf(path, sizeof(path), "%s/vols/a b.json", pool);
	write_file(path, "{\"name\":\"a b\",\"size\":4096,\"store\":\"raw\"}");
	snprintf(path, sizeof(path), "%s/vols/.json", pool);
	write_file(path, "{}");

	CU_ASSERT_EQUAL(pool_vol_list(pool, &list, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_STRING_EQUAL(list[0].name, "Mid.1");
	CU_ASSERT_EQUAL(list[0].size_bytes, 512);
	CU_ASSERT_STRING_EQUAL(list[1].name, "alpha");
	CU_ASSERT_EQUAL(list[1].size_bytes, 8192);
	CU_ASSERT_STRING_EQUAL(list[2].name, "zeta");
	CU_ASSERT_EQUAL(list[2].size_bytes, 4096);
	free(list);

	/* More volumes than the first allocation holds. */
	for (int i = 0; i < 40; i++) {
		char name[16];

		snprintf(name, sizeof(name), "v%02d", i);
		CU_ASSERT_EQUAL(pool_vol_create(pool, name, 4096), 0);
	}
	CU_ASSERT_EQUAL(pool_vol_list(pool, &list, &n), 0);
	CU_ASSERT_EQUAL_FATAL(n, 43);
	for (unsigned i = 1; i < n; i++)
		CU_ASSERT(strcmp(list[i - 1].name, list[i].name) < 0);
	free(list);
}

/*
 * Several processes rewrite one volume's metadata while the parent reads it: every read sees a
 * complete file with one of the written sizes, and when all are done the metadata holds one of
 * them. Other processes create volumes meanwhile: the lock keeps every one of them.
 */
static void test_concurrent_writers(void)
{
	const char *pool = new_pool("concurrent");
	enum { WRITERS = 3, ROUNDS = 200 };
	struct pool_vol *list = NULL;
	pid_t pids[WRITERS];
	int status[WRITERS];
	unsigned n = 0;
	int bad = 0, reads = 0, alive;
	struct pool_vol v;

	CU_ASSERT_EQUAL_FATAL(pool_vol_create(pool, "shared", 4096), 0);
	for (int w = 0; w < WRITERS; w++) {
		status[w] = -1;
		pids[w] = fork();
		CU_ASSERT_FATAL(pids[w] >= 0);
		if (pids[w] == 0) {
			int fail = 0;

			for (int i = 0; i < ROUNDS; i++) {
				char name[16];

				if (pool_vol_set_size(pool, "shared", (uint64_t)(w + 1) * 4096) < 0)
					fail = 1;
				snprintf(name, sizeof(name), "w%d-%d", w, i % 20);
				if (i < 20 && pool_vol_create(pool, name, 512) < 0)
					fail = 1;
			}
			_exit(fail);
		}
	}
	do {
		int rc = pool_vol_get(pool, "shared", &v);

		reads++;
		if (rc != 0 || v.size_bytes == 0 || v.size_bytes > WRITERS * 4096 ||
		    v.size_bytes % 4096 != 0)
			bad++;
		alive = 0;
		for (int w = 0; w < WRITERS; w++) {
			if (status[w] >= 0)
				continue;
			if (waitpid(pids[w], &status[w], WNOHANG) == 0) {
				status[w] = -1;
				alive = 1;
			}
		}
	} while (alive);
	for (int w = 0; w < WRITERS; w++)
		CU_ASSERT(WIFEXITED(status[w]) && WEXITSTATUS(status[w]) == 0);
	CU_ASSERT(reads > 0);
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(pool_vol_list(pool, &list, &n), 0);
	CU_ASSERT_EQUAL(n, 1 + WRITERS * 20);
	free(list);
}

static CU_TestInfo tests[] = {
    {"name_ok", test_name_ok},
    {"paths", test_paths},
    {"init", test_init},
    {"create_get", test_create_get},
    {"create_bad", test_create_bad},
    {"delete", test_delete},
    {"orphan_data_file", test_orphan_data_file},
    {"set_size", test_set_size},
    {"corrupt_metadata", test_corrupt_metadata},
    {"list", test_list},
    {"concurrent_writers", test_concurrent_writers},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("pool", NULL, NULL, tests)
