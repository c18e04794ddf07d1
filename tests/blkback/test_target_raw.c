/*
 * test_target_raw.c - the raw target on both engines: data in place through iovecs, flush,
 * discard, resize, backpressure, O_DIRECT detection, read-only, validation, short transfers and
 * the end of a file, a block device (loop) when one can be attached, and a random concurrent
 * mix checked against a shadow copy.
 *
 * Includes the .c to reach the engine seam: a fake engine that moves only a few bytes per call
 * drives the short-transfer resume path that real files rarely take.
 */
#include "blkback/target_raw.c"
#include "tests/blkback/target_io.h"
#include "tests/harness.h"

#include <linux/loop.h>
#include <poll.h>
#include <sched.h>

static const enum target_engine engines[] = {TARGET_ENGINE_IO_URING, TARGET_ENGINE_LIBAIO};

#define FOR_EACH_ENGINE(i) for (unsigned i = 0; i < ARRAY_SIZE(engines); i++)

/* Deterministic content: each 8-byte word depends on its offset in the volume and a seed. */
static void pattern(void *buf, size_t len, uint64_t off, uint64_t seed)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = ((off + i) * 0x9E3779B97F4A7C15ull) ^ seed;

		memcpy((char *)buf + i, &v, 8);
	}
}

static int is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

static void *abuf(size_t len)
{
	void *p = NULL;

	CU_ASSERT_FATAL(posix_memalign(&p, 4096, len) == 0);
	memset(p, 0, len);
	return p;
}

static void tpath(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", harness_tmpdir(), name);
}

static void mkfile(const char *path, uint64_t size)
{
	int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(ftruncate(fd, (off_t)size) == 0);
	close(fd);
}

static struct target *topen(const char *path, unsigned ei, int ro, int no_direct)
{
	struct target_open_opts o = {.engine = engines[ei], .readonly = ro, .no_direct = no_direct};
	struct target *t = NULL;

	CU_ASSERT_EQUAL_FATAL(target_raw_open(path, &o, &t), 0);
	return t;
}

static struct target_queue *qopen(struct target *t, uint32_t depth)
{
	struct target_queue *q = NULL;

	CU_ASSERT_EQUAL_FATAL(target_queue_open(t, depth, &q), 0);
	return q;
}

/* Would this path accept O_DIRECT at all (what the target should detect)? */
static int can_odirect(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

static uint32_t lb_of(struct target *t)
{
	struct target_info info;

	CU_ASSERT_EQUAL(target_info(t, &info), 0);
	return info.logical_block;
}

/* ---- tests ---- */

static void test_engine_parse(void)
{
	enum target_engine e = TARGET_ENGINE_LIBAIO;

	CU_ASSERT_EQUAL(target_engine_parse("io_uring", &e), 0);
	CU_ASSERT_EQUAL(e, TARGET_ENGINE_IO_URING);
	CU_ASSERT_EQUAL(target_engine_parse("libaio", &e), 0);
	CU_ASSERT_EQUAL(e, TARGET_ENGINE_LIBAIO);
	CU_ASSERT_EQUAL(target_engine_parse("posix", &e), -EINVAL);
	CU_ASSERT_EQUAL(target_engine_parse("", &e), -EINVAL);
	CU_ASSERT_EQUAL(target_engine_parse(NULL, &e), -EINVAL);
	CU_ASSERT_EQUAL(e, TARGET_ENGINE_LIBAIO);
}

static void test_open_errors(void)
{
	struct target_open_opts o = {.engine = TARGET_ENGINE_IO_URING};
	struct target *t = NULL;
	char path[512];

	tpath(path, sizeof(path), "missing.img");
	CU_ASSERT_EQUAL(target_raw_open(path, &o, &t), -ENOENT);
	CU_ASSERT_EQUAL(target_raw_open(harness_tmpdir(), &o, &t), -EISDIR);
	tpath(path, sizeof(path), "eng.img");
	mkfile(path, 1 << 20);
	o.engine = (enum target_engine)7;
	CU_ASSERT_EQUAL(target_raw_open(path, &o, &t), -EINVAL);
	CU_ASSERT_PTR_NULL(t);
}

/* A write whose iovecs are several separate buffers lands contiguously; reads split differently. */
static void test_rw_iovecs(void)
{
	char path[512];

	tpath(path, sizeof(path), "rw.img");
	FOR_EACH_ENGINE(ei)
	{
		struct target *t;
		struct target_queue *q;
		struct target_io io;
		struct done_rec r;
		uint8_t *a = abuf(4096), *b = abuf(8192), *c = abuf(4096), *d = abuf(4096);
		uint8_t *src = abuf(16384), *dst = abuf(16384), *chk = abuf(16384);
		uint32_t lb;
		uint64_t off;
		int fd;

		mkfile(path, 4 << 20);
		t = topen(path, ei, 0, 0);
		q = qopen(t, 8);
		lb = lb_of(t);
		off = (1 << 20) + lb;

		/* Four pieces: two full pages, a tail of a page, a logical block (lb 4096: empty).
		 */
		pattern(src, 16384, off, ei + 1);
		memcpy(a, src, 4096);
		memcpy(b, src + 4096, 8192);
		memcpy(c + lb % 4096, src + 12288, 4096 - lb % 4096);
		memcpy(d, src + 12288 + 4096 - lb % 4096, lb % 4096);
		struct iovec wiov[4] = {
		    {a, 4096},
		    {b, 8192},
		    {c + lb % 4096, 4096 - lb % 4096},
		    {d, lb % 4096},
		};
		tio_set(&io, TARGET_OP_WRITE, off, 16384, wiov, 4, &r);
		CU_ASSERT_EQUAL(run_io(q, &io), 0);

		/* Read back in one buffer, and split at other points. */
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, off, dst, 16384), 0);
		CU_ASSERT(memcmp(dst, src, 16384) == 0);
		memset(dst, 0, 16384);
		struct iovec riov[3] = {
		    {dst, 8192 + lb}, {dst + 8192 + lb, 4096 - lb}, {dst + 12288, 4096}};
		tio_set(&io, TARGET_OP_READ, off, 16384, riov, 3, &r);
		CU_ASSERT_EQUAL(run_io(q, &io), 0);
		CU_ASSERT(memcmp(dst, src, 16384) == 0);

		/* The bytes are where they belong in the file itself. */
		fd = open(path, O_RDONLY | O_CLOEXEC);
		CU_ASSERT(fd >= 0);
		CU_ASSERT_EQUAL(pread(fd, chk, 16384, (off_t)off), 16384);
		CU_ASSERT(memcmp(chk, src, 16384) == 0);
		CU_ASSERT_EQUAL(pread(fd, chk, lb, (off_t)(off - lb)), (ssize_t)lb);
		CU_ASSERT(is_zero(chk, lb));
		close(fd);

		target_queue_close(q);
		target_close(t);
		free(a), free(b), free(c), free(d), free(src), free(dst), free(chk);
	}
}

static void test_flush(void)
{
	char path[512];

	tpath(path, sizeof(path), "flush.img");
	FOR_EACH_ENGINE(ei)
	{
		struct target *t;
		struct target_queue *q;
		struct target_io wio, fio;
		struct done_rec wr, fr;
		uint8_t *buf = abuf(65536), *chk = abuf(65536);
		struct iovec iov = {buf, 65536};
		struct target_info info;
		int fd;

		mkfile(path, 1 << 20);
		t = topen(path, ei, 0, 0);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT(info.has_flush);
		q = qopen(t, 4);

		/* A write, then a flush once it completed: both succeed, each done exactly once. */
		pattern(buf, 65536, 0, 42);
		tio_set(&wio, TARGET_OP_WRITE, 0, 65536, &iov, 1, &wr);
		CU_ASSERT_EQUAL(run_io(q, &wio), 0);
		tio_set(&fio, TARGET_OP_FLUSH, 0, 0, NULL, 0, &fr);
		CU_ASSERT_EQUAL(run_io(q, &fio), 0);
		CU_ASSERT_EQUAL(wr.calls, 1);

		/* A flush queued in the same pass as a write, and flushes back to back. */
		tio_set(&wio, TARGET_OP_WRITE, 65536, 65536, &iov, 1, &wr);
		tio_set(&fio, TARGET_OP_FLUSH, 0, 0, NULL, 0, &fr);
		CU_ASSERT_EQUAL(target_submit(q, &wio), 0);
		CU_ASSERT_EQUAL(target_submit(q, &fio), 0);
		CU_ASSERT_EQUAL(target_queue_inflight(q), 2);
		CU_ASSERT(target_queue_commit(q) >= 0);
		while (target_queue_inflight(q))
			CU_ASSERT(target_queue_poll(q, 1) >= 0);
		CU_ASSERT_EQUAL(wr.calls, 1);
		CU_ASSERT_EQUAL(wr.status, 0);
		CU_ASSERT_EQUAL(fr.calls, 1);
		CU_ASSERT_EQUAL(fr.status, 0);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_FLUSH, 0, 0), 0);

		fd = open(path, O_RDONLY | O_CLOEXEC);
		CU_ASSERT_EQUAL(pread(fd, chk, 65536, 65536), 65536);
		CU_ASSERT(memcmp(chk, buf, 65536) == 0);
		close(fd);
		target_queue_close(q);
		target_close(t);
		free(buf);
		free(chk);
	}
}

static uint64_t file_blocks(const char *path)
{
	struct stat st;

	CU_ASSERT_EQUAL(stat(path, &st), 0);
	return (uint64_t)st.st_blocks;
}

static void test_discard(void)
{
	char path[512];

	tpath(path, sizeof(path), "discard.img");
	FOR_EACH_ENGINE(ei)
	{
		const size_t len = 256 << 10;
		struct target *t;
		struct target_queue *q;
		struct target_info info;
		uint8_t *buf = abuf(len), *rd = abuf(len);
		uint64_t before;

		mkfile(path, 4 << 20);
		t = topen(path, ei, 0, 0);
		q = qopen(t, 4);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		pattern(buf, len, 0, 7);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 0, buf, len), 0);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_FLUSH, 0, 0), 0);
		if (!info.discard_granularity) {
			/* The file system cannot punch holes: discard is refused up front. */
			CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 65536, 131072), -EOPNOTSUPP);
			goto out;
		}
		before = file_blocks(path);
		CU_ASSERT(before >= len / 512);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 65536, 131072), 0);
		CU_ASSERT(file_blocks(path) < before);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 0, rd, len), 0);
		CU_ASSERT(memcmp(rd, buf, 65536) == 0);
		CU_ASSERT(is_zero(rd + 65536, 131072));
		CU_ASSERT(memcmp(rd + 196608, buf + 196608, 65536) == 0);
		/* Misaligned and out-of-range discards are refused at submit. */
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 100, 4096), -EINVAL);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 0, 0), -EINVAL);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 4 << 20, 4096), -EINVAL);
	out:
		target_queue_close(q);
		target_close(t);
		free(buf);
		free(rd);
	}
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	CU_ASSERT_EQUAL(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void test_resize(void)
{
	char path[512];

	tpath(path, sizeof(path), "resize.img");
	FOR_EACH_ENGINE(ei)
	{
		const uint64_t mib = 1 << 20;
		struct target *t;
		struct target_queue *q;
		struct target_info info;
		uint8_t *buf = abuf(mib), *rd = abuf(mib), *junk = abuf(4096);
		int fd;

		mkfile(path, mib);
		t = topen(path, ei, 0, 0);
		q = qopen(t, 4);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT_EQUAL(info.size_bytes, mib);
		pattern(buf, mib, 0, 99);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 0, buf, mib), 0);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, mib, rd, 4096), -EINVAL);

		/* Grow: the new range reads as zeros and takes writes. */
		CU_ASSERT_EQUAL(target_resize(t, 2 * mib), 0);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT_EQUAL(info.size_bytes, 2 * mib);
		CU_ASSERT_EQUAL(file_size(path), 2 * mib);
		memset(rd, 0xff, mib);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, mib, rd, mib), 0);
		CU_ASSERT(is_zero(rd, mib));
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 2 * mib - 4096, buf, 4096), 0);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 2 * mib, buf, 4096), -EINVAL);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 2 * mib - 4096, buf, 8192), -EINVAL);

		/* Shrink: I/O past the new end is refused, data below it untouched. */
		CU_ASSERT_EQUAL(target_resize(t, mib / 2), 0);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT_EQUAL(info.size_bytes, mib / 2);
		CU_ASSERT_EQUAL(file_size(path), mib / 2);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, mib / 2, rd, 4096), -EINVAL);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, mib / 2 - 4096, buf, 8192), -EINVAL);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 0, rd, mib / 2), 0);
		CU_ASSERT(memcmp(rd, buf, mib / 2) == 0);

		/* Bytes left past the end (a stray write) do not show through a later grow. */
		fd = open(path, O_WRONLY | O_CLOEXEC);
		memset(junk, 0xa5, 4096);
		CU_ASSERT_EQUAL(pwrite(fd, junk, 4096, (off_t)(mib / 2 + 65536)), 4096);
		close(fd);
		CU_ASSERT_EQUAL(target_resize(t, mib), 0);
		memset(rd, 0xff, mib);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 0, rd, mib), 0);
		CU_ASSERT(memcmp(rd, buf, mib / 2) == 0);
		CU_ASSERT(is_zero(rd + mib / 2, mib / 2));

		/* Sizes the target cannot take. */
		CU_ASSERT_EQUAL(target_resize(t, mib + 100), -EINVAL);
		CU_ASSERT_EQUAL(target_resize(t, UINT64_MAX & ~4095ull), -EFBIG);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT_EQUAL(info.size_bytes, mib);

		target_queue_close(q);
		target_close(t);
		free(buf);
		free(rd);
		free(junk);
	}
}

static void test_backpressure(void)
{
	char path[512];

	tpath(path, sizeof(path), "bp.img");
	mkfile(path, 8 << 20);
	FOR_EACH_ENGINE(ei)
	{
		struct target *t = topen(path, ei, 0, 0);
		struct target_queue *q = qopen(t, 4);
		struct target_io io[5];
		struct done_rec r[5];
		struct iovec iov[5];
		uint8_t *buf = abuf(5 * 4096);
		int sum = 0;

		for (int i = 0; i < 5; i++) {
			iov[i] = (struct iovec){buf + i * 4096, 4096};
			tio_set(&io[i], TARGET_OP_READ, (uint64_t)i * 4096, 4096, &iov[i], 1,
				&r[i]);
		}
		for (int i = 0; i < 4; i++)
			CU_ASSERT_EQUAL(target_submit(q, &io[i]), 0);
		/* Full: the fifth waits, whatever its kind, and nothing is lost. */
		CU_ASSERT_EQUAL(target_submit(q, &io[4]), -EAGAIN);
		tio_set(&io[4], TARGET_OP_FLUSH, 0, 0, NULL, 0, &r[4]);
		CU_ASSERT_EQUAL(target_submit(q, &io[4]), -EAGAIN);
		CU_ASSERT_EQUAL(target_queue_inflight(q), 4);
		CU_ASSERT_EQUAL(target_queue_commit(q), 4);
		while (sum < 4) {
			int n = target_queue_poll(q, 1);

			CU_ASSERT_FATAL(n >= 0);
			sum += n;
		}
		CU_ASSERT_EQUAL(sum, 4);
		for (int i = 0; i < 4; i++) {
			CU_ASSERT_EQUAL(r[i].calls, 1);
			CU_ASSERT_EQUAL(r[i].status, 0);
		}
		CU_ASSERT_EQUAL(target_queue_inflight(q), 0);
		CU_ASSERT_EQUAL(run_io(q, &io[4]), 0);
		target_queue_close(q);

		/* A huge depth is clamped, and the clamp is backpressure too. */
		q = qopen(t, 1u << 30);
		struct target_io *many = calloc(TARGET_QUEUE_MAX_DEPTH + 1, sizeof(*many));
		struct done_rec *mr = calloc(TARGET_QUEUE_MAX_DEPTH + 1, sizeof(*mr));

		for (uint32_t i = 0; i <= TARGET_QUEUE_MAX_DEPTH; i++)
			tio_set(&many[i], TARGET_OP_READ, (i % 2048) * 4096ull, 4096, &iov[0], 1,
				&mr[i]);
		for (uint32_t i = 0; i < TARGET_QUEUE_MAX_DEPTH; i++)
			CU_ASSERT_EQUAL_FATAL(target_submit(q, &many[i]), 0);
		CU_ASSERT_EQUAL(target_submit(q, &many[TARGET_QUEUE_MAX_DEPTH]), -EAGAIN);
		CU_ASSERT(target_queue_commit(q) > 0);
		/* Closing waits for all of them and calls every done. */
		target_queue_close(q);
		for (uint32_t i = 0; i < TARGET_QUEUE_MAX_DEPTH; i++)
			CU_ASSERT_EQUAL(mr[i].calls, 1);
		free(many);
		free(mr);
		target_close(t);
		free(buf);
	}
}

/* Which alignment should the target have found on @path, as the kernel tells it. */
static void check_direct(const char *path, unsigned ei)
{
	struct target *t = topen(path, ei, 0, 0);
	struct target_queue *q;
	struct target_info info;
	struct statx sx;
	uint8_t *buf = abuf(8192);
	uint32_t lb;

	CU_ASSERT_EQUAL(target_info(t, &info), 0);
	lb = info.logical_block;
	CU_ASSERT_EQUAL(info.direct, can_odirect(path));
	CU_ASSERT(info.logical_block >= 512 && info.logical_block <= 4096);
	CU_ASSERT_EQUAL(info.logical_block & (info.logical_block - 1), 0);
	CU_ASSERT(info.physical_block >= info.logical_block);
	if (info.direct && statx(AT_FDCWD, path, 0, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
		uint32_t want = sx.stx_dio_offset_align > sx.stx_dio_mem_align
				    ? sx.stx_dio_offset_align
				    : sx.stx_dio_mem_align;

		CU_ASSERT_EQUAL(info.logical_block, want < 512 ? 512 : want);
	}
	/* Whatever was found, I/O at that granularity works. */
	q = qopen(t, 2);
	pattern(buf, 4096, info.logical_block, 5);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, info.logical_block, buf, 4096), 0);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, info.logical_block, buf + 4096, 4096), 0);
	CU_ASSERT(memcmp(buf, buf + 4096, 4096) == 0);
	target_queue_close(q);
	target_close(t);

	/* Asked not to: buffered, and any 512-byte multiple goes. */
	t = topen(path, ei, 0, 1);
	CU_ASSERT_EQUAL(target_info(t, &info), 0);
	CU_ASSERT_EQUAL(info.direct, 0);
	CU_ASSERT_EQUAL(info.logical_block, 512);
	q = qopen(t, 2);
	memset(buf + 4096, 0, 4096);
	CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, lb + 512, buf + 4096 + 8, 1024), 0);
	CU_ASSERT(memcmp(buf + 512, buf + 4096 + 8, 1024) == 0);
	target_queue_close(q);
	target_close(t);
	free(buf);
}

static void test_direct_detect(void)
{
	char path[512];
	struct stat st;

	tpath(path, sizeof(path), "direct.img");
	mkfile(path, 1 << 20);
	FOR_EACH_ENGINE(ei)
	check_direct(path, ei);

	/* tmpfs: O_DIRECT only on kernels that accept it there (6.6+), else buffered. */
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) {
		snprintf(path, sizeof(path), "/dev/shm/sluice-raw-%d.img", (int)getpid());
		mkfile(path, 1 << 20);
		FOR_EACH_ENGINE(ei)
		check_direct(path, ei);
		unlink(path);
	} else {
		printf("\n  (no writable /dev/shm: tmpfs fallback not exercised) ");
	}
}

static void test_readonly(void)
{
	char path[512];
	uint8_t *buf = abuf(8192);
	int fd;

	tpath(path, sizeof(path), "ro.img");
	mkfile(path, 1 << 20);
	pattern(buf, 4096, 8192, 3);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	CU_ASSERT_EQUAL(pwrite(fd, buf, 4096, 8192), 4096);
	close(fd);
	FOR_EACH_ENGINE(ei)
	{
		struct target *t = topen(path, ei, 1, 0);
		struct target_queue *q = qopen(t, 4);
		struct target_info info;

		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT(info.readonly);
		CU_ASSERT_EQUAL(info.discard_granularity, 0);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 8192, buf + 4096, 4096), 0);
		CU_ASSERT(memcmp(buf, buf + 4096, 4096) == 0);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 0, buf, 4096), -EROFS);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 0, 4096), -EROFS);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_FLUSH, 0, 0), 0);
		CU_ASSERT_EQUAL(target_resize(t, 2 << 20), -EROFS);
		CU_ASSERT_EQUAL(file_size(path), 1 << 20);
		target_queue_close(q);
		target_close(t);
	}
	free(buf);
}

static void test_validation(void)
{
	char path[512];

	tpath(path, sizeof(path), "valid.img");
	mkfile(path, 1 << 20);
	FOR_EACH_ENGINE(ei)
	{
		struct target *t = topen(path, ei, 0, 0);
		struct target_queue *q = qopen(t, 4);
		uint32_t lb = lb_of(t);
		uint8_t *buf = abuf(8192);
		struct iovec iov[2] = {{buf, 4096}, {buf + 4096, 4096}};
		struct target_io io;
		struct done_rec r;

		/* Misaligned offset and length. */
		tio_set(&io, TARGET_OP_READ, lb / 2, 4096, iov, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		iov[0].iov_len = 4096 - 256;
		tio_set(&io, TARGET_OP_READ, 0, 4096 - 256, iov, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		iov[0].iov_len = 4096;
		/* The iovecs must add up to len_bytes. */
		tio_set(&io, TARGET_OP_WRITE, 0, 4096, iov, 2, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_WRITE, 0, 16384, iov, 2, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_READ, 0, 0, iov, 0, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_READ, 0, 4096, NULL, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_READ, 0, 4096, iov, IOV_MAX + 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		/* Past the end, and an offset that wraps. */
		tio_set(&io, TARGET_OP_READ, 1 << 20, 4096, iov, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_WRITE, (1 << 20) - 4096, 8192, iov, 2, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_READ, UINT64_MAX - 4095, 4096, iov, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		/* Unknown operation, missing callback. */
		tio_set(&io, (enum target_op)77, 0, 4096, iov, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);
		tio_set(&io, TARGET_OP_READ, 0, 4096, iov, 1, &r);
		io.done = NULL;
		CU_ASSERT_EQUAL(target_submit(q, &io), -EINVAL);

		CU_ASSERT_EQUAL(r.calls, 0);
		CU_ASSERT_EQUAL(target_queue_inflight(q), 0);
		CU_ASSERT_EQUAL(target_queue_poll(q, 0), 0);
		/* And a good one still works after all that. */
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, (1 << 20) - 8192, buf, 8192), 0);
		target_queue_close(q);
		target_close(t);
		free(buf);
	}
}

/* A file cut behind the target's back: reads past its end fail, never return garbage. */
static void test_file_end(void)
{
	char path[512];

	tpath(path, sizeof(path), "eof.img");
	FOR_EACH_ENGINE(ei)
	{
		uint8_t *buf = abuf(8192);
		struct target *t;
		struct target_queue *q;
		int fd;

		mkfile(path, 1 << 20);
		t = topen(path, ei, 0, 0);
		q = qopen(t, 4);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		CU_ASSERT_EQUAL(ftruncate(fd, 512 << 10), 0);
		close(fd);
		/* The failures below are logged; keep the test output readable. */
		log_level_cur = LOG_LVL_ERR;
		/* Straddling the end: the first half comes back, the rest is not there. */
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, (512 << 10) - 4096, buf, 8192), -EIO);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 768 << 10, buf, 4096), -EIO);
		log_level_cur = LOG_LVL_INFO;
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, (512 << 10) - 4096, buf, 4096), 0);
		target_queue_close(q);
		target_close(t);
		free(buf);
	}
}

/*
 * A fake engine that does the I/O synchronously at reap, moving at most fake_cap bytes per
 * operation, and can answer the first fake_eagain operations with -EAGAIN.
 */
struct fake_op {
	uint32_t tag;
	enum ioeng_op op;
	const struct iovec *iov;
	unsigned iovcnt;
	uint64_t off;
	int committed;
};

struct fake_eng {
	int fd;
	int efd;
	unsigned n;
	struct fake_op ops[64];
};

static uint64_t fake_cap;
static unsigned fake_eagain;
static int fake_eof; /**< answer every transfer with 0 bytes */
static unsigned fake_calls;

static int fake_open(int fd, int efd, uint32_t depth, struct ioeng **out)
{
	struct fake_eng *f = calloc(1, sizeof(*f));

	if (!f || depth > 64) {
		free(f);
		return -ENOMEM;
	}
	f->fd = fd;
	f->efd = efd;
	*out = (struct ioeng *)f;
	return 0;
}

static void fake_close(struct ioeng *e)
{
	free(e);
}

static int fake_supports(const struct ioeng *e, enum ioeng_op op)
{
	(void)e;
	return op != IOENG_PUNCH;
}

static int fake_prep(struct ioeng *e, uint32_t tag, enum ioeng_op op, const struct iovec *iov,
		     unsigned iovcnt, uint64_t off, uint64_t len)
{
	struct fake_eng *f = (struct fake_eng *)e;

	(void)len;
	if (f->n == 64)
		return -EAGAIN;
	f->ops[f->n++] = (struct fake_op){tag, op, iov, iovcnt, off, 0};
	return 0;
}

static int fake_commit(struct ioeng *e, ioeng_cb_fn *cb, void *arg)
{
	struct fake_eng *f = (struct fake_eng *)e;
	int n = 0;

	(void)cb;
	(void)arg;
	for (unsigned i = 0; i < f->n; i++)
		if (!f->ops[i].committed) {
			f->ops[i].committed = 1;
			n++;
		}
	if (n)
		CU_ASSERT(eventfd_write(f->efd, 1) == 0);
	return n;
}

static uint32_t fake_pending(const struct ioeng *e)
{
	const struct fake_eng *f = (const struct fake_eng *)e;
	uint32_t n = 0;

	for (unsigned i = 0; i < f->n; i++)
		n += !f->ops[i].committed;
	return n;
}

static int fake_reap(struct ioeng *e, int wait, ioeng_cb_fn *cb, void *arg)
{
	struct fake_eng *f = (struct fake_eng *)e;
	struct fake_op done[64];
	unsigned nd = 0, keep = 0;

	(void)wait;
	/* Take the committed ones out first: the callback may prep their remainders. */
	for (unsigned i = 0; i < f->n; i++) {
		if (f->ops[i].committed)
			done[nd++] = f->ops[i];
		else
			f->ops[keep++] = f->ops[i];
	}
	f->n = keep;
	for (unsigned i = 0; i < nd; i++) {
		struct fake_op *o = &done[i];
		struct iovec cut[IOV_MAX];
		unsigned nc = 0;
		uint64_t room = fake_cap;
		int64_t res;

		fake_calls++;
		if (fake_eagain) {
			fake_eagain--;
			cb(arg, o->tag, -EAGAIN);
			continue;
		}
		if (o->op == IOENG_FDATASYNC) {
			cb(arg, o->tag, fdatasync(f->fd) < 0 ? -errno : 0);
			continue;
		}
		if (fake_eof) {
			cb(arg, o->tag, 0);
			continue;
		}
		for (unsigned k = 0; k < o->iovcnt && room; k++) {
			cut[nc] = o->iov[k];
			if (cut[nc].iov_len > room)
				cut[nc].iov_len = room;
			room -= cut[nc].iov_len;
			nc++;
		}
		res = o->op == IOENG_READV ? preadv(f->fd, cut, (int)nc, (off_t)o->off)
					   : pwritev(f->fd, cut, (int)nc, (off_t)o->off);
		cb(arg, o->tag, res < 0 ? -errno : res);
	}
	return (int)nd;
}

static const struct ioeng_ops fake_ops = {
    .name = "fake",
    .open = fake_open,
    .close = fake_close,
    .supports = fake_supports,
    .prep = fake_prep,
    .commit = fake_commit,
    .pending = fake_pending,
    .reap = fake_reap,
};

static void test_short_transfers(void)
{
	char path[512];
	struct target *t;
	struct target_queue *q;
	struct target_io io;
	struct done_rec r;
	uint8_t *src = abuf(3 * 4096), *dst = abuf(3 * 4096);
	struct iovec wiov[3] = {{src, 4096}, {src + 4096, 512}, {src + 4608, 7680}};
	struct iovec riov[2] = {{dst, 1536}, {dst + 1536, 10752}};

	tpath(path, sizeof(path), "short.img");
	mkfile(path, 1 << 20);
	/* Buffered, so the fake engine may stop at any byte. */
	t = topen(path, 0, 0, 1);
	raw_of(t)->eng = &fake_ops;
	q = qopen(t, 8);

	/*
	 * 1000 bytes a call: resumes inside and at iovec boundaries. A resume inside an iovec
	 * sends that iovec's rest alone, so the write takes 5 calls for iov[0] (4 x 1000 + 96),
	 * 9 for the 8192 bytes after it (8 x 1000, then the 192 left inside iov[2]).
	 */
	fake_cap = 1000;
	fake_calls = 0;
	pattern(src, 12288, 4096, 11);
	tio_set(&io, TARGET_OP_WRITE, 4096, 12288, wiov, 3, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), 0);
	CU_ASSERT_EQUAL(fake_calls, 14);
	fake_calls = 0;
	tio_set(&io, TARGET_OP_READ, 4096, 12288, riov, 2, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), 0);
	CU_ASSERT_EQUAL(fake_calls, 13);
	CU_ASSERT(memcmp(src, dst, 12288) == 0);

	/* Transient errors are retried a bounded number of times. */
	fake_cap = UINT64_MAX;
	fake_eagain = 3;
	memset(dst, 0, 12288);
	tio_set(&io, TARGET_OP_READ, 4096, 12288, riov, 2, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), 0);
	CU_ASSERT(memcmp(src, dst, 12288) == 0);
	/* The failures below are logged; keep the test output readable. */
	log_level_cur = LOG_LVL_ERR;
	fake_eagain = RAW_MAX_RETRIES + 1;
	tio_set(&io, TARGET_OP_READ, 4096, 12288, riov, 2, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), -EAGAIN);
	CU_ASSERT_EQUAL(fake_eagain, 0);

	/* A transfer that makes no progress fails instead of spinning or reporting success. */
	fake_eof = 1;
	tio_set(&io, TARGET_OP_READ, 4096, 12288, riov, 2, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), -EIO);
	tio_set(&io, TARGET_OP_WRITE, 4096, 12288, wiov, 3, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), -EIO);
	fake_eof = 0;
	log_level_cur = LOG_LVL_INFO;

	/* The fake has no hole punching: discard runs synchronously and completes on poll. */
	tio_set(&io, TARGET_OP_DISCARD, 4096, 4096, NULL, 0, &r);
	CU_ASSERT_EQUAL(target_submit(q, &io), 0);
	CU_ASSERT_EQUAL(r.calls, 0);
	CU_ASSERT_EQUAL(target_queue_commit(q), 1);
	CU_ASSERT_EQUAL(r.calls, 0); /* done only from poll */
	CU_ASSERT_EQUAL(target_queue_poll(q, 0), 1);
	CU_ASSERT_EQUAL(r.calls, 1);
	CU_ASSERT_EQUAL(r.status, 0);
	tio_set(&io, TARGET_OP_READ, 4096, 12288, riov, 2, &r);
	CU_ASSERT_EQUAL(run_io(q, &io), 0);
	CU_ASSERT(is_zero(dst, 4096));
	CU_ASSERT(memcmp(src + 4096, dst + 4096, 8192) == 0);

	target_queue_close(q);
	target_close(t);
	free(src);
	free(dst);
}

/* The queue's eventfd tells a sleeping thread that completions wait, for both kinds. */
static void test_queue_fd(void)
{
	char path[512];

	tpath(path, sizeof(path), "qfd.img");
	mkfile(path, 1 << 20);
	FOR_EACH_ENGINE(ei)
	{
		struct target *t = topen(path, ei, 0, 0);
		struct target_queue *q = qopen(t, 4);
		uint8_t *buf = abuf(4096);
		struct iovec iov = {buf, 4096};
		struct target_io io;
		struct done_rec r;
		struct pollfd pfd = {.fd = target_queue_fd(q), .events = POLLIN};

		CU_ASSERT(pfd.fd >= 0);
		CU_ASSERT_EQUAL(poll(&pfd, 1, 0), 0);
		tio_set(&io, TARGET_OP_READ, 0, 4096, &iov, 1, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), 0);
		CU_ASSERT_EQUAL(target_queue_commit(q), 1);
		CU_ASSERT_EQUAL(poll(&pfd, 1, 10000), 1);
		CU_ASSERT_EQUAL(target_queue_poll(q, 0), 1);
		CU_ASSERT_EQUAL(r.calls, 1);
		CU_ASSERT_EQUAL(poll(&pfd, 1, 0), 0);

		/* A discard: asynchronous (io_uring) or run at commit (libaio); either wakes. */
		tio_set(&io, TARGET_OP_DISCARD, 0, 4096, NULL, 0, &r);
		CU_ASSERT_EQUAL(target_submit(q, &io), 0);
		CU_ASSERT_EQUAL(target_queue_commit(q), 1);
		CU_ASSERT_EQUAL(poll(&pfd, 1, 10000), 1);
		CU_ASSERT_EQUAL(target_queue_poll(q, 0), 1);
		CU_ASSERT_EQUAL(r.calls, 1);
		CU_ASSERT_EQUAL(r.status, 0);
		target_queue_close(q);
		target_close(t);
		free(buf);
	}
}

/* ---- many random concurrent I/Os against a shadow copy ---- */

#define MIX_FILE   (8u << 20)
#define MIX_BLK	   4096u
#define MIX_NBLK   (MIX_FILE / MIX_BLK)
#define MIX_QD	   32
#define MIX_MAXBLK 16

struct mix_req {
	struct target_io io;
	struct iovec iov[8];
	uint8_t *buf;
	uint32_t blk, nblk;
	int busy;
};

struct mix {
	uint8_t *shadow;
	uint8_t busy[MIX_NBLK];
	struct mix_req req[MIX_QD];
	uint64_t rng;
	unsigned errors, mismatches, completed;
};

static uint64_t mix_rand(struct mix *m)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return m->rng;
}

static void mix_done(struct target_io *io, int status)
{
	struct mix *m = io->priv;
	struct mix_req *rq = (struct mix_req *)io;

	if (status)
		m->errors++;
	if (io->op == TARGET_OP_READ &&
	    memcmp(rq->buf, m->shadow + (uint64_t)rq->blk * MIX_BLK, io->len_bytes) != 0)
		m->mismatches++;
	memset(m->busy + rq->blk, 0, rq->nblk);
	rq->busy = 0;
	m->completed++;
}

/* Pick a free range and split the buffer into up to 8 iovecs at logical-block points. */
static int mix_start(struct mix *m, struct target_queue *q, struct mix_req *rq, uint32_t lb,
		     int can_discard)
{
	uint32_t nblk = 1 + (uint32_t)(mix_rand(m) % MIX_MAXBLK);
	uint32_t blk = (uint32_t)(mix_rand(m) % (MIX_NBLK - nblk + 1));
	unsigned kind = (unsigned)(mix_rand(m) % 100);
	uint64_t len = (uint64_t)nblk * MIX_BLK, pos = 0;
	unsigned n = 0;

	for (uint32_t i = 0; i < nblk; i++)
		if (m->busy[blk + i])
			return 0;
	memset(&rq->io, 0, sizeof(rq->io));
	rq->io.offset_bytes = (uint64_t)blk * MIX_BLK;
	rq->io.len_bytes = len;
	rq->io.done = mix_done;
	rq->io.priv = m;
	if (kind < 2) {
		rq->io.op = TARGET_OP_FLUSH;
		rq->io.offset_bytes = rq->io.len_bytes = 0;
		nblk = 0;
	} else if (kind < 6 && can_discard) {
		rq->io.op = TARGET_OP_DISCARD;
		memset(m->shadow + rq->io.offset_bytes, 0, len);
	} else {
		rq->io.op = kind < 50 ? TARGET_OP_WRITE : TARGET_OP_READ;
		while (pos < len) {
			uint64_t piece = n == 7 ? len - pos : lb * (1 + mix_rand(m) % (len / lb));

			if (piece > len - pos)
				piece = len - pos;
			rq->iov[n++] = (struct iovec){rq->buf + pos, piece};
			pos += piece;
		}
		rq->io.iov = rq->iov;
		rq->io.iovcnt = n;
		if (rq->io.op == TARGET_OP_WRITE) {
			pattern(rq->buf, len, rq->io.offset_bytes, mix_rand(m));
			memcpy(m->shadow + rq->io.offset_bytes, rq->buf, len);
		}
	}
	CU_ASSERT_EQUAL_FATAL(target_submit(q, &rq->io), 0);
	rq->blk = blk;
	rq->nblk = nblk;
	memset(m->busy + blk, 1, nblk);
	rq->busy = 1;
	return 1;
}

static void test_random_mix(void)
{
	char path[512];

	tpath(path, sizeof(path), "mix.img");
	FOR_EACH_ENGINE(ei)
	{
		struct mix *m = calloc(1, sizeof(*m));
		struct target *t;
		struct target_queue *q;
		struct target_info info;
		uint8_t *all = abuf(MIX_FILE);
		unsigned started = 0;
		int fd;

		CU_ASSERT_FATAL(m != NULL);
		mkfile(path, MIX_FILE);
		m->shadow = calloc(1, MIX_FILE);
		m->rng = 0x5eed0000 + ei;
		for (int i = 0; i < MIX_QD; i++)
			m->req[i].buf = abuf(MIX_MAXBLK * MIX_BLK);
		t = topen(path, ei, 0, 0);
		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		q = qopen(t, MIX_QD);

		while (started < 3000) {
			for (int i = 0; i < MIX_QD && started < 3000; i++) {
				if (m->req[i].busy)
					continue;
				if (mix_start(m, q, &m->req[i], info.logical_block,
					      info.discard_granularity != 0))
					started++;
			}
			CU_ASSERT(target_queue_commit(q) >= 0);
			CU_ASSERT(target_queue_poll(q, target_queue_inflight(q) > 0) >= 0);
		}
		while (target_queue_inflight(q))
			CU_ASSERT(target_queue_poll(q, 1) >= 0);
		CU_ASSERT_EQUAL(m->completed, started);
		CU_ASSERT_EQUAL(m->errors, 0);
		CU_ASSERT_EQUAL(m->mismatches, 0);

		/* The whole file, through the target and straight from disk, equals the shadow. */
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 0, all, MIX_FILE), 0);
		CU_ASSERT(memcmp(all, m->shadow, MIX_FILE) == 0);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		CU_ASSERT_EQUAL(pread(fd, all, MIX_FILE, 0), (ssize_t)MIX_FILE);
		CU_ASSERT(memcmp(all, m->shadow, MIX_FILE) == 0);
		close(fd);

		target_queue_close(q);
		target_close(t);
		for (int i = 0; i < MIX_QD; i++)
			free(m->req[i].buf);
		free(m->shadow);
		free(m);
		free(all);
	}
}

/* ---- a block device: a loop device over a file, when the machine lets us attach one ---- */

static int loop_attach(const char *file, char *dev, size_t len, int *lfd_out)
{
	int ctl, bfd, lfd = -1, rc = -EBUSY;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -errno;
	bfd = open(file, O_RDWR | O_CLOEXEC);
	if (bfd < 0) {
		rc = -errno;
		goto out_ctl;
	}
	/* Other tests may race us for the free device: take another one on EBUSY. */
	for (int tries = 0; tries < 16; tries++) {
		struct loop_config cfg = {.fd = (uint32_t)bfd, .block_size = 512};
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);

		if (n < 0) {
			rc = -errno;
			break;
		}
		snprintf(dev, len, "/dev/loop%d", n);
		lfd = open(dev, O_RDWR | O_CLOEXEC);
		if (lfd < 0) {
			rc = -errno;
			break;
		}
		/* Gone with the last close, even if this test dies. */
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
			rc = 0;
			break;
		}
		rc = -errno;
		close(lfd);
		lfd = -1;
		if (rc != -EBUSY)
			break;
	}
	close(bfd);
out_ctl:
	close(ctl);
	if (rc == 0)
		*lfd_out = lfd;
	return rc;
}

static void test_blkdev(void)
{
	char file[512], dev[64];
	int lfd = -1, rc;

	tpath(file, sizeof(file), "loop.img");
	mkfile(file, 16 << 20);
	rc = loop_attach(file, dev, sizeof(dev), &lfd);
	if (rc < 0) {
		printf("\n  (no loop device: %s; block device path not exercised) ", strerror(-rc));
		CU_PASS("no loop device");
		return;
	}
	FOR_EACH_ENGINE(ei)
	{
		struct target *t = topen(dev, ei, 0, 0);
		struct target_queue *q = qopen(t, 8);
		struct target_info info;
		uint8_t *buf = abuf(65536), *rd = abuf(65536);
		int ssz = 0;

		CU_ASSERT_EQUAL(target_info(t, &info), 0);
		CU_ASSERT(ioctl(lfd, BLKSSZGET, &ssz) == 0);
		CU_ASSERT_EQUAL(info.logical_block, (uint32_t)ssz);
		CU_ASSERT_EQUAL(info.size_bytes, 16u << 20);
		CU_ASSERT_EQUAL(info.direct, 1);

		pattern(buf, 65536, 1 << 20, 21 + ei);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_WRITE, 1 << 20, buf, 65536), 0);
		CU_ASSERT_EQUAL(run_op(q, TARGET_OP_FLUSH, 0, 0), 0);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 1 << 20, rd, 65536), 0);
		CU_ASSERT(memcmp(buf, rd, 65536) == 0);
		CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 16 << 20, rd, 4096), -EINVAL);
		if (info.discard_granularity) {
			/* BLKDISCARD: the data may read back as zeros or old data; it must succeed.
			 */
			CU_ASSERT_EQUAL(run_op(q, TARGET_OP_DISCARD, 1 << 20, 65536), 0);
			CU_ASSERT_EQUAL(run_rw(q, TARGET_OP_READ, 1 << 20, rd, 65536), 0);
		}

		/* A device is not resized by its target; it picks up the owner's resize. */
		CU_ASSERT_EQUAL(target_resize(t, 32 << 20), -EOPNOTSUPP);
		CU_ASSERT_EQUAL(target_resize(t, 16 << 20), 0);
		target_queue_close(q);
		target_close(t);
		free(buf);
		free(rd);
	}

	/* The owner grows the device (backing file + LOOP_SET_CAPACITY); the target follows. */
	{
		struct target *t = topen(dev, 0, 0, 0);
		struct target_info info;

		mkfile(file, 24 << 20);
		if (ioctl(lfd, LOOP_SET_CAPACITY, 0) == 0) {
			CU_ASSERT_EQUAL(target_resize(t, 24 << 20), 0);
			CU_ASSERT_EQUAL(target_info(t, &info), 0);
			CU_ASSERT_EQUAL(info.size_bytes, 24u << 20);
		}
		target_close(t);
	}
	close(lfd);
}

/*
 * A shrink while another thread keeps writes in flight near the end: writes already accepted
 * finish before the cut (none re-extends the file), later ones past the end are refused.
 */
#define SHW_QD 16

struct shw {
	struct target *t;
	uint64_t lo, hi;    /**< the writer's range, in bytes */
	int stop;	    /**< atomic */
	unsigned completed; /**< atomic: writes completed */
	unsigned refused;   /**< atomic: submits refused (past the end) */
	unsigned errors;    /**< completions that failed */
	struct target_io io[SHW_QD];
	struct iovec iov[SHW_QD];
	int busy[SHW_QD];
	uint8_t *buf;
};

static void shw_done(struct target_io *io, int status)
{
	struct shw *w = io->priv;

	if (status)
		w->errors++;
	w->busy[io - w->io] = 0;
	__atomic_add_fetch(&w->completed, 1, __ATOMIC_RELEASE);
}

static void *shw_thread(void *arg)
{
	struct shw *w = arg;
	struct target_queue *q = NULL;
	uint64_t x = 12345, nblk = (w->hi - w->lo) / 4096;

	if (target_queue_open(w->t, SHW_QD, &q) < 0)
		return NULL;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < SHW_QD; i++) {
			if (w->busy[i])
				continue;
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			w->iov[i] = (struct iovec){w->buf + i * 4096, 4096};
			w->io[i] = (struct target_io){.op = TARGET_OP_WRITE,
						      .offset_bytes = w->lo + (x % nblk) * 4096,
						      .len_bytes = 4096,
						      .iov = &w->iov[i],
						      .iovcnt = 1,
						      .done = shw_done,
						      .priv = w};
			if (target_submit(q, &w->io[i]) == 0)
				w->busy[i] = 1;
			else
				__atomic_add_fetch(&w->refused, 1, __ATOMIC_RELEASE);
		}
		target_queue_commit(q);
		target_queue_poll(q, target_queue_inflight(q) > 0);
	}
	target_queue_close(q);
	return NULL;
}

static void test_shrink_under_writes(void)
{
	const uint64_t size = 4 << 20;
	char path[512];

	tpath(path, sizeof(path), "shw.img");
	FOR_EACH_ENGINE(ei)
	{
		struct shw *w = calloc(1, sizeof(*w));
		struct target_info info;
		uint64_t deadline;
		pthread_t th;

		mkfile(path, size);
		w->t = topen(path, ei, 0, 0);
		w->lo = size / 2;
		w->hi = size;
		w->buf = abuf(SHW_QD * 4096);
		memset(w->buf, 0x5a, SHW_QD * 4096);
		CU_ASSERT_FATAL(pthread_create(&th, NULL, shw_thread, w) == 0);
		/* Let the writer get going (bounded wait on its progress, not a fixed sleep). */
		deadline = util_now_ns() + 10ull * 1000 * 1000 * 1000;
		while (__atomic_load_n(&w->completed, __ATOMIC_ACQUIRE) < 200 &&
		       util_now_ns() < deadline)
			sched_yield();
		CU_ASSERT(__atomic_load_n(&w->completed, __ATOMIC_ACQUIRE) >= 200);
		CU_ASSERT_EQUAL(target_resize(w->t, size / 2), 0);
		/* From here on every write the thread tries lies past the end. */
		CU_ASSERT_EQUAL(file_size(path), size / 2);
		deadline = util_now_ns() + 10ull * 1000 * 1000 * 1000;
		while (__atomic_load_n(&w->refused, __ATOMIC_ACQUIRE) == 0 &&
		       util_now_ns() < deadline)
			sched_yield();
		__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
		CU_ASSERT(w->refused > 0);
		CU_ASSERT_EQUAL(w->errors, 0);
		CU_ASSERT_EQUAL(file_size(path), size / 2);
		CU_ASSERT_EQUAL(target_info(w->t, &info), 0);
		CU_ASSERT_EQUAL(info.size_bytes, size / 2);
		target_close(w->t);
		free(w->buf);
		free(w);
	}
}

static CU_TestInfo tests[] = {
    {"engine_parse", test_engine_parse},
    {"open_errors", test_open_errors},
    {"rw_iovecs", test_rw_iovecs},
    {"flush", test_flush},
    {"discard", test_discard},
    {"resize", test_resize},
    {"backpressure", test_backpressure},
    {"direct_detect", test_direct_detect},
    {"readonly", test_readonly},
    {"validation", test_validation},
    {"file_end", test_file_end},
    {"short_transfers", test_short_transfers},
    {"queue_fd", test_queue_fd},
    {"random_mix", test_random_mix},
    {"shrink_under_writes", test_shrink_under_writes},
    {"blkdev", test_blkdev},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("target_raw", NULL, NULL, tests)
