/*
 * vbd.c - volumes and vbds: opening a volume's target once for every vbd that uses it, mapping
 * and unmapping a vbd's rings, starting and stopping their threads, online resize, and summing
 * a vbd's statistics. Runs on the control thread.
 */
#define LOG_TAG "blkback"
#include "blkback/blkback_internal.h"
#include "blkback/target_dedup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * ---- Volumes ----
 */

static struct bb_vol *vol_find(struct blkback *bb, const char *name)
{
	for (struct bb_vol *vol = bb->vols; vol; vol = vol->next)
		if (strcmp(vol->name, name) == 0)
			return vol;
	return NULL;
}

/* Open @name's target: writable when the file allows (a read-only attach is enforced per vbd). */
static int vol_open_target(struct blkback *bb, const char *name, struct target **t)
{
	struct target_open_opts o = { .engine = bb->opts.engine, .no_direct = bb->opts.no_direct };
	struct pool_vol pv;
	char path[512];
	int rc;

	rc = pool_vol_get(bb->opts.pool, name, &pv);
	if (rc < 0)
		return rc;
	if (strcmp(pv.store, POOL_STORE_DEDUP) == 0)
		return bb->dedup ? target_dedup_open(bb->dedup, name, &o, t) : -ENODEV;
	rc = pool_vol_path(bb->opts.pool, name, path, sizeof(path));
	if (rc < 0)
		return rc;
	rc = target_raw_open(path, &o, t);
	if (rc == -EACCES || rc == -EROFS || rc == -EPERM) {
		o.readonly = 1;
		rc = target_raw_open(path, &o, t);
	}
	return rc;
}

static int vol_get(struct blkback *bb, const char *name, struct bb_vol **out)
{
	struct bb_vol *vol = vol_find(bb, name);
	struct pool_vol pv;
	int rc;

	if (vol) {
		vol->refs++;
		*out = vol;
		return 0;
	}
	rc = pool_vol_get(bb->opts.pool, name, &pv);
	if (rc < 0)
		return rc;
	vol = calloc(1, sizeof(*vol));
	if (!vol)
		return -ENOMEM;
	snprintf(vol->name, sizeof(vol->name), "%s", name);
	rc = vol_open_target(bb, name, &vol->target);
	if (rc < 0)
		goto err_free;
	rc = target_info(vol->target, &vol->info);
	if (rc < 0)
		goto err_close;
	vol->refs = 1;
	vol->sim_idx = bb->next_sim_idx++ & 0xffffff; /* 2^24 regions of 1 TiB in 64 bits */
	vol->next = bb->vols;
	bb->vols = vol;
	*out = vol;
	return 0;

err_close:
	target_close(vol->target);
err_free:
	free(vol);
	return rc;
}

static void vol_put(struct blkback *bb, struct bb_vol *vol)
{
	struct bb_vol **pp;

	if (--vol->refs > 0)
		return;
	for (pp = &bb->vols; *pp; pp = &(*pp)->next) {
		if (*pp == vol) {
			*pp = vol->next;
			break;
		}
	}
	target_close(vol->target);
	free(vol);
}

int bb_vbd_open_vol(struct bb_vbd *v)
{
	struct bb_vol *vol;
	int rc;

	rc = vol_get(v->bb, v->vol_name, &vol);
	if (rc < 0)
		return rc;
	v->vol = vol;
	if (vol->info.readonly && !v->ro) {
		log_warn("%s: volume %s is read-only on disk; serving it read-only", v->name,
			 vol->name);
		v->ro = 1;
	}
	v->logical_block = vol->info.logical_block ? vol->info.logical_block : 512;
	v->physical_block = vol->info.physical_block >= v->logical_block
				    ? vol->info.physical_block
				    : v->logical_block;
	v->discard_granularity = vol->info.discard_granularity;
	v->feat_discard = vol->info.discard_granularity && !v->ro;
	/* WRITE_BARRIER is served as Linux does: drain the ring, then flush-write-flush. */
	v->feat_barrier = 1;
	bb_vbd_set_size(v, vol->info.size_bytes);
	return 0;
}

void bb_vbd_close_vol(struct bb_vbd *v)
{
	if (!v->vol)
		return;
	vol_put(v->bb, v->vol);
	v->vol = NULL;
}

void bb_vbd_set_size(struct bb_vbd *v, uint64_t size_bytes)
{
	__atomic_store_n(&v->size_sect, size_bytes >> BB_SECT_SHIFT, __ATOMIC_RELEASE);
}

/*
 * ---- Rings ----
 */

static void ring_teardown(struct bb_vbd *v, struct bb_ring *r)
{
	int rc;

	bb_ring_stop(r);
	bb_stats_add(&v->retired, &r->st);
	bb_ring_fini(r);
	if (r->evt) {
		hv_evtchn_close(r->evt); /* unbinds the port */
		r->evt = NULL;
	}
	if (r->sring) {
		rc = hv_gnttab_unmap_contig(r->gnt, r->sring, r->nr_pages);
		if (rc < 0)
			log_err("%s: unmapping the ring failed: %s", r->name, hv_strerror(rc));
		r->sring = NULL;
	}
	if (r->gnt) {
		hv_gnttab_close(r->gnt);
		r->gnt = NULL;
	}
}

static int ring_setup(struct bb_vbd *v, struct bb_ring *r, unsigned qidx,
		      const struct bb_ring_desc *d, unsigned nr_rings, char *why, size_t why_len)
{
	struct blkback *bb = v->bb;
	int rc;

	r->vbd = v;
	r->qidx = qidx;
	r->domid = v->domid;
	r->ops = &bb_ring_hv_ops;
	r->target = v->vol->target;
	r->max_segs = bb->opts.max_indirect_segs > BB_DIRECT_SEGS ? bb->opts.max_indirect_segs
								    : BB_DIRECT_SEGS;
	r->persistent = v->persistent;
	r->poll_ns = (uint64_t)bb->opts.poll_us * 1000;
	r->stop_efd = r->wake_efd = r->timer_fd = -1;
	r->nr_pages = d->nr_pages;
	r->remote_port = d->port;
	memcpy(r->ring_refs, d->refs, d->nr_pages * sizeof(d->refs[0]));
	if (nr_rings > 1)
		snprintf(r->name, sizeof(r->name), "%s q%u", v->name, qidx);
	else
		snprintf(r->name, sizeof(r->name), "%s", v->name);

	rc = hv_gnttab_open(bb->hv, &r->gnt);
	if (rc < 0) {
		snprintf(why, why_len, "cannot open the grant table: %s", hv_strerror(rc));
		goto err;
	}
	rc = hv_gnttab_map_contig(r->gnt, v->domid, r->nr_pages, r->ring_refs,
				  HV_PROT_READ | HV_PROT_WRITE, &r->sring);
	if (rc < 0) {
		snprintf(why, why_len, "cannot map ring %u (%u page%s, first ref %u): %s", qidx,
			 r->nr_pages, r->nr_pages > 1 ? "s" : "", r->ring_refs[0],
			 hv_strerror(rc));
		r->sring = NULL;
		goto err;
	}
	rc = hv_evtchn_open(bb->hv, &r->evt);
	if (rc < 0) {
		snprintf(why, why_len, "cannot open event channels: %s", hv_strerror(rc));
		goto err;
	}
	rc = hv_evtchn_bind_interdomain(r->evt, v->domid, r->remote_port, &r->port);
	if (rc < 0) {
		snprintf(why, why_len, "cannot bind event channel %u of ring %u: %s",
			 r->remote_port, qidx, hv_strerror(rc));
		goto err;
	}
	rc = bb_ring_init(r);
	if (rc < 0) {
		snprintf(why, why_len, "ring %u: %s", qidx,
			 rc == -EPROTO ? "it holds more requests than it has slots"
				       : "out of memory for the request pool");
		goto err;
	}
	rc = bb_ring_start(r);
	if (rc < 0) {
		snprintf(why, why_len, "cannot start the thread of ring %u: %s", qidx,
			 strerror(-rc));
		goto err;
	}
	return 0;

err:
	ring_teardown(v, r);
	return rc;
}

int bb_vbd_connect_rings(struct bb_vbd *v, const struct bb_ring_desc *d, unsigned nr_rings,
			 char *why, size_t why_len)
{
	unsigned i;
	int rc;

	if (!v->vol) {
		snprintf(why, why_len, "the volume is not open");
		return -ENODEV;
	}
	v->rings = calloc(nr_rings, sizeof(*v->rings));
	if (!v->rings) {
		snprintf(why, why_len, "out of memory for %u rings", nr_rings);
		return -ENOMEM;
	}
	for (i = 0; i < nr_rings; i++) {
		rc = ring_setup(v, &v->rings[i], i, &d[i], nr_rings, why, why_len);
		if (rc < 0)
			goto err;
	}
	v->nr_rings = nr_rings;
	bb_qos_vbd_connect(v);
	return 0;

err:
	while (i-- > 0)
		ring_teardown(v, &v->rings[i]);
	free(v->rings);
	v->rings = NULL;
	return rc;
}

void bb_vbd_disconnect(struct bb_vbd *v)
{
	/* Idempotent: Closing then Closed, or a reconnect, may each ask for it. */
	if (!v->rings)
		return;
	/* Ask every ring to stop first, so they drain in parallel, then join them one by one. */
	for (unsigned i = 0; i < v->nr_rings; i++)
		__atomic_store_n(&v->rings[i].stopping, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < v->nr_rings; i++)
		bb_ring_stop(&v->rings[i]);
	/* Before the rings' wake fds close: the scheduler may wake this vbd until it is gone. */
	bb_qos_vbd_disconnect(v);
	for (unsigned i = 0; i < v->nr_rings; i++)
		ring_teardown(v, &v->rings[i]);
	free(v->rings);
	v->rings = NULL;
	v->nr_rings = 0;
	__atomic_store_n(&v->need_disconnect, 0, __ATOMIC_RELAXED);
	LOG_RATELIMITED(&v->rl, LOG_LVL_INFO, "%s: disconnected", v->name);
}

void bb_vbd_stats(const struct bb_vbd *v, struct bb_stats *out)
{
	memset(out, 0, sizeof(*out));
	bb_stats_add(out, &v->retired);
	for (unsigned i = 0; i < v->nr_rings; i++)
		bb_stats_add(out, &v->rings[i].st);
}

/*
 * ---- Online resize ----
 */

static void set_vol_size(struct blkback *bb, const char *vol, uint64_t size_bytes)
{
	for (struct bb_vbd *v = bb->vbds; v; v = v->next)
		if (v->vol && strcmp(v->vol->name, vol) == 0)
			bb_vbd_set_size(v, size_bytes);
}

int bb_vol_resize(struct blkback *bb, const char *name, uint64_t size_bytes, int shrink,
		  uint64_t *old_bytes, char *why, size_t why_len)
{
	struct bb_vol *vol = vol_find(bb, name);
	struct target *tmp = NULL, *t;
	struct target_info info;
	struct pool_vol pv;
	uint32_t lb;
	int rc;

	rc = pool_vol_get(bb->opts.pool, name, &pv);
	if (rc < 0) {
		snprintf(why, why_len, rc == -ENOENT ? "no volume named '%s' in the pool"
						     : "cannot read the metadata of volume '%s'",
			 name);
		return rc;
	}
	if (vol) {
		t = vol->target;
	} else {
		rc = vol_open_target(bb, name, &tmp);
		if (rc < 0) {
			snprintf(why, why_len, "cannot open volume '%s': %s", name, strerror(-rc));
			return rc;
		}
		t = tmp;
	}
	rc = target_info(t, &info);
	if (rc < 0) {
		snprintf(why, why_len, "cannot read the size of volume '%s': %s", name,
			 strerror(-rc));
		goto out;
	}
	*old_bytes = info.size_bytes;
	lb = info.logical_block > 512 ? info.logical_block : 512;
	if (size_bytes == 0 || size_bytes % lb) {
		snprintf(why, why_len, "the new size must be a positive multiple of %u bytes", lb);
		rc = -EINVAL;
		goto out;
	}
	if (size_bytes < info.size_bytes && !shrink) {
		snprintf(why, why_len,
			 "shrinking volume '%s' loses the data past the new end; ask for a shrink "
			 "explicitly",
			 name);
		rc = -EPERM;
		goto out;
	}
	if (info.readonly) {
		snprintf(why, why_len, "volume '%s' is read-only on disk", name);
		rc = -EROFS;
		goto out;
	}

	/* Shrink: stop guests from reaching the doomed range before it goes. Grow: after. */
	if (size_bytes < info.size_bytes)
		set_vol_size(bb, name, size_bytes);
	rc = target_resize(t, size_bytes);
	if (rc < 0) {
		set_vol_size(bb, name, info.size_bytes);
		snprintf(why, why_len, "cannot resize volume '%s': %s", name, strerror(-rc));
		goto out;
	}
	set_vol_size(bb, name, size_bytes);
	if (vol)
		target_info(vol->target, &vol->info);
	rc = pool_vol_set_size(bb->opts.pool, name, size_bytes);
	if (rc < 0)
		log_err("volume %s resized to %llu bytes but its metadata was not updated: %s",
			name, (unsigned long long)size_bytes, strerror(-rc));
	log_info("volume %s resized from %llu to %llu bytes", name,
		 (unsigned long long)info.size_bytes, (unsigned long long)size_bytes);

	for (struct bb_vbd *v = bb->vbds; v; v = v->next) {
		if (!v->vol || strcmp(v->vol->name, name) != 0)
			continue;
		if (v->be_state != XenbusStateConnected)
			continue; /* sectors is written when it connects */
		if (bb_xenbus_publish_size(v) == 0)
			log_info("%s: capacity now %llu sectors", v->name,
				 (unsigned long long)(size_bytes >> BB_SECT_SHIFT));
	}
	rc = 0;
out:
	if (tmp)
		target_close(tmp);
	return rc;
}
