/*
 * test_image.c - raw image import and export: a round trip through a sparse file and through a
 * pipe, the pool's dedup ratio against an independent count of the imported data, progress
 * reports, cancellation and size checks.
 */
#include "tests/dedup/dedup_test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG_BLK 900 /* > 3 chunks of 256 blocks */
#define IMG_TAIL 1000 /* bytes of a partial last block */

static uint64_t img_seed(uint64_t b)
{
	uint64_t h = t_mix(b);

	if (h % 4 == 0)
		return 0;
	if (h % 4 == 1)
		return 1 + (h >> 8) % 32; /* repeats */
	return 100 + b;
}

static int make_image(const char *path, uint64_t *distinct, uint64_t *nonzero)
{
	uint8_t seen[200] = { 0 };
	uint64_t buf[TB / 8];
	int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);

	if (fd < 0)
		return -1;
	*distinct = *nonzero = 0;
	for (uint64_t b = 0; b <= IMG_BLK; b++) {
		uint64_t seed = img_seed(b);
		size_t len = b == IMG_BLK ? IMG_TAIL : TB;

		t_fill(buf, seed ? seed : 0);
		if (b == IMG_BLK) {
			/* the padded tail block is its own content */
			seed = 99;
			t_fill(buf, seed);
			memset((char *)buf + IMG_TAIL, 0, TB - IMG_TAIL);
		}
		if (pwrite(fd, buf, len, (off_t)(b * TB)) != (ssize_t)len) {
			close(fd);
			return -1;
		}
		if (!seed)
			continue;
		(*nonzero)++;
		if (seed >= 100 || seed == 99 || !seen[seed]) {
			(*distinct)++;
			if (seed < 100)
				seen[seed] = 1;
		}
	}
	return fd;
}

static int prog_calls;
static uint64_t prog_last;

static int prog(const struct dedup_progress *p, void *arg)
{
	(void)arg;
	CU_ASSERT_TRUE(p->done >= prog_last);
	CU_ASSERT_TRUE(p->done <= p->total);
	prog_last = p->done;
	prog_calls++;
	return 0;
}

static int stop_early(const struct dedup_progress *p, void *arg)
{
	(void)arg;
	return p->done > 0;
}

static void test_import_export_roundtrip(void)
{
	struct dedup_store *s = t_store("img-rt", NULL);
	uint64_t size = (uint64_t)IMG_BLK * TB + IMG_TAIL, distinct = 0, nonzero = 0;
	uint64_t a[TB / 8], b[TB / 8];
	char in[PATH_MAX], out[PATH_MAX];
	struct dedup_stats st;
	struct stat sb;
	int fd, ofd;

	CU_ASSERT_FATAL(s != NULL);
	snprintf(in, sizeof(in), "%s/image.raw", harness_tmpdir());
	snprintf(out, sizeof(out), "%s/export.raw", harness_tmpdir());
	fd = make_image(in, &distinct, &nonzero);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "small", 8 * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_import(s, "small", fd, NULL, NULL), -EFBIG);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "a", (IMG_BLK + 100) * TB), 0);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "b", (IMG_BLK + 1) * TB), 0);
	prog_calls = 0;
	prog_last = 0;
	CU_ASSERT_EQUAL(dedup_vol_import(s, "a", fd, prog, NULL), 0);
	CU_ASSERT_TRUE(prog_calls >= 2);
	CU_ASSERT_EQUAL(prog_last, size);
	CU_ASSERT_EQUAL(dedup_vol_import(s, "b", fd, NULL, NULL), 0);
	/* the pool's numbers equal a count made without the store */
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, distinct);
	CU_ASSERT_EQUAL(st.logical_bytes, 2 * nonzero * TB);
	CU_ASSERT_DOUBLE_EQUAL(st.dedup_ratio, (double)(2 * nonzero) / (double)distinct, 1e-12);

	ofd = open(out, O_CREAT | O_TRUNC | O_RDWR, 0600);
	CU_ASSERT_FATAL(ofd >= 0);
	prog_calls = 0;
	prog_last = 0;
	CU_ASSERT_EQUAL(dedup_vol_export(s, "a", ofd, prog, NULL), 0);
	CU_ASSERT_TRUE(prog_calls >= 2);
	CU_ASSERT_EQUAL(fstat(ofd, &sb), 0);
	CU_ASSERT_EQUAL((uint64_t)sb.st_size, (IMG_BLK + 100) * TB);
	/* zero blocks are holes: fewer blocks allocated than the file is long */
	CU_ASSERT_TRUE((uint64_t)sb.st_blocks * 512 < (uint64_t)sb.st_size);
	for (uint64_t blk = 0; blk < IMG_BLK + 100; blk++) {
		memset(a, 0, sizeof(a));
		if (blk <= IMG_BLK)
			CU_ASSERT_EQUAL(pread(fd, a, TB, (off_t)(blk * TB)),
					blk < IMG_BLK ? (ssize_t)TB : IMG_TAIL);
		CU_ASSERT_EQUAL(pread(ofd, b, TB, (off_t)(blk * TB)), (ssize_t)TB);
		CU_ASSERT_EQUAL(memcmp(a, b, TB), 0);
	}
	CU_ASSERT_EQUAL(dedup_vol_export(s, "a", ofd, stop_early, NULL), -ECANCELED);
	CU_ASSERT_EQUAL(dedup_vol_import(s, "b", fd, stop_early, NULL), -ECANCELED);
	CU_ASSERT_EQUAL(dedup_vol_export(s, "missing", ofd, NULL, NULL), -ENOENT);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	close(ofd);
	close(fd);
	dedup_store_close(s);
}

struct drain {
	int fd;
	uint8_t *buf;
	size_t len, got;
};

static void *drain_pipe(void *p)
{
	struct drain *d = p;
	ssize_t n;

	while (d->got < d->len && (n = read(d->fd, d->buf + d->got, d->len - d->got)) > 0)
		d->got += (size_t)n;
	return NULL;
}

static void test_export_to_pipe(void)
{
	struct dedup_store *s = t_store("img-pipe", NULL);
	struct dedup_ctx *c;
	struct dedup_vol *v;
	struct drain d = { 0 };
	pthread_t th;
	int pfd[2];

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 300 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t b = 0; b < 300; b += 3)
		CU_ASSERT_EQUAL(t_write(c, v, b, 5 + b), 0);
	CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
	d.fd = pfd[0];
	d.len = 300 * TB;
	d.buf = malloc(d.len);
	CU_ASSERT_FATAL(d.buf != NULL);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, drain_pipe, &d), 0);
	CU_ASSERT_EQUAL(dedup_vol_export(s, "v", pfd[1], NULL, NULL), 0);
	close(pfd[1]);
	pthread_join(th, NULL);
	close(pfd[0]);
	CU_ASSERT_EQUAL(d.got, d.len);
	for (uint64_t b = 0; b < 300; b++)
		CU_ASSERT_TRUE(t_check(d.buf + b * TB, b % 3 ? 0 : 5 + b));
	free(d.buf);
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
	{ "import_export_roundtrip", test_import_export_roundtrip },
	{ "export_to_pipe", test_export_to_pipe },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_image", NULL, NULL, tests)
