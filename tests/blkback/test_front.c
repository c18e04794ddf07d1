/* test_front.c - the raw test frontend (see test_front.h); no suite of its own. */
#include "tests/blkback/test_front.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xenstore.h>

#include "common/util.h"

#define TF_TOKEN "tf"

static int tf_readu(struct tf *f, const char *dir, const char *key, uint64_t *out)
{
	char path[192], *s;
	unsigned len;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", dir, key);
	s = xs_read(f->xs, XBT_NULL, path, &len);
	if (!s)
		return -ENOENT;
	rc = util_parse_u64(s, 0, UINT64_MAX, out);
	free(s);
	return rc;
}

int tf_open(struct tf **out, const char *hv_dir, const char *domain, const char *vdev)
{
	struct tf *f = calloc(1, sizeof(*f));
	char path[192], *s;
	unsigned len;
	uint64_t v;
	size_t memlen;
	int rc;

	if (!f)
		return -ENOMEM;
	f->timeout_ms = 5000;
	rc = hv_guest_open(&f->hv, hv_dir, domain);
	if (rc < 0)
		goto err;
	f->xs = hv_xs_open(f->hv);
	if (!f->xs) {
		rc = -EIO;
		goto err;
	}
	f->domid = hv_domid(f->hv);
	rc = bb_vdev_to_devid(vdev, &f->devid);
	if (rc < 0)
		goto err;
	snprintf(f->fe, sizeof(f->fe), "/local/domain/%u/device/vbd/%u", f->domid, f->devid);
	snprintf(path, sizeof(path), "%s/backend", f->fe);
	s = xs_read(f->xs, XBT_NULL, path, &len);
	if (!s) {
		rc = -ENOENT;
		goto err;
	}
	snprintf(f->be, sizeof(f->be), "%s", s);
	free(s);
	rc = tf_readu(f, f->fe, "backend-id", &v);
	if (rc < 0)
		goto err;
	f->backend_id = (domid_t)v;
	f->mem = hv_guest_mem(f->hv, &memlen);
	rc = hv_guest_alloc_frames(f->hv, TF_MAX_DATA, &f->data_frame);
	if (rc < 0)
		goto err;
	for (unsigned i = 0; i < TF_MAX_DATA; i++) {
		rc = hv_guest_alloc_gref(f->hv, &f->data_refs[i]);
		rc = rc ?: hv_guest_grant(f->hv, f->data_refs[i], f->backend_id,
					  f->data_frame + i, 0);
		if (rc < 0)
			goto err;
	}
	snprintf(path, sizeof(path), "%s/state", f->be);
	if (!xs_watch(f->xs, path, TF_TOKEN)) {
		rc = -EIO;
		goto err;
	}
	*out = f;
	return 0;
err:
	tf_free(f);
	return rc;
}

void *tf_page(struct tf *f, unsigned i)
{
	return f->mem + (size_t)(f->data_frame + i) * HV_PAGE_SIZE;
}

grant_ref_t tf_gref(struct tf *f, unsigned i)
{
	return f->data_refs[i];
}

int tf_regrant(struct tf *f, unsigned i, int ro)
{
	int rc = hv_guest_end_access(f->hv, f->data_refs[i]);

	return rc ?: hv_guest_grant(f->hv, f->data_refs[i], f->backend_id, f->data_frame + i, ro);
}

int tf_be_state(struct tf *f)
{
	uint64_t v;

	return tf_readu(f, f->be, "state", &v) < 0 ? -1 : (int)v;
}

unsigned tf_be_indirect(struct tf *f)
{
	uint64_t v;

	return tf_readu(f, f->be, "feature-max-indirect-segments", &v) < 0 ? 0 : (unsigned)v;
}

int tf_set_state(struct tf *f, int state)
{
	char v[8];

	snprintf(v, sizeof(v), "%d", state);
	return tf_write(f, "state", v);
}

int tf_write(struct tf *f, const char *key, const char *val)
{
	char path[192];

	snprintf(path, sizeof(path), "%s/%s", f->fe, key);
	return xs_write(f->xs, XBT_NULL, path, val, (unsigned)strlen(val)) ? 0 : -EIO;
}

/* Wait on the backend-state watch until the state is one of @mask (1 << state). */
int tf_wait_be_in(struct tf *f, unsigned mask)
{
	uint64_t deadline = util_now_ns() + (uint64_t)f->timeout_ms * 1000000;

	for (;;) {
		struct pollfd p = { .fd = xs_fileno(f->xs), .events = POLLIN };
		uint64_t now = util_now_ns();
		char **vec;
		int st;

		while ((vec = xs_check_watch(f->xs)))
			free(vec);
		st = tf_be_state(f);
		if (st >= 0 && st < 32 && (mask & (1u << st)))
			return 0;
		if (now >= deadline)
			return -ETIMEDOUT;
		poll(&p, 1, (int)((deadline - now) / 1000000) + 1);
	}
}

int tf_wait_be(struct tf *f, int state)
{
	return tf_wait_be_in(f, 1u << state);
}

static int tf_publish(struct tf *f, const struct tf_opts *o)
{
	for (int tries = 0; tries < 16; tries++) {
		xs_transaction_t t = xs_transaction_start(f->xs);
		char path[192], val[32];
		int ok = 1;

#define TFW(p, v) (ok = ok && xs_write(f->xs, t, (p), (v), (unsigned)strlen(v)))
		/* Keys of an earlier connection must not leak into this one. */
		for (unsigned qi = 0; qi < TF_MAX_QUEUES; qi++) {
			snprintf(path, sizeof(path), "%s/queue-%u", f->fe, qi);
			xs_rm(f->xs, t, path);
		}
		for (unsigned i = 0; i < 16; i++) {
			snprintf(path, sizeof(path), "%s/ring-ref%u", f->fe, i);
			xs_rm(f->xs, t, path);
		}
		snprintf(path, sizeof(path), "%s/ring-ref", f->fe);
		xs_rm(f->xs, t, path);
		snprintf(path, sizeof(path), "%s/ring-page-order", f->fe);
		xs_rm(f->xs, t, path);
		snprintf(path, sizeof(path), "%s/multi-queue-num-queues", f->fe);
		xs_rm(f->xs, t, path);
		snprintf(path, sizeof(path), "%s/protocol", f->fe);
		xs_rm(f->xs, t, path);
		for (unsigned qi = 0; qi < f->nq; qi++) {
			char dir[160];

			if (f->nq > 1)
				snprintf(dir, sizeof(dir), "%s/queue-%u", f->fe, qi);
			else
				snprintf(dir, sizeof(dir), "%s", f->fe);
			for (unsigned i = 0; i < (1u << f->order); i++) {
				if (f->order || o->write_order)
					snprintf(path, sizeof(path), "%s/ring-ref%u", dir, i);
				else
					snprintf(path, sizeof(path), "%s/ring-ref", dir);
				snprintf(val, sizeof(val), "%u", f->q[qi].refs[i]);
				TFW(path, qi == 0 && i == 0 && o->ring_ref ? o->ring_ref : val);
			}
			snprintf(path, sizeof(path), "%s/event-channel", dir);
			snprintf(val, sizeof(val), "%u", f->q[qi].port);
			TFW(path, val);
		}
		if (f->nq > 1) {
			snprintf(path, sizeof(path), "%s/multi-queue-num-queues", f->fe);
			snprintf(val, sizeof(val), "%u", f->nq);
			TFW(path, val);
		}
		if (f->order || o->write_order || o->order_str) {
			snprintf(path, sizeof(path), "%s/ring-page-order", f->fe);
			snprintf(val, sizeof(val), "%u", f->order);
			TFW(path, o->order_str ? o->order_str : val);
		}
		if (!o->protocol || o->protocol[0]) {
			snprintf(path, sizeof(path), "%s/protocol", f->fe);
			TFW(path, o->protocol ? o->protocol : "x86_64-abi");
		}
		snprintf(path, sizeof(path), "%s/state", f->fe);
		TFW(path, o->skip_initialised ? "4" : "3");
#undef TFW
		if (!ok) {
			xs_transaction_end(f->xs, t, true);
			return -EIO;
		}
		if (xs_transaction_end(f->xs, t, false))
			return 0;
		if (errno != EAGAIN)
			return -EIO;
	}
	return -EAGAIN;
}

int tf_connect(struct tf *f, const struct tf_opts *o)
{
	uint64_t v;
	int rc;

	if (o->timeout_ms)
		f->timeout_ms = o->timeout_ms;
	rc = tf_wait_be(f, XenbusStateInitWait);
	if (rc < 0)
		return rc;
	f->nq = o->queues > 1 ? o->queues : 1;
	if (f->nq > TF_MAX_QUEUES || o->ring_order > 4)
		return -EINVAL;
	f->order = o->ring_order;
	for (unsigned qi = 0; qi < f->nq; qi++) {
		struct tf_queue *q = &f->q[qi];
		unsigned pages = 1u << f->order;
		blkif_sring_t *s;

		rc = hv_guest_alloc_frames(f->hv, pages, &q->frame);
		if (rc < 0)
			return rc;
		s = (blkif_sring_t *)(f->mem + (size_t)q->frame * HV_PAGE_SIZE);
		SHARED_RING_INIT(s);
		FRONT_RING_INIT(&q->fr, s, (size_t)pages * HV_PAGE_SIZE);
		for (unsigned i = 0; i < pages; i++) {
			rc = hv_guest_alloc_gref(f->hv, &q->refs[i]);
			rc = rc ?: hv_guest_grant(f->hv, q->refs[i], f->backend_id, q->frame + i,
						  0);
			if (rc < 0)
				return rc;
		}
		rc = hv_evtchn_open(f->hv, &q->evt);
		rc = rc ?: hv_evtchn_alloc_unbound(q->evt, f->backend_id, &q->port);
		if (rc < 0)
			return rc;
		f->rings_up = qi + 1;
	}
	rc = tf_publish(f, o);
	if (rc < 0)
		return rc;
	rc = tf_wait_be_in(f, 1u << XenbusStateConnected | 1u << XenbusStateClosing |
				     1u << XenbusStateClosed);
	if (rc < 0)
		return rc;
	if (tf_be_state(f) != XenbusStateConnected)
		return -ECONNREFUSED;
	if (tf_readu(f, f->be, "sectors", &f->sectors) < 0 ||
	    tf_readu(f, f->be, "sector-size", &v) < 0)
		return -EPROTO;
	f->sector_size = (unsigned)v;
	if (tf_readu(f, f->be, "info", &v) == 0)
		f->info = (unsigned)v;
	return tf_set_state(f, XenbusStateConnected);
}

void tf_rings_down(struct tf *f)
{
	for (unsigned qi = 0; qi < f->rings_up; qi++) {
		struct tf_queue *q = &f->q[qi];
		unsigned pages = 1u << f->order;

		hv_evtchn_close(q->evt);
		q->evt = NULL;
		for (unsigned i = 0; i < pages; i++) {
			hv_guest_end_access(f->hv, q->refs[i]);
			hv_guest_free_gref(f->hv, q->refs[i]);
		}
		hv_guest_free_frames(f->hv, q->frame, pages);
	}
	f->rings_up = 0;
}

void tf_free(struct tf *f)
{
	if (!f)
		return;
	if (f->hv) {
		tf_rings_down(f);
		for (unsigned i = 0; i < TF_MAX_DATA; i++) {
			if (!f->data_refs[i])
				continue;
			hv_guest_end_access(f->hv, f->data_refs[i]);
			hv_guest_free_gref(f->hv, f->data_refs[i]);
		}
		if (f->data_frame)
			hv_guest_free_frames(f->hv, f->data_frame, TF_MAX_DATA);
	}
	if (f->xs)
		xs_close(f->xs);
	if (f->hv)
		hv_close(f->hv);
	free(f);
}

struct blkif_request *tf_slot(struct tf *f, unsigned qi)
{
	struct blkif_request *rq = RING_GET_REQUEST(&f->q[qi].fr, f->q[qi].fr.req_prod_pvt);

	memset(rq, 0, sizeof(*rq));
	return rq;
}

void tf_queue_req(struct tf *f, unsigned qi)
{
	f->q[qi].fr.req_prod_pvt++;
}

int tf_push(struct tf *f, unsigned qi)
{
	int notify;

	RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&f->q[qi].fr, notify);
	return notify ? hv_evtchn_notify(f->q[qi].evt, f->q[qi].port) : 0;
}

int tf_wait_rsp(struct tf *f, unsigned qi, struct blkif_response *rsp)
{
	struct tf_queue *q = &f->q[qi];
	uint64_t deadline = util_now_ns() + (uint64_t)f->timeout_ms * 1000000;

	for (;;) {
		struct pollfd p = { .fd = hv_evtchn_fd(q->evt), .events = POLLIN };
		evtchn_port_t port;
		uint64_t now;
		int more;

		if (q->fr.rsp_cons != q->fr.sring->rsp_prod) {
			xen_rmb(); /* the response after the index that published it */
			RING_COPY_RESPONSE(&q->fr, q->fr.rsp_cons, rsp);
			q->fr.rsp_cons++;
			return 0;
		}
		RING_FINAL_CHECK_FOR_RESPONSES(&q->fr, more);
		if (more)
			continue;
		now = util_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)((deadline - now) / 1000000) + 1) == 1)
			while (hv_evtchn_pending(q->evt, &port) > 0)
				hv_evtchn_unmask(q->evt, port);
	}
}

int tf_rw(struct tf *f, unsigned qi, uint8_t op, uint64_t sector, unsigned first, unsigned n,
	  uint64_t id)
{
	struct blkif_request *rq = tf_slot(f, qi);
	struct blkif_response rsp;
	int rc;

	rq->operation = op;
	rq->nr_segments = (uint8_t)n;
	rq->handle = (blkif_vdev_t)f->devid;
	rq->id = id;
	rq->sector_number = sector;
	for (unsigned i = 0; i < n && i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
		rq->seg[i].gref = tf_gref(f, first + i);
		rq->seg[i].first_sect = 0;
		rq->seg[i].last_sect = 7;
	}
	tf_queue_req(f, qi);
	rc = tf_push(f, qi);
	if (rc < 0)
		return rc;
	rc = tf_wait_rsp(f, qi, &rsp);
	if (rc < 0)
		return rc;
	if (rsp.id != id)
		return -EPROTO;
	return rsp.status;
}

int tf_close(struct tf *f)
{
	int rc = tf_set_state(f, XenbusStateClosing);

	/* The backend mirrors Closing (or is already Closed), then we go Closed, and so does it. */
	rc = rc ?: tf_wait_be_in(f, 1u << XenbusStateClosing | 1u << XenbusStateClosed);
	rc = rc ?: tf_set_state(f, XenbusStateClosed);
	rc = rc ?: tf_wait_be(f, XenbusStateClosed);
	tf_rings_down(f);
	return rc;
}
