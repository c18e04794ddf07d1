/*
 * journal.c - the write-ahead journal: what the writer applied to its open LMDB transaction
 * since the last checkpoint, one entry per write or discard, so that an acknowledged request
 * survives the loss of that transaction (kill -9, or a transaction that had to be aborted).
 *
 * File DIR/journal, entries back to back from offset 0:
 *
 *   struct jent_hdr (40 bytes) | volume name | items | crc32c (4 bytes, over all before it)
 *
 * A write's items are one per block: kind (1 byte: 0 zero, 1 new, 2 duplicate), then the
 * 32-byte SHA-256 unless zero, then the 8-byte location if new. Every entry carries the
 * journal generation; the index records the last generation a checkpoint committed
 * (META_CKPT_GEN), so entries of older generations (a truncate that did not reach the disk)
 * are never replayed. Reading stops at the first entry that is short, has a bad checksum or
 * belongs to another generation: a torn tail.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JNL_MAGIC 0x314a4444u /* "DDJ1" */

struct jent_hdr {
	uint32_t magic;
	uint32_t len;      /**< whole entry, checksum included */
	uint64_t gen;
	uint8_t type;      /**< JENT_WRITE / JENT_DISCARD */
	uint8_t name_len;
	uint16_t reserved;
	uint32_t nr_items; /**< blocks described (writes) */
	uint64_t first_blk;
	uint64_t nr_blk;
};

_Static_assert(sizeof(struct jent_hdr) == 40, "journal entry header");

/* ---- CRC-32C (Castagnoli), table driven ---------------------------------------------------- */

static uint32_t crc_tab[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_tab[i] = c;
	}
}

uint32_t dedup_crc32c(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = 0xffffffffu;

	pthread_once(&crc_once, crc_init);
	while (len--)
		c = crc_tab[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* ---- encoding ------------------------------------------------------------------------------ */

static int jbuf_room(struct jbuf *jb, size_t more)
{
	if (jb->len + more <= jb->cap)
		return 0;
	size_t cap = jb->cap ? jb->cap : 65536;

	while (cap < jb->len + more)
		cap *= 2;
	uint8_t *p = realloc(jb->buf, cap);

	if (!p)
		return -ENOMEM;
	jb->buf = p;
	jb->cap = cap;
	return 0;
}

static void put(struct jbuf *jb, const void *p, size_t n)
{
	memcpy(jb->buf + jb->len, p, n);
	jb->len += n;
}

/* Append the entry for @rec (applied) to @jb. */
int jnl_encode(struct jbuf *jb, uint64_t gen, const struct wrec *rec)
{
	struct jent_hdr h = { 0 };
	size_t start = jb->len, nlen = strlen(rec->name), max;
	uint32_t crc;
	int rc;

	max = sizeof(h) + nlen + 4;
	if (rec->type == JENT_WRITE)
		max += rec->nr_blk * (1 + HASH_BYTES + 8);
	rc = jbuf_room(jb, max);
	if (rc)
		return rc;
	h.magic = JNL_MAGIC;
	h.gen = gen;
	h.type = rec->type;
	h.name_len = (uint8_t)nlen;
	h.first_blk = rec->first_blk;
	h.nr_blk = rec->nr_blk;
	h.nr_items = rec->type == JENT_WRITE ? (uint32_t)rec->nr_blk : 0;
	put(jb, &h, sizeof(h));
	put(jb, rec->name, nlen);
	for (uint32_t i = 0; i < h.nr_items; i++) {
		const struct req_blk *b = &rec->blk[i];
		uint8_t kind = b->kind == BLK_ZERO ? 0 : b->kind == BLK_NEW ? 1 : 2;

		put(jb, &kind, 1);
		if (kind)
			put(jb, b->hash, HASH_BYTES);
		if (kind == 1)
			put(jb, &b->loc, 8);
	}
	h.len = (uint32_t)(jb->len - start + 4);
	memcpy(jb->buf + start + offsetof(struct jent_hdr, len), &h.len, sizeof(h.len));
	crc = dedup_crc32c(jb->buf + start, jb->len - start);
	put(jb, &crc, 4);
	return 0;
}

/* ---- file ---------------------------------------------------------------------------------- */

int jnl_open(struct dedup_store *s)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/journal", s->dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	s->jfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	return s->jfd < 0 ? -errno : 0;
}

/* Write @len bytes at the journal's end. The bytes are in the kernel when this returns. */
int jnl_append(struct dedup_store *s, uint64_t *off, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(s->jfd, (const char *)buf + done, len - done,
				   (off_t)(*off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	*off += len;
	return 0;
}

int jnl_truncate(struct dedup_store *s)
{
	return ftruncate(s->jfd, 0) < 0 ? -errno : 0;
}

/*
 * Read the journal's entries of generation @gen from the start (at most @limit bytes), calling
 * @fn for each valid one in order. Stops quietly at the end or at a torn/foreign entry; *end
 * gets the offset after the last valid entry. Returns 0, @fn's error, -ENOMEM or -errno.
 */
int jnl_replay(struct dedup_store *s, uint64_t gen, uint64_t limit,
	       int (*fn)(const struct wrec *rec, void *arg), void *arg, uint64_t *end)
{
	struct req_blk *blk = NULL;
	uint8_t *buf = NULL;
	struct stat st;
	size_t off = 0, size;
	int rc = 0;

	*end = 0;
	if (fstat(s->jfd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size < limit ? (size_t)st.st_size : (size_t)limit;
	if (!size)
		return 0;
	buf = malloc(size);
	blk = calloc(DEDUP_REQ_MAX_BLK, sizeof(*blk));
	if (!buf || !blk) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t got = 0; got < size;) {
		ssize_t n = pread(s->jfd, buf + got, size - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			size = got; /* shorter than it said: replay what is there */
			break;
		}
		got += (size_t)n;
	}
	while (off + sizeof(struct jent_hdr) + 4 <= size) {
		struct jent_hdr h;
		char name[DEDUP_NAME_MAX + 1];
		struct wrec rec = { 0 };
		uint32_t crc;
		size_t p;

		memcpy(&h, buf + off, sizeof(h));
		if (h.magic != JNL_MAGIC || h.gen != gen || h.len < sizeof(h) + 4 ||
		    h.len > size - off || h.name_len == 0 || h.name_len > DEDUP_NAME_MAX ||
		    (h.type != JENT_WRITE && h.type != JENT_DISCARD) ||
		    h.nr_items > DEDUP_REQ_MAX_BLK)
			break;
		memcpy(&crc, buf + off + h.len - 4, 4);
		if (crc != dedup_crc32c(buf + off, h.len - 4))
			break;
		p = off + sizeof(h);
		memcpy(name, buf + p, h.name_len);
		name[h.name_len] = '\0';
		p += h.name_len;
		rec.type = h.type;
		rec.name = name;
		rec.first_blk = h.first_blk;
		rec.nr_blk = h.nr_blk;
		rec.blk = blk;
		if (h.type == JENT_WRITE && h.nr_items != h.nr_blk)
			break;
		for (uint32_t i = 0; i < h.nr_items; i++) {
			size_t lim = off + h.len - 4;
			uint8_t kind = p < lim ? buf[p++] : 0xff;

			if (kind > 2 || p + (kind ? HASH_BYTES : 0) + (kind == 1 ? 8 : 0) > lim) {
				p = SIZE_MAX; /* items overrun the entry: not ours */
				break;
			}
			memset(&blk[i], 0, sizeof(blk[i]));
			blk[i].kind = kind == 0 ? BLK_ZERO : kind == 1 ? BLK_NEW : BLK_DUP;
			if (kind) {
				memcpy(blk[i].hash, buf + p, HASH_BYTES);
				p += HASH_BYTES;
			}
			if (kind == 1) {
				memcpy(&blk[i].loc, buf + p, 8);
				p += 8;
			}
		}
		if (p == SIZE_MAX || p + 4 != off + h.len)
			break; /* the items do not fill the entry exactly: not ours */
		rc = fn(&rec, arg);
		if (rc)
			break;
		off += h.len;
		*end = off;
	}
out:
	free(blk);
	free(buf);
	return rc;
}
