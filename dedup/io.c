/*
 * io.c - the I/O path on the callers' threads: contexts, requests, read and write preparation,
 * submission, completion, and the synchronous helpers built on them.
 *
 * Preparation runs on an LMDB read snapshot with rd_lock held shared, and allocates nothing:
 * a request carries its per-block state, extents and iovecs, sized when it was allocated.
 */
#define LOG_TAG "dedup"
#include "common/log.h"
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static struct log_ratelimit io_rl;

/* ---- contexts ------------------------------------------------------------------------------ */

int dedup_ctx_open(struct dedup_store *s, struct dedup_ctx **out)
{
	struct dedup_ctx *c;
	int rc;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->s = s;
	c->md = EVP_MD_CTX_new();
	if (!c->md) {
		rc = -ENOMEM;
		goto err_free;
	}
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->efd < 0) {
		rc = -errno;
		goto err_md;
	}
	/* The read transaction keeps its reader slot for the context's life; prepare renews it
	 * (a couple of atomic operations) instead of beginning a new one. */
	rc = dedup_mdb_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &c->rtxn));
	if (rc)
		goto err_efd;
	mdb_txn_reset(c->rtxn);
	rc = posix_memalign(&c->bounce, DEDUP_BLOCK_BYTES,
			    (size_t)DEDUP_REQ_MAX_BLK * DEDUP_BLOCK_BYTES);
	if (rc) {
		rc = -rc;
		goto err_txn;
	}
	rc = dedup_req_alloc(DEDUP_REQ_MAX_BLK, &c->sreq);
	if (rc)
		goto err_bounce;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	*out = c;
	return 0;

err_bounce:
	free(c->bounce);
err_txn:
	mdb_txn_abort(c->rtxn);
err_efd:
	close(c->efd);
err_md:
	EVP_MD_CTX_free(c->md);
err_free:
	free(c);
	return rc;
}

void dedup_ctx_close(struct dedup_ctx *c)
{
	if (!c)
		return;
	dedup_req_free(c->sreq);
	free(c->bounce);
	mdb_txn_abort(c->rtxn);
	close(c->efd);
	EVP_MD_CTX_free(c->md);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int dedup_ctx_fd(struct dedup_ctx *c)
{
	return c->efd;
}

int ctx_read_begin(struct dedup_ctx *c)
{
	int rc;

	pthread_rwlock_rdlock(&c->s->rd_lock);
	rc = mdb_txn_renew(c->rtxn);
	if (rc) {
		pthread_rwlock_unlock(&c->s->rd_lock);
		return dedup_mdb_err(rc);
	}
	return 0;
}

void ctx_read_end(struct dedup_ctx *c)
{
	mdb_txn_reset(c->rtxn);
	pthread_rwlock_unlock(&c->s->rd_lock);
}

struct dedup_req *dedup_ctx_reap(struct dedup_ctx *c, int *status)
{
	struct dedup_req *r;
	uint64_t v;

	pthread_mutex_lock(&c->lock);
	r = c->done_head;
	if (r) {
		c->done_head = r->next;
		if (!c->done_head)
			c->done_tail = NULL;
		r->next = NULL;
		*status = r->status;
		r->state = RS_IDLE;
	}
	if (!c->done_head && read(c->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_err("eventfd read: %m");
	pthread_mutex_unlock(&c->lock);
	return r;
}

int dedup_req_wait(struct dedup_ctx *c, struct dedup_req *r)
{
	uint64_t v;
	int st;

	pthread_mutex_lock(&c->lock);
	while (r->state != RS_DONE)
		pthread_cond_wait(&c->cond, &c->lock);
	for (struct dedup_req **p = &c->done_head, *prev = NULL; *p; prev = *p, p = &(*p)->next) {
		if (*p != r)
			continue;
		*p = r->next;
		if (c->done_tail == r)
			c->done_tail = prev;
		break;
	}
	r->next = NULL;
	r->state = RS_IDLE;
	st = r->status;
	if (!c->done_head && read(c->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_err("eventfd read: %m");
	pthread_mutex_unlock(&c->lock);
	return st;
}

/* ---- requests ------------------------------------------------------------------------------ */

int dedup_req_alloc(uint32_t max_blk, struct dedup_req **out)
{
	struct dedup_req *r;

	if (max_blk == 0 || max_blk > DEDUP_REQ_MAX_BLK)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->max_blk = max_blk;
	r->ext = calloc(max_blk, sizeof(*r->ext));
	r->ext_ctr = calloc(max_blk, sizeof(*r->ext_ctr));
	r->xiov = calloc(max_blk, sizeof(*r->xiov));
	r->blk = calloc(max_blk, sizeof(*r->blk));
	if (!r->ext || !r->ext_ctr || !r->xiov || !r->blk) {
		dedup_req_free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void dedup_req_free(struct dedup_req *r)
{
	if (!r)
		return;
	free(r->ext);
	free(r->ext_ctr);
	free(r->xiov);
	free(r->blk);
	free(r);
}

void dedup_req_set_priv(struct dedup_req *r, void *priv)
{
	r->priv = priv;
}

void *dedup_req_priv(const struct dedup_req *r)
{
	return r->priv;
}

unsigned dedup_req_nr_extents(const struct dedup_req *r)
{
	return r->nr_ext;
}

const struct dedup_extent *dedup_req_extent(const struct dedup_req *r, unsigned i)
{
	return i < r->nr_ext ? &r->ext[i] : NULL;
}

/* Every element a whole number of blocks, nr_blk blocks in all, so a block never straddles. */
static int iov_check(const struct iovec *iov, unsigned iovcnt, uint32_t nr_blk)
{
	uint64_t total = 0;

	for (unsigned i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len % DEDUP_BLOCK_BYTES)
			return -EINVAL;
		total += iov[i].iov_len;
	}
	return total == (uint64_t)nr_blk * DEDUP_BLOCK_BYTES ? 0 : -EINVAL;
}

struct iov_cursor {
	const struct iovec *iov;
	unsigned i;
	size_t off;
};

static char *iov_next_block(struct iov_cursor *ic)
{
	char *p;

	while (ic->off == ic->iov[ic->i].iov_len) {
		ic->i++;
		ic->off = 0;
	}
	p = (char *)ic->iov[ic->i].iov_base + ic->off;
	ic->off += DEDUP_BLOCK_BYTES;
	return p;
}

/* Append one block's buffer to extent @e, merging with the previous iovec when adjacent. */
static void ext_add_block(struct dedup_req *r, struct dedup_extent *e, char *p)
{
	struct iovec *last = e->iovcnt ? (struct iovec *)&e->iov[e->iovcnt - 1] : NULL;

	if (last && (char *)last->iov_base + last->iov_len == p) {
		last->iov_len += DEDUP_BLOCK_BYTES;
	} else {
		struct iovec *v = &r->xiov[(e->iov - r->xiov) + e->iovcnt];

		v->iov_base = p;
		v->iov_len = DEDUP_BLOCK_BYTES;
		e->iovcnt++;
	}
	e->nr_blk++;
}

static struct dedup_extent *ext_new(struct dedup_req *r, int fd, uint64_t off)
{
	struct dedup_extent *e = &r->ext[r->nr_ext];
	unsigned used = 0;

	/* iovecs of the extents are laid out back to back in xiov */
	if (r->nr_ext)
		used = (unsigned)(r->ext[r->nr_ext - 1].iov - r->xiov) +
		       r->ext[r->nr_ext - 1].iovcnt;
	e->fd = fd;
	e->offset_bytes = off;
	e->iov = &r->xiov[used];
	e->iovcnt = 0;
	e->nr_blk = 0;
	r->nr_ext++;
	return e;
}

static int req_check(struct dedup_req *r)
{
	if (r->state == RS_QUEUED || (r->state == RS_DONE))
		return -EBUSY; /* still owned by the writer or not reaped */
	return 0;
}

/* ---- reads --------------------------------------------------------------------------------- */

static int rd_node(MDB_txn *txn, struct dedup_store *s, uint64_t id, unsigned level,
		   const struct node **out)
{
	MDB_val k = { sizeof(id), &id }, d;
	const struct node *n;
	int rc = mdb_get(txn, s->dbi_nodes, &k, &d);

	if (rc)
		return rc == MDB_NOTFOUND ? -EIO : dedup_mdb_err(rc);
	n = d.mv_data;
	if (!node_val_ok(d.mv_data, d.mv_size) || n->h.magic != NODE_MAGIC || n->h.level != level)
		return -EIO;
	*out = n;
	return 0;
}

/* The leaf holding @lba, or NULL when its subtree is empty. Pointers live as long as @txn. */
static int rd_leaf(MDB_txn *txn, struct dedup_store *s, const struct vol_rec *vr, uint64_t lba,
		   const struct node **leaf)
{
	uint64_t id = vr->root;
	const struct node *n;
	int rc;

	*leaf = NULL;
	for (unsigned l = vr->levels - 1; id && l > 0; l--) {
		rc = rd_node(txn, s, id, l, &n);
		if (rc)
			return rc;
		id = n->child[(lba / levels_span(l - 1)) % INNER_FANOUT];
	}
	if (!id)
		return 0;
	return rd_node(txn, s, id, 0, leaf);
}

static void read_unpin(struct dedup_req *r)
{
	for (unsigned i = 0; i < r->nr_ext; i++) {
		if (r->ext_ctr[i])
			ctr_put(r->ext_ctr[i]);
		r->ext_ctr[i] = NULL;
	}
	r->nr_ext = 0;
}

int dedup_read_prepare(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
		       uint32_t nr_blk, const struct iovec *iov, unsigned iovcnt,
		       struct dedup_req *r)
{
	struct dedup_store *s = c->s;
	struct iov_cursor ic = { iov, 0, 0 };
	const struct node *leaf = NULL;
	uint64_t leaf_no = UINT64_MAX;
	struct dedup_extent *e = NULL;
	uint64_t e_last = 0;
	struct vol_rec vr;
	int rc;

	if (nr_blk == 0 || nr_blk > r->max_blk || iov_check(iov, iovcnt, nr_blk))
		return -EINVAL;
	rc = req_check(r);
	if (rc)
		return rc;
	r->kind = REQ_READ;
	r->ctx = c;
	r->vol = v;
	r->first_blk = first_blk;
	r->nr_blk = nr_blk;
	r->nr_ext = 0;
	rc = ctx_read_begin(c);
	if (rc)
		return rc;
	rc = vol_rec_read(c->rtxn, s, v->name, &vr);
	if (rc)
		goto out_end;
	if (first_blk > vr.size_bytes / DEDUP_BLOCK_BYTES ||
	    nr_blk > vr.size_bytes / DEDUP_BLOCK_BYTES - first_blk) {
		rc = -EINVAL;
		goto out_end;
	}
	for (uint32_t i = 0; i < nr_blk; i++) {
		uint64_t lba = first_blk + i, loc;
		uint8_t oh[HASH_BYTES];
		const uint8_t *h = NULL;
		struct content_val cv;
		char *p = iov_next_block(&ic);

		/* what the writer applied since its last checkpoint, then the snapshot */
		if (ovl_lookup_blk(v->vs, lba, oh)) {
			h = oh;
		} else {
			if (lba / LEAF_FANOUT != leaf_no) {
				rc = rd_leaf(c->rtxn, s, &vr, lba, &leaf);
				if (rc)
					goto out_unpin;
				leaf_no = lba / LEAF_FANOUT;
			}
			if (leaf)
				h = leaf->hash[lba % LEAF_FANOUT];
		}
		if (!h || dedup_hash_is_zero(h)) {
			memset(p, 0, DEDUP_BLOCK_BYTES);
			continue;
		}
		if (ovl_lookup_content(s, h, &loc))
			cv.loc = loc, rc = 0;
		else
			rc = content_get(c->rtxn, s, h, &cv);
		if (rc) {
			if (rc == -ENOENT) {
				LOG_RATELIMITED(&io_rl, LOG_LVL_ERR,
						"%s: block %llu names content the index lacks",
						v->name, (unsigned long long)lba);
				rc = -EIO;
			}
			goto out_unpin;
		}
		loc = cv.loc;
		if (e && i == e_last + 1 && r->ext_ctr[r->nr_ext - 1]->cid == LOC_CID(loc) &&
		    e->offset_bytes + (uint64_t)e->nr_blk * DEDUP_BLOCK_BYTES ==
			    (uint64_t)LOC_SLOT(loc) * DEDUP_BLOCK_BYTES) {
			ext_add_block(r, e, p);
			e_last = i;
			continue;
		}
		struct ctr *ct = ctr_lookup(s, LOC_CID(loc));

		if (!ct) {
			LOG_RATELIMITED(&io_rl, LOG_LVL_ERR,
					"%s: block %llu: container %llx missing", v->name,
					(unsigned long long)lba, (unsigned long long)LOC_CID(loc));
			rc = -EIO;
			goto out_unpin;
		}
		/* pinned under rd_lock: the collector cannot close it before read_finish */
		atomic_fetch_add_explicit(&ct->refs, 1, memory_order_relaxed);
		r->ext_ctr[r->nr_ext] = ct;
		e = ext_new(r, ct->fd, (uint64_t)LOC_SLOT(loc) * DEDUP_BLOCK_BYTES);
		ext_add_block(r, e, p);
		e_last = i;
	}
	rc = 0;
	r->state = RS_PREPARED;
	goto out_end;

out_unpin:
	read_unpin(r);
out_end:
	ctx_read_end(c);
	return rc;
}

void dedup_read_finish(struct dedup_ctx *c, struct dedup_req *r)
{
	(void)c;
	read_unpin(r);
	r->state = RS_IDLE;
}

/* ---- writes -------------------------------------------------------------------------------- */

static void write_unwind(struct dedup_req *r, uint32_t upto)
{
	for (uint32_t i = 0; i < upto; i++) {
		if (r->blk[i].ctr)
			atomic_fetch_sub_explicit(&r->blk[i].ctr->inflight, 1,
						  memory_order_release);
		r->blk[i].ctr = NULL;
	}
}

/* Find an earlier block of the request with the same name (requests are small). */
static int same_before(const struct dedup_req *r, uint32_t i)
{
	for (uint32_t j = 0; j < i; j++)
		if (r->blk[j].kind != BLK_ZERO && memcmp(r->blk[j].hash, r->blk[i].hash,
							 HASH_BYTES) == 0)
			return (int)(r->blk[j].kind == BLK_SAME ? r->blk[j].same_as : j);
	return -1;
}

int dedup_write_prepare(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
			uint32_t nr_blk, const struct iovec *iov, unsigned iovcnt,
			struct dedup_req *r)
{
	struct dedup_store *s = c->s;
	struct iov_cursor ic = { iov, 0, 0 };
	uint64_t size_blk = dedup_vol_size(v) / DEDUP_BLOCK_BYTES;
	uint32_t nnew = 0;
	struct dedup_extent *e = NULL;
	char *ptrs[DEDUP_REQ_MAX_BLK];
	int rc;

	if (v->readonly)
		return -EROFS;
	if (nr_blk == 0 || nr_blk > r->max_blk || iov_check(iov, iovcnt, nr_blk) ||
	    first_blk > size_blk || nr_blk > size_blk - first_blk)
		return -EINVAL;
	rc = req_check(r);
	if (rc)
		return rc;
	r->kind = REQ_WRITE;
	r->ctx = c;
	r->vol = v;
	r->first_blk = first_blk;
	r->nr_blk = nr_blk;
	r->nr_ext = 0;

	/* Hashing needs no lock; do it before taking the read snapshot. */
	for (uint32_t i = 0; i < nr_blk; i++) {
		struct req_blk *b = &r->blk[i];

		ptrs[i] = iov_next_block(&ic);
		b->ctr = NULL;
		if (dedup_block_is_zero(ptrs[i])) {
			b->kind = BLK_ZERO;
			continue;
		}
		dedup_sha256(c->md, s->sha256, ptrs[i], b->hash);
		b->kind = BLK_NEW;
	}
	rc = ctx_read_begin(c);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < nr_blk; i++) {
		struct req_blk *b = &r->blk[i];
		struct content_val cv;
		struct ctr *ct;
		int j;

		if (b->kind == BLK_ZERO)
			continue;
		j = same_before(r, i);
		if (j >= 0) {
			b->kind = BLK_SAME;
			b->same_as = (uint16_t)j;
			continue;
		}
		uint64_t loc;

		if (ovl_lookup_content(s, b->hash, &loc))
			cv.loc = loc, rc = 0; /* stored since the last checkpoint */
		else
			rc = content_get(c->rtxn, s, b->hash, &cv);
		if (rc == 0) {
			ct = ctr_lookup(s, LOC_CID(cv.loc));
			/*
			 * The inflight count, taken while the collector cannot be retiring the
			 * container unseen (rd_lock), keeps the entry and its data until this
			 * request completes. A retiring container is about to move its blocks:
			 * store a fresh copy instead.
			 */
			if (ct && !atomic_load_explicit(&ct->retiring, memory_order_acquire)) {
				atomic_fetch_add_explicit(&ct->inflight, 1, memory_order_acquire);
				b->ctr = ct;
				b->kind = BLK_DUP;
				continue;
			}
		} else if (rc != -ENOENT) {
			ctx_read_end(c);
			write_unwind(r, i);
			return rc;
		}
		nnew++;
	}
	ctx_read_end(c);

	/* New content: consecutive slots, written as few extents as the containers allow. */
	for (uint32_t i = 0; nnew && i < nr_blk;) {
		struct ctr *ct;
		uint32_t slot, got;

		rc = ctr_alloc(s, nnew, &ct, &slot, &got);
		if (rc) {
			write_unwind(r, nr_blk);
			r->nr_ext = 0;
			return rc;
		}
		e = ext_new(r, ct->fd, (uint64_t)slot * DEDUP_BLOCK_BYTES);
		for (; got && i < nr_blk; i++) {
			struct req_blk *b = &r->blk[i];

			if (b->kind != BLK_NEW)
				continue;
			b->ctr = ct;
			b->loc = LOC_MAKE(ct->cid, slot + e->nr_blk);
			ext_add_block(r, e, ptrs[i]);
			got--;
			nnew--;
		}
	}
	r->state = RS_PREPARED;
	return 0;
}

void dedup_write_submit(struct dedup_ctx *c, struct dedup_req *r, int io_status)
{
	(void)c;
	if (io_status < 0) {
		req_complete(r, io_status);
		return;
	}
	writer_enqueue(c->s, r);
}

int dedup_discard_submit(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
			 uint64_t nr_blk, struct dedup_req *r)
{
	uint64_t size_blk = dedup_vol_size(v) / DEDUP_BLOCK_BYTES;
	int rc;

	if (v->readonly)
		return -EROFS;
	if (nr_blk == 0 || first_blk > size_blk || nr_blk > size_blk - first_blk)
		return -EINVAL;
	rc = req_check(r);
	if (rc)
		return rc;
	r->kind = REQ_DISCARD;
	r->ctx = c;
	r->vol = v;
	r->first_blk = first_blk;
	r->nr_blk = nr_blk;
	r->nr_ext = 0;
	writer_enqueue(c->s, r);
	return 0;
}

int dedup_flush_submit(struct dedup_ctx *c, struct dedup_req *r)
{
	int rc = req_check(r);

	if (rc)
		return rc;
	r->kind = REQ_FLUSH;
	r->ctx = c;
	r->vol = NULL;
	r->nr_blk = 0;
	r->nr_ext = 0;
	writer_enqueue(c->s, r);
	return 0;
}

/* ---- synchronous helpers ------------------------------------------------------------------- */

int dedup_extent_io(const struct dedup_extent *e, int write)
{
	struct iovec iov[DEDUP_REQ_MAX_BLK];
	unsigned cnt = e->iovcnt, first = 0;
	off_t off = (off_t)e->offset_bytes;

	memcpy(iov, e->iov, cnt * sizeof(*iov));
	while (first < cnt) {
		ssize_t n = write ? pwritev(e->fd, iov + first, (int)(cnt - first), off)
				  : preadv(e->fd, iov + first, (int)(cnt - first), off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* reading past the end of a preallocated container */
		off += n;
		while (n > 0 && first < cnt) {
			if ((size_t)n >= iov[first].iov_len) {
				n -= (ssize_t)iov[first].iov_len;
				first++;
			} else {
				iov[first].iov_base = (char *)iov[first].iov_base + n;
				iov[first].iov_len -= (size_t)n;
				n = 0;
			}
		}
	}
	return 0;
}

static int misaligned(struct dedup_store *s, const void *buf)
{
	return s->direct && ((uintptr_t)buf % DEDUP_BLOCK_BYTES);
}

int dedup_vol_read(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk, uint32_t nr_blk,
		   void *buf)
{
	struct dedup_req *r = c->sreq;

	while (nr_blk) {
		uint32_t n = nr_blk < DEDUP_REQ_MAX_BLK ? nr_blk : DEDUP_REQ_MAX_BLK;
		int bounce = misaligned(c->s, buf);
		struct iovec iov = { bounce ? c->bounce : buf, (size_t)n * DEDUP_BLOCK_BYTES };
		int rc = dedup_read_prepare(c, v, first_blk, n, &iov, 1, r);

		if (rc)
			return rc;
		for (unsigned i = 0; i < r->nr_ext && rc == 0; i++)
			rc = dedup_extent_io(&r->ext[i], 0);
		dedup_read_finish(c, r);
		if (rc)
			return rc;
		if (bounce)
			memcpy(buf, c->bounce, iov.iov_len);
		buf = (char *)buf + iov.iov_len;
		first_blk += n;
		nr_blk -= n;
	}
	return 0;
}

int dedup_vol_write(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
		    uint32_t nr_blk, const void *buf)
{
	struct dedup_req *r = c->sreq;

	while (nr_blk) {
		uint32_t n = nr_blk < DEDUP_REQ_MAX_BLK ? nr_blk : DEDUP_REQ_MAX_BLK;
		int bounce = misaligned(c->s, buf);
		struct iovec iov = { bounce ? c->bounce : (void *)buf,
				     (size_t)n * DEDUP_BLOCK_BYTES };
		int rc, io = 0;

		if (bounce)
			memcpy(c->bounce, buf, iov.iov_len);
		rc = dedup_write_prepare(c, v, first_blk, n, &iov, 1, r);
		if (rc)
			return rc;
		for (unsigned i = 0; i < r->nr_ext && io == 0; i++)
			io = dedup_extent_io(&r->ext[i], 1);
		dedup_write_submit(c, r, io);
		rc = dedup_req_wait(c, r);
		if (rc)
			return rc;
		buf = (const char *)buf + iov.iov_len;
		first_blk += n;
		nr_blk -= n;
	}
	return 0;
}

int dedup_vol_discard(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
		      uint64_t nr_blk)
{
	int rc = dedup_discard_submit(c, v, first_blk, nr_blk, c->sreq);

	return rc ? rc : dedup_req_wait(c, c->sreq);
}

int dedup_ctx_flush(struct dedup_ctx *c)
{
	int rc = dedup_flush_submit(c, c->sreq);

	return rc ? rc : dedup_req_wait(c, c->sreq);
}
