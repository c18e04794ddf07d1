/*
 * image.c - raw image import and export, through the same request path as guest I/O.
 *
 * Import keeps IMPORT_DEPTH requests of 1 MiB in flight: while the writer commits one group
 * the importer hashes and writes the next chunks, so commits stay grouped.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMPORT_DEPTH 8
#define CHUNK_BLK DEDUP_REQ_MAX_BLK
#define CHUNK_BYTES ((size_t)CHUNK_BLK * DEDUP_BLOCK_BYTES)
#define PROGRESS_EVERY (16ull << 20)

static int read_full(int fd, void *buf, size_t len, off_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

static int write_full(int fd, const void *buf, size_t len, off_t off, int seq)
{
	size_t done = 0;

	while (done < len) {
		const char *p = (const char *)buf + done;
		ssize_t n = seq ? write(fd, p, len - done)
				: pwrite(fd, p, len - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int progress(dedup_progress_fn fn, void *arg, uint64_t done, uint64_t total)
{
	struct dedup_progress p = { .done = done, .total = total };

	return fn && fn(&p, arg) ? -ECANCELED : 0;
}

/* Block until one request completes; returns it and its status. */
static struct dedup_req *wait_one(struct dedup_ctx *c, int *status)
{
	struct dedup_req *r;

	while (!(r = dedup_ctx_reap(c, status))) {
		struct pollfd pfd = { .fd = dedup_ctx_fd(c), .events = POLLIN };

		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return NULL;
	}
	return r;
}

int dedup_vol_import(struct dedup_store *s, const char *name, int fd, dedup_progress_fn fn,
		     void *arg)
{
	struct dedup_req *req[IMPORT_DEPTH] = { 0 };
	void *buf[IMPORT_DEPTH] = { 0 };
	unsigned inflight = 0, free_slots[IMPORT_DEPTH], nfree = IMPORT_DEPTH;
	uint64_t size, off = 0, last_report = 0;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	off_t end;
	int rc, st, err = 0;

	end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return -errno;
	size = (uint64_t)end;
	rc = dedup_vol_open(s, name, &v);
	if (rc)
		return rc;
	if (v->readonly) {
		rc = -EROFS;
		goto out_vol;
	}
	if ((size + DEDUP_BLOCK_BYTES - 1) / DEDUP_BLOCK_BYTES >
	    dedup_vol_size(v) / DEDUP_BLOCK_BYTES) {
		rc = -EFBIG;
		goto out_vol;
	}
	rc = dedup_ctx_open(s, &c);
	if (rc)
		goto out_vol;
	for (unsigned i = 0; i < IMPORT_DEPTH; i++) {
		free_slots[i] = i;
		rc = dedup_req_alloc(CHUNK_BLK, &req[i]);
		if (rc == 0 && posix_memalign(&buf[i], DEDUP_BLOCK_BYTES, CHUNK_BYTES))
			rc = -ENOMEM;
		if (rc)
			goto out_free;
		dedup_req_set_priv(req[i], (void *)(uintptr_t)i);
	}
	rc = progress(fn, arg, 0, size);
	while (rc == 0 && off < size) {
		unsigned i;
		size_t got = 0;
		uint32_t nblk;
		struct iovec iov;
		int io = 0;

		if (!nfree) {
			struct dedup_req *r = wait_one(c, &st);

			if (!r) {
				rc = -errno;
				break;
			}
			inflight--;
			free_slots[nfree++] = (unsigned)(uintptr_t)dedup_req_priv(r);
			if (st) {
				rc = st;
				break;
			}
			continue;
		}
		i = free_slots[--nfree];
		rc = read_full(fd, buf[i], CHUNK_BYTES, (off_t)off, &got);
		if (rc)
			break;
		if (got == 0) {
			rc = -EIO; /* the file shrank under us */
			break;
		}
		nblk = (uint32_t)((got + DEDUP_BLOCK_BYTES - 1) / DEDUP_BLOCK_BYTES);
		memset((char *)buf[i] + got, 0, (size_t)nblk * DEDUP_BLOCK_BYTES - got);
		iov.iov_base = buf[i];
		iov.iov_len = (size_t)nblk * DEDUP_BLOCK_BYTES;
		rc = dedup_write_prepare(c, v, off / DEDUP_BLOCK_BYTES, nblk, &iov, 1, req[i]);
		if (rc)
			break;
		for (unsigned e = 0; e < dedup_req_nr_extents(req[i]) && io == 0; e++)
			io = dedup_extent_io(dedup_req_extent(req[i], e), 1);
		dedup_write_submit(c, req[i], io);
		inflight++;
		off += got;
		if (off - last_report >= PROGRESS_EVERY || off >= size) {
			last_report = off;
			rc = progress(fn, arg, off, size);
		}
	}
	while (inflight) {
		if (!wait_one(c, &st)) {
			err = -errno;
			break;
		}
		inflight--;
		if (st && !err)
			err = st;
	}
	if (rc == 0)
		rc = err;
out_free:
	for (unsigned i = 0; i < IMPORT_DEPTH; i++) {
		dedup_req_free(req[i]);
		free(buf[i]);
	}
	dedup_ctx_close(c);
out_vol:
	dedup_vol_close(v);
	return rc;
}

int dedup_vol_export(struct dedup_store *s, const char *name, int fd, dedup_progress_fn fn,
		     void *arg)
{
	struct dedup_ctx *c;
	struct dedup_vol *v;
	struct stat st;
	uint64_t size, off, last_report = 0;
	int regular, rc;
	char *buf;

	if (fstat(fd, &st) < 0)
		return -errno;
	regular = S_ISREG(st.st_mode);
	rc = dedup_vol_open(s, name, &v);
	if (rc)
		return rc;
	rc = dedup_ctx_open(s, &c);
	if (rc)
		goto out_vol;
	if (posix_memalign((void **)&buf, DEDUP_BLOCK_BYTES, CHUNK_BYTES)) {
		rc = -ENOMEM;
		goto out_ctx;
	}
	size = dedup_vol_size(v);
	/* a fresh sparse file: only non-zero blocks need writing */
	if (regular && (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0)) {
		rc = -errno;
		goto out_buf;
	}
	rc = progress(fn, arg, 0, size);
	for (off = 0; rc == 0 && off < size;) {
		uint32_t nblk = (uint32_t)((size - off) / DEDUP_BLOCK_BYTES < CHUNK_BLK
						   ? (size - off) / DEDUP_BLOCK_BYTES
						   : CHUNK_BLK);

		rc = dedup_vol_read(c, v, off / DEDUP_BLOCK_BYTES, nblk, buf);
		if (rc)
			break;
		if (!regular) {
			rc = write_full(fd, buf, (size_t)nblk * DEDUP_BLOCK_BYTES, 0, 1);
		} else {
			/* runs of non-zero blocks, leaving the zero ones as holes */
			for (uint32_t i = 0; i < nblk && rc == 0;) {
				const size_t bs = DEDUP_BLOCK_BYTES;
				uint32_t j = i;

				while (j < nblk && !dedup_block_is_zero(buf + (size_t)j * bs))
					j++;
				if (j > i)
					rc = write_full(fd, buf + (size_t)i * bs,
							(size_t)(j - i) * bs,
							(off_t)(off + (uint64_t)i * bs), 0);
				i = j + 1;
			}
		}
		off += (uint64_t)nblk * DEDUP_BLOCK_BYTES;
		if (rc == 0 && (off - last_report >= PROGRESS_EVERY || off >= size)) {
			last_report = off;
			rc = progress(fn, arg, off, size);
		}
	}
	if (rc == 0 && regular && fdatasync(fd) < 0)
		rc = -errno;
out_buf:
	free(buf);
out_ctx:
	dedup_ctx_close(c);
out_vol:
	dedup_vol_close(v);
	return rc;
}
