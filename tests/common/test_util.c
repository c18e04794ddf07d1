/* test_util.c - size parsing edge cases: every CLI size goes through util_parse_size. */
#include "common/util.h"
#include "tests/harness.h"

#include <errno.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void test_parse_size_ok(void)
{
	uint64_t v;

	CU_ASSERT_EQUAL(util_parse_size("4096", &v), 0);
	CU_ASSERT_EQUAL(v, 4096);
	CU_ASSERT_EQUAL(util_parse_size("20G", &v), 0);
	CU_ASSERT_EQUAL(v, 20ull << 30);
	CU_ASSERT_EQUAL(util_parse_size("512k", &v), 0);
	CU_ASSERT_EQUAL(v, 512ull << 10);
	CU_ASSERT_EQUAL(util_parse_size("1TiB", &v), 0);
	CU_ASSERT_EQUAL(v, 1ull << 40);
	CU_ASSERT_EQUAL(util_parse_size("3MB", &v), 0);
	CU_ASSERT_EQUAL(v, 3ull << 20);
}

static void test_parse_size_bad(void)
{
	uint64_t v = 7;

	CU_ASSERT_EQUAL(util_parse_size("", &v), -EINVAL);
	CU_ASSERT_EQUAL(util_parse_size("G", &v), -EINVAL);
	CU_ASSERT_EQUAL(util_parse_size("-1", &v), -EINVAL);
	CU_ASSERT_EQUAL(util_parse_size("12X", &v), -EINVAL);
	CU_ASSERT_EQUAL(util_parse_size("1G2", &v), -EINVAL);
	CU_ASSERT_EQUAL(util_parse_size("99999999999P", &v), -ERANGE);
	CU_ASSERT_EQUAL(util_parse_size("184467440737095516160", &v), -ERANGE);
	CU_ASSERT_EQUAL(v, 7);
}

static void test_fmt_size(void)
{
	char buf[32];

	CU_ASSERT_STRING_EQUAL(util_fmt_size(512, buf, sizeof(buf)), "512");
	CU_ASSERT_STRING_EQUAL(util_fmt_size(1ull << 30, buf, sizeof(buf)), "1G");
	CU_ASSERT_STRING_EQUAL(util_fmt_size(3ull << 19, buf, sizeof(buf)), "1.5M");
}

/* Atomic replace: content, mode 0644, no temporary left, and errors leave nothing. */
static void test_write_file_atomic(void)
{
	char dir[512], path[600], buf[64];
	struct stat st;
	struct dirent *e;
	FILE *f;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/wfa", harness_tmpdir());
	CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/f.json", dir);
	CU_ASSERT_EQUAL(util_write_file_line(path, "first"), 0);
	CU_ASSERT_EQUAL(util_write_file_atomic(path, "second\n", 7), 0);
	f = fopen(path, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_PTR_NOT_NULL(fgets(buf, sizeof(buf), f));
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf, "second\n");
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0644);
	d = opendir(dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	CU_ASSERT_EQUAL(n, 1); /* no temporary file left */
	snprintf(path, sizeof(path), "%s/missing/f.json", dir);
	CU_ASSERT_EQUAL(util_write_file_line(path, "x"), -ENOENT);
}

static CU_TestInfo tests[] = {
	{ "write_file_atomic", test_write_file_atomic },
	{ "parse_size_ok", test_parse_size_ok },
	{ "parse_size_bad", test_parse_size_bad },
	{ "fmt_size", test_fmt_size },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("util", NULL, NULL, tests)
