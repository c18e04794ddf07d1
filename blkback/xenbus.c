/*
 * xenbus.c - blkbackd's xenstore side: the backend watch, one XenbusState machine per vbd, and
 * the toolstack writes behind the control socket's attach and detach.
 *
 * The state machine follows Linux xen-blkback (drivers/block/xen-blkback/xenbus.c):
 *   probe      backend dir appears -> open the volume, publish features and transport limits,
 *              InitWait, watch the frontend's state;
 *   frontend Initialised or Connected (a frontend may skip states) -> disconnect idempotently,
 *              read ring-ref(s), ring-page-order, event-channel(s), protocol, map and bind, then
 *              sectors / info / sector-size / physical-sector-size and Connected in one
 *              transaction;
 *   frontend Closing -> disconnect (in-flight requests complete and are answered), Closing;
 *   frontend Closed  -> Closed; frontend Initialising while we are Closed -> InitWait again.
 * One deliberate difference: a frontend that is Closing or Closed while we wait in InitWait
 * without ever having connected leaves us in InitWait (there is nothing to close), so a
 * restarted blkbackd stays ready for a frontend that closed against the previous one.
 *
 * Everything the frontend writes is guest input: numbers are parsed strictly (whole decimal
 * strings within their range), the protocol must be one we serve, and a bad value refuses the
 * connection with a log line and Xen's error node instead of being guessed at.
 */
#define LOG_TAG "xenbus"
#include "blkback/blkback_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <xenstore.h>
#include <xen/io/protocols.h>

#define BE_TOKEN "be"
#define FE_TOKEN_FMT "fe:%u:%u"
#define XS_TX_RETRIES 64

/*
 * ---- Names and numbers ----
 */

const char *bb_xenbus_state_name(int state)
{
	static const char *const names[] = {
		"Unknown", "Initialising", "InitWait",      "Initialised",  "Connected",
		"Closing", "Closed",       "Reconfiguring", "Reconfigured",
	};

	if (state < 0 || (unsigned)state >= ARRAY_SIZE(names))
		return "Invalid";
	return names[state];
}

int bb_vdev_to_devid(const char *vdev, uint32_t *devid)
{
	const char *p;
	uint64_t disk = 0, part = 0;
	unsigned letters = 0;

	if (strncmp(vdev, "xvd", 3) != 0)
		return -EINVAL;
	/* Disk letters count like spreadsheet columns: a..z, aa..zz, aaa.. (vbd-interface). */
	for (p = vdev + 3; *p >= 'a' && *p <= 'z'; p++) {
		if (++letters > 4)
			return -EINVAL;
		disk = letters == 1 ? (uint64_t)(*p - 'a') : (disk + 1) * 26 + (uint64_t)(*p - 'a');
	}
	if (letters == 0)
		return -EINVAL;
	if (*p) {
		if (*p == '0' || util_parse_u64(p, 1, 255, &part) < 0)
			return -EINVAL;
	}
	if (disk < 16 && part < 16)
		*devid = (202u << 8) | (uint32_t)(disk << 4) | (uint32_t)part;
	else if (disk < (1u << 20))
		*devid = (1u << 28) | (uint32_t)(disk << 8) | (uint32_t)part;
	else
		return -EINVAL;
	return 0;
}

void bb_devid_to_vdev(uint32_t devid, char *buf, size_t len)
{
	char letters[8];
	uint32_t disk, part, n;
	int i = (int)sizeof(letters) - 1;

	if ((devid >> 8) == 202) {
		disk = (devid >> 4) & 15;
		part = devid & 15;
	} else if ((devid >> 28) == 1) {
		disk = (devid >> 8) & 0xfffff;
		part = devid & 0xff;
	} else {
		snprintf(buf, len, "d%u", devid);
		return;
	}
	letters[i] = '\0';
	n = disk + 1;
	while (n > 0 && i > 0) {
		n--;
		letters[--i] = (char)('a' + n % 26);
		n /= 26;
	}
	if (part)
		snprintf(buf, len, "xvd%s%u", &letters[i], part);
	else
		snprintf(buf, len, "xvd%s", &letters[i]);
}

/*
 * ---- xenstore helpers ----
 */

static char *xread(struct blkback *bb, xs_transaction_t t, const char *path)
{
	unsigned len;

	return xs_read(bb->xs, t, path, &len);
}

static char *xreadf(struct blkback *bb, xs_transaction_t t, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static char *xreadf(struct blkback *bb, xs_transaction_t t, const char *fmt, ...)
{
	char path[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	return xread(bb, t, path);
}

/* Read @dir/@key as a whole decimal number in [min, max]: 0, -ENOENT or -EINVAL. */
static int xread_u64(struct blkback *bb, xs_transaction_t t, const char *dir, const char *key,
		     uint64_t min, uint64_t max, uint64_t *out)
{
	char *s = xreadf(bb, t, "%s/%s", dir, key);
	int rc;

	if (!s)
		return -ENOENT;
	rc = util_parse_u64(s, min, max, out) < 0 ? -EINVAL : 0;
	free(s);
	return rc;
}

static int xwritef(struct blkback *bb, xs_transaction_t t, const char *dir, const char *key,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int xwritef(struct blkback *bb, xs_transaction_t t, const char *dir, const char *key,
		   const char *fmt, ...)
{
	char path[256], val[256];
	va_list ap;
	int n;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, key) >= sizeof(path))
		return -ENAMETOOLONG;
	va_start(ap, fmt);
	n = vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(val))
		return -E2BIG;
	if (!xs_write(bb->xs, t, path, val, (unsigned)n))
		return -(errno ? errno : EIO);
	return 0;
}

/* Run @fn inside a transaction, retrying the whole body when the commit says EAGAIN. */
static int xs_tx(struct blkback *bb, int (*fn)(struct blkback *, xs_transaction_t, void *),
		 void *arg)
{
	for (unsigned tries = 0;; tries++) {
		xs_transaction_t t = xs_transaction_start(bb->xs);
		int rc;

		if (t == XBT_NULL)
			return -(errno ? errno : EIO);
		rc = fn(bb, t, arg);
		if (rc < 0) {
			xs_transaction_end(bb->xs, t, true);
			return rc;
		}
		if (xs_transaction_end(bb->xs, t, false))
			return 0;
		if (errno != EAGAIN)
			return -(errno ? errno : EIO);
		if (tries >= XS_TX_RETRIES)
			return -EAGAIN;
	}
}

/*
 * ---- Backend state ----
 */

struct switch_arg {
	struct bb_vbd *v;
	enum xenbus_state state;
};

static int tx_switch(struct blkback *bb, xs_transaction_t t, void *arg)
{
	struct switch_arg *a = arg;
	char *cur = xreadf(bb, t, "%s/state", a->v->be_path);

	/* As Linux __xenbus_switch_state: never recreate the node of a removed device. */
	if (!cur)
		return -ENOENT;
	free(cur);
	return xwritef(bb, t, a->v->be_path, "state", "%d", (int)a->state);
}

int bb_xenbus_switch(struct bb_vbd *v, enum xenbus_state s)
{
	struct switch_arg a = { v, s };
	int rc;

	if (v->be_state == s)
		return 0;
	rc = xs_tx(v->bb, tx_switch, &a);
	if (rc < 0 && rc != -ENOENT) {
		log_err("%s: cannot switch to %s: %s", v->name, bb_xenbus_state_name(s),
			strerror(-rc));
		return rc;
	}
	log_debug("%s: %s -> %s", v->name, bb_xenbus_state_name(v->be_state),
		  bb_xenbus_state_name(s));
	v->be_state = s;
	return 0;
}

/* Xen's xenbus_dev_fatal: log, leave the reason in the error node, and close. */
static void vbd_fatal(struct bb_vbd *v, int err, enum xenbus_state next, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void vbd_fatal(struct bb_vbd *v, int err, enum xenbus_state next, const char *fmt, ...)
{
	char msg[256], path[192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	LOG_RATELIMITED(&v->rl, LOG_LVL_ERR, "%s: %s", v->name, msg);
	bb_vbd_disconnect(v);
	snprintf(path, sizeof(path), "/local/domain/%u/error/backend/vbd/%u/%u",
		 hv_domid(v->bb->hv), v->domid, v->devid);
	if (xwritef(v->bb, XBT_NULL, path, "error", "%d %s", err < 0 ? -err : err, msg) < 0)
		log_warn("%s: cannot write the error node", v->name);
	bb_xenbus_switch(v, next);
}

/*
 * ---- vbd lifetime ----
 */

struct bb_vbd *bb_vbd_find(struct blkback *bb, domid_t domid, uint32_t devid)
{
	for (struct bb_vbd *v = bb->vbds; v; v = v->next)
		if (v->domid == domid && v->devid == devid)
			return v;
	return NULL;
}

static void fe_unwatch(struct bb_vbd *v)
{
	char path[160];

	if (!v->fe_watched)
		return;
	snprintf(path, sizeof(path), "%s/state", v->fe_path);
	xs_unwatch(v->bb->xs, path, v->fe_token);
	v->fe_watched = 0;
}

/* Unlink and free @v (disconnecting it first); answers a waiting detach. */
static void vbd_destroy(struct bb_vbd *v, int err, const char *why)
{
	struct blkback *bb = v->bb;
	struct bb_vbd **pp;

	bb_vbd_disconnect(v);
	fe_unwatch(v);
	if (v->detach_conn)
		bb_ctl_detach_done(v->detach_conn, err, why);
	v->detach_conn = NULL;
	for (pp = &bb->vbds; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	bb_vbd_close_vol(v);
	free(v);
	bb_timer_update(bb);
}

static int tx_probe(struct blkback *bb, xs_transaction_t t, void *arg)
{
	struct bb_vbd *v = arg;
	char *cur = xreadf(bb, t, "%s/state", v->be_path);
	int rc = 0;

	if (!cur)
		return -ENOENT;
	free(cur);
	rc = rc ?: xwritef(bb, t, v->be_path, "feature-flush-cache", "1");
	rc = rc ?: xwritef(bb, t, v->be_path, "feature-barrier", "%d", v->feat_barrier);
	rc = rc ?: xwritef(bb, t, v->be_path, "feature-discard", "%d", v->feat_discard);
	if (v->feat_discard) {
		rc = rc ?: xwritef(bb, t, v->be_path, "discard-granularity", "%u",
				   v->discard_granularity);
		rc = rc ?: xwritef(bb, t, v->be_path, "discard-alignment", "0");
	}
	rc = rc ?: xwritef(bb, t, v->be_path, "max-ring-page-order", "%u",
			   bb->opts.max_ring_page_order);
	rc = rc ?: xwritef(bb, t, v->be_path, "multi-queue-max-queues", "%u", bb->max_queues);
	if (bb->opts.max_indirect_segs)
		rc = rc ?: xwritef(bb, t, v->be_path, "feature-max-indirect-segments", "%u",
				   bb->opts.max_indirect_segs);
	rc = rc ?: xwritef(bb, t, v->be_path, "feature-persistent", "%d",
			   bb->opts.persistent ? 1 : 0);
	rc = rc ?: xwritef(bb, t, v->be_path, "state", "%d", (int)XenbusStateInitWait);
	return rc;
}

/* Read and check the toolstack's nodes of a new backend dir. 0, or -EINVAL with a log line. */
static int vbd_read_toolstack(struct blkback *bb, struct bb_vbd *v)
{
	char want[128];
	char *fe, *params, *mode, *dev;
	uint64_t fid, st;
	int rc = -EINVAL;

	snprintf(want, sizeof(want), "/local/domain/%u/device/vbd/%u", v->domid, v->devid);
	fe = xreadf(bb, XBT_NULL, "%s/frontend", v->be_path);
	params = xreadf(bb, XBT_NULL, "%s/params", v->be_path);
	mode = xreadf(bb, XBT_NULL, "%s/mode", v->be_path);
	dev = xreadf(bb, XBT_NULL, "%s/dev", v->be_path);
	if (!fe || strcmp(fe, want) != 0) {
		log_err("%s: frontend node is '%s', expected %s; ignoring this vbd", v->be_path,
			fe ? fe : "(missing)", want);
		goto out;
	}
	if (xread_u64(bb, XBT_NULL, v->be_path, "frontend-id", 0, DOMID_FIRST_RESERVED - 1, &fid) <
		    0 ||
	    fid != v->domid) {
		log_err("%s: frontend-id does not name domain %u; ignoring this vbd", v->be_path,
			v->domid);
		goto out;
	}
	if (!params || !pool_vol_name_ok(params)) {
		log_err("%s: params '%s' is not a volume name; ignoring this vbd", v->be_path,
			params ? params : "(missing)");
		goto out;
	}
	if (!mode || (strcmp(mode, "r") != 0 && strcmp(mode, "w") != 0)) {
		log_err("%s: mode must be r or w, not '%s'; ignoring this vbd", v->be_path,
			mode ? mode : "(missing)");
		goto out;
	}
	snprintf(v->fe_path, sizeof(v->fe_path), "%s", want);
	snprintf(v->vol_name, sizeof(v->vol_name), "%s", params);
	v->ro = mode[0] == 'r';
	{
		uint32_t d;

		if (dev && bb_vdev_to_devid(dev, &d) == 0 && d == v->devid)
			snprintf(v->vdev, sizeof(v->vdev), "%s", dev);
		else
			bb_devid_to_vdev(v->devid, v->vdev, sizeof(v->vdev));
	}
	v->be_state = XenbusStateUnknown;
	if (xread_u64(bb, XBT_NULL, v->be_path, "state", 0, XenbusStateReconfigured, &st) == 0)
		v->be_state = (enum xenbus_state)st;
	rc = 0;
out:
	free(fe);
	free(params);
	free(mode);
	free(dev);
	return rc;
}

static void vbd_probe(struct blkback *bb, domid_t domid, uint32_t devid)
{
	struct bb_vbd *v = calloc(1, sizeof(*v));
	char path[160], *name;
	int rc;

	if (!v) {
		log_err("out of memory for vbd %u/%u", domid, devid);
		return;
	}
	v->bb = bb;
	v->domid = domid;
	v->devid = devid;
	snprintf(v->be_path, sizeof(v->be_path), "/local/domain/%u/backend/vbd/%u/%u",
		 hv_domid(bb->hv), domid, devid);
	if (vbd_read_toolstack(bb, v) < 0) {
		free(v);
		return;
	}
	snprintf(v->name, sizeof(v->name), "d%u/%s", domid, v->vdev);
	snprintf(v->fe_token, sizeof(v->fe_token), FE_TOKEN_FMT, domid, devid);
	name = xreadf(bb, XBT_NULL, "/local/domain/%u/name", domid);
	snprintf(v->domain, sizeof(v->domain), "%s", name ? name : "");
	free(name);
	v->next = bb->vbds;
	bb->vbds = v;

	rc = bb_vbd_open_vol(v);
	if (rc < 0) {
		vbd_fatal(v, rc, XenbusStateClosed, "cannot open volume %s: %s", v->vol_name,
			  rc == -ENOENT ? "no such volume in the pool" : strerror(-rc));
		return;
	}
	rc = xs_tx(bb, tx_probe, v);
	if (rc < 0) {
		if (rc != -ENOENT)
			log_err("%s: cannot publish the backend features: %s", v->name,
				strerror(-rc));
		return;
	}
	v->be_state = XenbusStateInitWait;
	log_info("%s: volume %s%s, %llu sectors; InitWait", v->name, v->vol_name,
		 v->ro ? " (read-only)" : "",
		 (unsigned long long)__atomic_load_n(&v->size_sect, __ATOMIC_RELAXED));

	/* The watch fires once right away, which handles a frontend that is already waiting. */
	snprintf(path, sizeof(path), "%s/state", v->fe_path);
	if (!xs_watch(bb->xs, path, v->fe_token))
		log_err("%s: cannot watch %s: %s", v->name, path, strerror(errno));
	else
		v->fe_watched = 1;
}

/* Does the domain still exist in xenstore? */
static int domain_alive(struct blkback *bb, domid_t domid)
{
	char *s = xreadf(bb, XBT_NULL, "/local/domain/%u", domid);

	free(s);
	return s != NULL;
}

struct rm_arg {
	struct bb_vbd *v;
	int remove_fe;
};

static int tx_remove(struct blkback *bb, xs_transaction_t t, void *arg)
{
	struct rm_arg *a = arg;
	char path[192];

	if (a->remove_fe)
		xs_rm(bb->xs, t, a->v->fe_path);
	xs_rm(bb->xs, t, a->v->be_path);
	snprintf(path, sizeof(path), "/local/domain/%u/error/backend/vbd/%u/%u",
		 hv_domid(bb->hv), a->v->domid, a->v->devid);
	xs_rm(bb->xs, t, path);
	return 0;
}

/* Remove the vbd's nodes (as a toolstack does once the backend is Closed) and free it. */
static void vbd_remove(struct bb_vbd *v, int remove_fe)
{
	struct rm_arg a = { v, remove_fe };
	int rc;

	bb_vbd_disconnect(v);
	bb_xenbus_switch(v, XenbusStateClosed);
	fe_unwatch(v);
	rc = xs_tx(v->bb, tx_remove, &a);
	if (rc < 0)
		log_err("%s: cannot remove the device nodes: %s", v->name, strerror(-rc));
	log_info("%s: removed", v->name);
	vbd_destroy(v, rc, rc < 0 ? "the device nodes could not be removed" : NULL);
}

/*
 * ---- Connecting ----
 */

/* Read the frontend's transport: queues, ring pages and refs, event channels, protocol. */
static int read_rings(struct bb_vbd *v, struct bb_ring_desc *d, unsigned *nr, char *why,
		      size_t why_len)
{
	struct blkback *bb = v->bb;
	uint64_t nq = 1, order = 0, val;
	int have_order, rc;
	char *proto;

	rc = xread_u64(bb, XBT_NULL, v->fe_path, "multi-queue-num-queues", 1, bb->max_queues, &nq);
	if (rc == -EINVAL) {
		snprintf(why, why_len, "multi-queue-num-queues must be 1..%u", bb->max_queues);
		return rc;
	}
	if (rc == -ENOENT)
		nq = 1;
	rc = xread_u64(bb, XBT_NULL, v->fe_path, "ring-page-order", 0,
		       bb->opts.max_ring_page_order, &order);
	if (rc == -EINVAL) {
		snprintf(why, why_len, "ring-page-order must be 0..%u",
			 bb->opts.max_ring_page_order);
		return rc;
	}
	have_order = rc == 0;
	rc = xread_u64(bb, XBT_NULL, v->fe_path, "feature-persistent", 0, 1, &val);
	if (rc == -EINVAL) {
		snprintf(why, why_len, "feature-persistent must be 0 or 1");
		return rc;
	}
	v->persistent = bb->opts.persistent && rc == 0 && val == 1;

	proto = xreadf(bb, XBT_NULL, "%s/protocol", v->fe_path);
	if (proto && strcmp(proto, XEN_IO_PROTO_ABI_X86_64) != 0) {
		if (strcmp(proto, XEN_IO_PROTO_ABI_X86_32) == 0)
			snprintf(why, why_len,
				 "frontend protocol x86_32-abi is not supported (only x86_64-abi)");
		else
			snprintf(why, why_len, "unknown frontend protocol '%.32s'", proto);
		free(proto);
		return -EPROTONOSUPPORT;
	}
	free(proto); /* none written: native, as QEMU assumes */

	for (unsigned q = 0; q < nq; q++) {
		char dir[192];

		if (nq == 1)
			snprintf(dir, sizeof(dir), "%s", v->fe_path);
		else
			snprintf(dir, sizeof(dir), "%s/queue-%u", v->fe_path, q);
		d[q].nr_pages = 1u << order;
		for (uint32_t i = 0; i < d[q].nr_pages; i++) {
			char key[32];

			if (have_order)
				snprintf(key, sizeof(key), "ring-ref%u", i);
			else
				snprintf(key, sizeof(key), "ring-ref");
			rc = xread_u64(bb, XBT_NULL, dir, key, 0, UINT32_MAX, &val);
			if (rc < 0) {
				snprintf(why, why_len, "%s %s/%s", rc == -ENOENT ? "no" : "bad",
					 dir, key);
				return -EINVAL;
			}
			d[q].refs[i] = (grant_ref_t)val;
		}
		rc = xread_u64(bb, XBT_NULL, dir, "event-channel", 1, UINT32_MAX, &val);
		if (rc < 0) {
			snprintf(why, why_len, "%s %s/event-channel", rc == -ENOENT ? "no" : "bad",
				 dir);
			return -EINVAL;
		}
		d[q].port = (evtchn_port_t)val;
	}
	*nr = (unsigned)nq;
	return 0;
}

static int tx_connect(struct blkback *bb, xs_transaction_t t, void *arg)
{
	struct bb_vbd *v = arg;
	char *cur = xreadf(bb, t, "%s/state", v->be_path);
	int rc = 0;

	if (!cur)
		return -ENOENT;
	free(cur);
	rc = rc ?: xwritef(bb, t, v->be_path, "sectors", "%llu",
			   (unsigned long long)__atomic_load_n(&v->size_sect, __ATOMIC_ACQUIRE));
	rc = rc ?: xwritef(bb, t, v->be_path, "info", "%u", v->ro ? VDISK_READONLY : 0u);
	rc = rc ?: xwritef(bb, t, v->be_path, "sector-size", "%u", v->logical_block);
	rc = rc ?: xwritef(bb, t, v->be_path, "physical-sector-size", "%u", v->physical_block);
	rc = rc ?: xwritef(bb, t, v->be_path, "state", "%d", (int)XenbusStateConnected);
	return rc;
}

static void vbd_connect(struct bb_vbd *v)
{
	struct bb_ring_desc d[BB_MAX_QUEUES];
	char why[256];
	unsigned nr = 0;
	int rc;

	rc = read_rings(v, d, &nr, why, sizeof(why));
	if (rc < 0) {
		vbd_fatal(v, rc, XenbusStateClosing, "cannot connect: %s", why);
		return;
	}
	rc = bb_vbd_connect_rings(v, d, nr, why, sizeof(why));
	if (rc < 0) {
		vbd_fatal(v, rc, XenbusStateClosing, "cannot connect: %s", why);
		return;
	}
	rc = xs_tx(v->bb, tx_connect, v);
	if (rc < 0) {
		vbd_fatal(v, rc, XenbusStateClosing, "cannot publish the disk: %s", strerror(-rc));
		return;
	}
	v->be_state = XenbusStateConnected;
	LOG_RATELIMITED(&v->rl, LOG_LVL_INFO,
			"%s: connected: %llu sectors of %u bytes%s, %u queue%s, ring of %u page%s "
			"(%u requests)%s",
			v->name,
			(unsigned long long)__atomic_load_n(&v->size_sect, __ATOMIC_RELAXED),
			v->logical_block, v->ro ? ", read-only" : "", nr, nr > 1 ? "s" : "",
			d[0].nr_pages, d[0].nr_pages > 1 ? "s" : "", v->rings[0].nr_reqs,
			v->persistent ? ", persistent grants" : "");
}

static int tx_size(struct blkback *bb, xs_transaction_t t, void *arg)
{
	struct bb_vbd *v = arg;
	char *cur = xreadf(bb, t, "%s/state", v->be_path);
	int rc;

	if (!cur)
		return -ENOENT;
	free(cur);
	rc = xwritef(bb, t, v->be_path, "sectors", "%llu",
		     (unsigned long long)__atomic_load_n(&v->size_sect, __ATOMIC_ACQUIRE));
	/* Re-writing state fires the frontend's watch: that is how it learns the new size. */
	return rc ?: xwritef(bb, t, v->be_path, "state", "%d", (int)v->be_state);
}

int bb_xenbus_publish_size(struct bb_vbd *v)
{
	int rc = xs_tx(v->bb, tx_size, v);

	if (rc < 0)
		log_err("%s: cannot publish the new size: %s", v->name, strerror(-rc));
	return rc;
}

/*
 * ---- Frontend state changes ----
 */

static int fe_let_go(enum xenbus_state s)
{
	return s == XenbusStateUnknown || s == XenbusStateInitialising || s == XenbusStateClosed;
}

/* All vbds closed during shutdown? Then the shutdown wait ends. */
static void shutdown_check(struct blkback *bb)
{
	for (struct bb_vbd *v = bb->vbds; v; v = v->next)
		if (v->be_state == XenbusStateClosing || v->detaching)
			return;
	bb->loop_stop = 1;
}

/* A frontend event while a detach or the shutdown waits for the frontend to let go. */
static void closing_progress(struct bb_vbd *v)
{
	struct blkback *bb = v->bb;

	if (!fe_let_go(v->fe_state))
		return;
	if (v->detaching) {
		bb_xenbus_detach_finish(v);
		if (bb->shutting_down)
			shutdown_check(bb);
		return;
	}
	bb_xenbus_switch(v, XenbusStateClosed);
	shutdown_check(bb);
}

static void frontend_changed(struct bb_vbd *v)
{
	struct blkback *bb = v->bb;
	uint64_t st;
	char *s = xreadf(bb, XBT_NULL, "%s/state", v->fe_path);
	enum xenbus_state fs;

	if (!s) {
		fs = XenbusStateUnknown; /* the frontend's node is gone */
	} else if (util_parse_u64(s, 0, XenbusStateReconfigured, &st) < 0) {
		LOG_RATELIMITED(&v->rl, LOG_LVL_WARN,
				"%s: frontend state '%.16s' is not a XenbusState; ignored", v->name,
				s);
		free(s);
		return;
	} else {
		fs = (enum xenbus_state)st;
	}
	free(s);
	log_debug("%s: frontend %s (we are %s)", v->name, bb_xenbus_state_name(fs),
		  bb_xenbus_state_name(v->be_state));
	v->fe_state = fs;

	if (v->detaching || bb->shutting_down) {
		closing_progress(v);
		return;
	}
	switch (fs) {
	case XenbusStateInitialising:
		if (v->be_state == XenbusStateClosed && v->vol) {
			LOG_RATELIMITED(&v->rl, LOG_LVL_INFO,
					"%s: frontend reinitialising; InitWait for a reconnect",
					v->name);
			bb_xenbus_switch(v, XenbusStateInitWait);
		}
		break;
	case XenbusStateInitialised:
	case XenbusStateConnected:
		/* Two watch events in a row may both read Connected: connect once. */
		if (v->be_state == XenbusStateConnected || v->be_state == XenbusStateClosing)
			break;
		if (!v->vol)
			break;
		bb_vbd_disconnect(v);
		vbd_connect(v);
		break;
	case XenbusStateClosing:
		if (!v->rings && v->be_state == XenbusStateInitWait)
			break; /* never connected: nothing to close */
		bb_vbd_disconnect(v);
		bb_xenbus_switch(v, XenbusStateClosing);
		break;
	case XenbusStateClosed:
		if (!v->rings && v->be_state == XenbusStateInitWait)
			break;
		bb_vbd_disconnect(v);
		bb_xenbus_switch(v, XenbusStateClosed);
		break;
	case XenbusStateUnknown:
		bb_vbd_disconnect(v);
		if (!domain_alive(bb, v->domid)) {
			/* Destroyed without a detach: clean up as a toolstack would. */
			log_info("%s: domain %u is gone", v->name, v->domid);
			vbd_remove(v, 0);
			return;
		}
		bb_xenbus_switch(v, XenbusStateClosed);
		break;
	default:
		log_debug("%s: ignoring frontend state %s", v->name, bb_xenbus_state_name(fs));
		break;
	}
}

/*
 * ---- The backend watch ----
 */

/* A backend dir appeared, changed or vanished. */
static void backend_check(struct blkback *bb, domid_t domid, uint32_t devid)
{
	struct bb_vbd *v = bb_vbd_find(bb, domid, devid);
	char *fe = xreadf(bb, XBT_NULL, "/local/domain/%u/backend/vbd/%u/%u/frontend",
			  hv_domid(bb->hv), domid, devid);
	char *params = xreadf(bb, XBT_NULL, "/local/domain/%u/backend/vbd/%u/%u/params",
			      hv_domid(bb->hv), domid, devid);

	if (!v && fe && params && !bb->shutting_down)
		vbd_probe(bb, domid, devid);
	else if (v && !fe && !v->detaching) {
		log_info("%s: backend directory removed", v->name);
		vbd_destroy(v, 0, NULL);
	}
	free(fe);
	free(params);
}

/* Parse a whole decimal path component at *p (advancing past it). */
static int path_num(const char **p, uint64_t max, uint64_t *out)
{
	char buf[24];
	size_t n = strcspn(*p, "/");

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, *p, n);
	buf[n] = '\0';
	*p += n;
	return util_parse_u64(buf, 0, max, out);
}

static void rescan(struct blkback *bb)
{
	char root[96], sub[128];
	unsigned nd = 0, nv;
	char **doms, **devs;
	uint64_t domid, devid;

	snprintf(root, sizeof(root), "/local/domain/%u/backend/vbd", hv_domid(bb->hv));
	doms = xs_directory(bb->xs, XBT_NULL, root, &nd);
	for (unsigned i = 0; doms && i < nd; i++) {
		const char *p = doms[i];

		if (path_num(&p, DOMID_FIRST_RESERVED - 1, &domid) < 0 || *p)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", root, doms[i]);
		nv = 0;
		devs = xs_directory(bb->xs, XBT_NULL, sub, &nv);
		for (unsigned j = 0; devs && j < nv; j++) {
			p = devs[j];
			if (path_num(&p, UINT32_MAX, &devid) < 0 || *p)
				continue;
			backend_check(bb, (domid_t)domid, (uint32_t)devid);
		}
		free(devs);
	}
	free(doms);
	/* And vbds whose directory went away with a whole subtree. */
	for (struct bb_vbd *v = bb->vbds, *next; v; v = next) {
		next = v->next;
		backend_check(bb, v->domid, v->devid);
	}
}

static void backend_event(struct blkback *bb, const char *path)
{
	char root[96];
	size_t rl;
	const char *p;
	uint64_t domid, devid;

	rl = (size_t)snprintf(root, sizeof(root), "/local/domain/%u/backend/vbd",
			      hv_domid(bb->hv));
	if (strncmp(path, root, rl) != 0)
		return;
	p = path + rl;
	if (*p == '\0') {
		rescan(bb);
		return;
	}
	if (*p++ != '/' || path_num(&p, DOMID_FIRST_RESERVED - 1, &domid) < 0)
		return;
	if (*p == '\0') {
		rescan(bb); /* a whole domain's vbds (e.g. removed together) */
		return;
	}
	if (*p++ != '/' || path_num(&p, UINT32_MAX, &devid) < 0)
		return;
	backend_check(bb, (domid_t)domid, (uint32_t)devid);
}

static void watch_event(struct blkback *bb, const char *path, const char *token)
{
	unsigned domid, devid;
	struct bb_vbd *v;
	char tail;

	if (strcmp(token, BE_TOKEN) == 0) {
		backend_event(bb, path);
		return;
	}
	if (sscanf(token, FE_TOKEN_FMT "%c", &domid, &devid, &tail) != 2)
		return;
	v = bb_vbd_find(bb, (domid_t)domid, devid);
	if (v && v->fe_watched)
		frontend_changed(v);
}

void bb_xenbus_on_watch(void *arg, uint32_t events)
{
	struct blkback *bb = arg;
	char **vec;

	(void)events;
	while ((vec = xs_check_watch(bb->xs)) != NULL) {
		watch_event(bb, vec[XS_WATCH_PATH], vec[XS_WATCH_TOKEN]);
		free(vec);
	}
}

int bb_xenbus_start(struct blkback *bb)
{
	char root[96];

	snprintf(root, sizeof(root), "/local/domain/%u/backend/vbd", hv_domid(bb->hv));
	/* The watch fires once at registration: that first event scans what already exists. */
	if (!xs_watch(bb->xs, root, BE_TOKEN))
		return -(errno ? errno : EIO);
	return 0;
}

/*
 * ---- Wake-ups from ring threads, timers ----
 */

void bb_xenbus_on_wake(void *arg, uint32_t events)
{
	struct blkback *bb = arg;
	uint64_t n;

	(void)events;
	if (read(bb->wake_efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_err("wake eventfd: %s", strerror(errno));
	for (struct bb_vbd *v = bb->vbds; v; v = v->next) {
		if (!__atomic_exchange_n(&v->need_disconnect, 0, __ATOMIC_ACQ_REL))
			continue;
		vbd_fatal(v, -EPROTO, XenbusStateClosing,
			  "frontend broke the ring protocol; disconnected");
	}
}

void bb_timer_update(struct blkback *bb)
{
	struct itimerspec its = { 0 };
	int want = bb->shutting_down;

	for (struct bb_vbd *v = bb->vbds; v && !want; v = v->next)
		want = v->detaching;
	if (want == bb->timer_armed)
		return;
	if (want) {
		its.it_interval.tv_nsec = 100 * 1000000; /* deadline granularity */
		its.it_value.tv_nsec = 100 * 1000000;
	}
	if (timerfd_settime(bb->timer_fd, 0, &its, NULL) < 0)
		log_err("timerfd: %s", strerror(errno));
	else
		bb->timer_armed = want;
}

void bb_xenbus_on_timer(void *arg, uint32_t events)
{
	struct blkback *bb = arg;
	uint64_t now = util_now_ns(), n;

	(void)events;
	if (read(bb->timer_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_err("timerfd: %s", strerror(errno));
	for (struct bb_vbd *v = bb->vbds, *next; v; v = next) {
		next = v->next;
		if (!v->detaching || now < v->detach_deadline_ns)
			continue;
		log_warn("%s: frontend did not close within %d ms (it is %s); detaching anyway",
			 v->name, BB_CLOSE_TIMEOUT_MS, bb_xenbus_state_name(v->fe_state));
		bb_xenbus_detach_finish(v);
	}
	if (bb->shutting_down && now >= bb->shutdown_deadline_ns)
		bb->loop_stop = 1;
}

/*
 * ---- Detach ----
 */

void bb_xenbus_detach_begin(struct bb_vbd *v)
{
	v->detaching = 1;
	v->detach_deadline_ns = util_now_ns() + (uint64_t)BB_CLOSE_TIMEOUT_MS * 1000000;
	xwritef(v->bb, XBT_NULL, v->be_path, "online", "0");
	/* In-flight requests complete and are answered before the frontend hears Closing. */
	bb_vbd_disconnect(v);
	if (fe_let_go(v->fe_state) || v->be_state == XenbusStateClosed) {
		bb_xenbus_detach_finish(v);
		return;
	}
	bb_xenbus_switch(v, XenbusStateClosing);
	bb_timer_update(v->bb);
}

void bb_xenbus_detach_finish(struct bb_vbd *v)
{
	bb_qos_vbd_forget(v);
	vbd_remove(v, 1);
}

/*
 * ---- Toolstack: attach ----
 */

int bb_xenbus_find_domain(struct blkback *bb, const char *dom, domid_t *domid)
{
	uint64_t id;
	unsigned n = 0;
	char **ents;
	int rc = -ENOENT;

	if (util_parse_u64(dom, 0, DOMID_FIRST_RESERVED - 1, &id) == 0) {
		if (!domain_alive(bb, (domid_t)id))
			return -ENOENT;
		*domid = (domid_t)id;
		return 0;
	}
	ents = xs_directory(bb->xs, XBT_NULL, "/local/domain", &n);
	for (unsigned i = 0; ents && i < n && rc; i++) {
		char *name = xreadf(bb, XBT_NULL, "/local/domain/%s/name", ents[i]);

		if (name && strcmp(name, dom) == 0 &&
		    util_parse_u64(ents[i], 0, DOMID_FIRST_RESERVED - 1, &id) == 0) {
			*domid = (domid_t)id;
			rc = 0;
		}
		free(name);
	}
	free(ents);
	return rc;
}

struct attach_arg {
	const char *vol;
	const char *vdev;
	domid_t domid;
	uint32_t devid;
	int ro;
	char be_path[128];
	char fe_path[128];
	char *why;
	size_t why_len;
};

/* Is vol already attached in a way that conflicts with this attach? (in the transaction) */
static int attach_check_vol(struct blkback *bb, xs_transaction_t t, struct attach_arg *a)
{
	char root[96], sub[128];
	unsigned nd = 0;
	char **doms;
	int rc = 0;

	snprintf(root, sizeof(root), "/local/domain/%u/backend/vbd", hv_domid(bb->hv));
	doms = xs_directory(bb->xs, t, root, &nd);
	for (unsigned i = 0; doms && i < nd && !rc; i++) {
		unsigned nv = 0;
		char **devs;

		snprintf(sub, sizeof(sub), "%s/%s", root, doms[i]);
		devs = xs_directory(bb->xs, t, sub, &nv);
		for (unsigned j = 0; devs && j < nv && !rc; j++) {
			char *params = xreadf(bb, t, "%s/%s/params", sub, devs[j]);
			char *mode = xreadf(bb, t, "%s/%s/mode", sub, devs[j]);
			char *dev = xreadf(bb, t, "%s/%s/dev", sub, devs[j]);
			int other_rw = !mode || strcmp(mode, "r") != 0;

			if (params && strcmp(params, a->vol) == 0 && (other_rw || !a->ro)) {
				if (other_rw)
					snprintf(a->why, a->why_len,
						 "volume %s is already attached writable to domain "
						 "%s as %s",
						 a->vol, doms[i], dev ? dev : devs[j]);
				else
					snprintf(a->why, a->why_len,
						 "volume %s is already attached to domain %s as "
						 "%s; a writable attach must be its only one",
						 a->vol, doms[i], dev ? dev : devs[j]);
				rc = -EBUSY;
			}
			free(params);
			free(mode);
			free(dev);
		}
		free(devs);
	}
	free(doms);
	return rc;
}

static int set_perms(struct blkback *bb, xs_transaction_t t, const char *path,
		     unsigned owner, unsigned reader)
{
	struct xs_permissions p[2] = {
		{ .id = owner, .perms = XS_PERM_NONE },
		{ .id = reader, .perms = XS_PERM_READ },
	};

	if (!xs_set_permissions(bb->xs, t, path, p, 2))
		return -(errno ? errno : EIO);
	return 0;
}

/* Write @key under @dir and give it @dir's permissions. */
static int write_node(struct blkback *bb, xs_transaction_t t, const char *dir, const char *key,
		      unsigned owner, unsigned reader, const char *val)
{
	char path[192];
	int rc = xwritef(bb, t, dir, key, "%s", val);

	if (rc < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/%s", dir, key);
	return set_perms(bb, t, path, owner, reader);
}

static int tx_attach(struct blkback *bb, xs_transaction_t t, void *arg)
{
	struct attach_arg *a = arg;
	unsigned bdom = hv_domid(bb->hv), fdom = a->domid;
	char num[32], *s;
	int rc;

	s = xreadf(bb, t, "/local/domain/%u", a->domid);
	if (!s) {
		snprintf(a->why, a->why_len, "domain %u does not exist", a->domid);
		return -ENOENT;
	}
	free(s);
	s = xread(bb, t, a->fe_path);
	if (!s)
		s = xread(bb, t, a->be_path);
	if (s) {
		free(s);
		snprintf(a->why, a->why_len, "domain %u already has a disk %s", a->domid, a->vdev);
		return -EEXIST;
	}
	rc = attach_check_vol(bb, t, a);
	if (rc < 0)
		return rc;

	/* Frontend: owned by the guest, readable by the backend domain. */
	if (!xs_mkdir(bb->xs, t, a->fe_path))
		return -(errno ? errno : EIO);
	rc = set_perms(bb, t, a->fe_path, fdom, bdom);
	rc = rc ?: write_node(bb, t, a->fe_path, "backend", fdom, bdom, a->be_path);
	snprintf(num, sizeof(num), "%u", bdom);
	rc = rc ?: write_node(bb, t, a->fe_path, "backend-id", fdom, bdom, num);
	rc = rc ?: write_node(bb, t, a->fe_path, "state", fdom, bdom, "1");
	snprintf(num, sizeof(num), "%u", a->devid);
	rc = rc ?: write_node(bb, t, a->fe_path, "virtual-device", fdom, bdom, num);
	rc = rc ?: write_node(bb, t, a->fe_path, "device-type", fdom, bdom, "disk");
	if (rc < 0)
		return rc;

	/* Backend: owned by the backend domain, readable by the guest. */
	if (!xs_mkdir(bb->xs, t, a->be_path))
		return -(errno ? errno : EIO);
	rc = set_perms(bb, t, a->be_path, bdom, fdom);
	rc = rc ?: write_node(bb, t, a->be_path, "frontend", bdom, fdom, a->fe_path);
	snprintf(num, sizeof(num), "%u", fdom);
	rc = rc ?: write_node(bb, t, a->be_path, "frontend-id", bdom, fdom, num);
	rc = rc ?: write_node(bb, t, a->be_path, "online", bdom, fdom, "1");
	rc = rc ?: write_node(bb, t, a->be_path, "state", bdom, fdom, "1");
	rc = rc ?: write_node(bb, t, a->be_path, "params", bdom, fdom, a->vol);
	rc = rc ?: write_node(bb, t, a->be_path, "mode", bdom, fdom, a->ro ? "r" : "w");
	rc = rc ?: write_node(bb, t, a->be_path, "type", bdom, fdom, "sluice");
	rc = rc ?: write_node(bb, t, a->be_path, "dev", bdom, fdom, a->vdev);
	return rc;
}

int bb_xenbus_attach(struct blkback *bb, const char *vol, domid_t domid, const char *vdev,
		     int ro, uint32_t *devid, char *why, size_t why_len)
{
	struct attach_arg a = {
		.vol = vol, .vdev = vdev, .domid = domid, .ro = ro, .why = why, .why_len = why_len,
	};
	struct pool_vol pv;
	int rc;

	why[0] = '\0';
	if (domid == hv_domid(bb->hv)) {
		snprintf(why, why_len, "domain %u is the backend domain; attach to a guest", domid);
		return -EINVAL;
	}
	if (bb_vdev_to_devid(vdev, &a.devid) < 0) {
		snprintf(why, why_len, "'%.32s' is not a Xen virtual disk name (xvda, xvdb, ...)",
			 vdev);
		return -EINVAL;
	}
	rc = pool_vol_get(bb->opts.pool, vol, &pv);
	if (rc < 0) {
		snprintf(why, why_len, rc == -ENOENT ? "no volume named '%.64s' in the pool"
						     : "cannot read volume '%.64s'",
			 vol);
		return rc;
	}
	snprintf(a.be_path, sizeof(a.be_path), "/local/domain/%u/backend/vbd/%u/%u",
		 hv_domid(bb->hv), domid, a.devid);
	snprintf(a.fe_path, sizeof(a.fe_path), "/local/domain/%u/device/vbd/%u", domid, a.devid);
	rc = xs_tx(bb, tx_attach, &a);
	if (rc < 0) {
		if (!why[0])
			snprintf(why, why_len, "cannot write the device nodes: %s", strerror(-rc));
		return rc;
	}
	*devid = a.devid;
	log_info("attached volume %s to domain %u as %s (%u)%s", vol, domid, vdev, a.devid,
		 ro ? " read-only" : "");
	return 0;
}

/* Remove the nodes of a backend dir that has no vbd (never probed: bad toolstack nodes). */
int bb_xenbus_remove_nodes(struct blkback *bb, domid_t domid, uint32_t devid)
{
	struct bb_vbd tmp = { .bb = bb, .domid = domid, .devid = devid };
	struct rm_arg a = { &tmp, 1 };
	char *s;

	snprintf(tmp.be_path, sizeof(tmp.be_path), "/local/domain/%u/backend/vbd/%u/%u",
		 hv_domid(bb->hv), domid, devid);
	snprintf(tmp.fe_path, sizeof(tmp.fe_path), "/local/domain/%u/device/vbd/%u", domid, devid);
	s = xread(bb, XBT_NULL, tmp.be_path);
	if (!s)
		return -ENOENT;
	free(s);
	return xs_tx(bb, tx_remove, &a);
}

/*
 * ---- Volume users (ctl "attached") ----
 */

int bb_xenbus_vol_users(struct blkback *bb, const char *vol,
			void (*fn)(void *arg, domid_t domid, const char *vdev), void *arg)
{
	char root[96], sub[128];
	unsigned nd = 0;
	char **doms;

	snprintf(root, sizeof(root), "/local/domain/%u/backend/vbd", hv_domid(bb->hv));
	doms = xs_directory(bb->xs, XBT_NULL, root, &nd);
	for (unsigned i = 0; doms && i < nd; i++) {
		unsigned nv = 0;
		uint64_t domid, devid;
		const char *p = doms[i];
		char **devs;

		if (path_num(&p, DOMID_FIRST_RESERVED - 1, &domid) < 0 || *p)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", root, doms[i]);
		devs = xs_directory(bb->xs, XBT_NULL, sub, &nv);
		for (unsigned j = 0; devs && j < nv; j++) {
			char *params = xreadf(bb, XBT_NULL, "%s/%s/params", sub, devs[j]);

			p = devs[j];
			if (params && strcmp(params, vol) == 0 &&
			    path_num(&p, UINT32_MAX, &devid) == 0 && !*p) {
				char vdev[32];

				bb_devid_to_vdev((uint32_t)devid, vdev, sizeof(vdev));
				fn(arg, (domid_t)domid, vdev);
			}
			free(params);
		}
		free(devs);
	}
	free(doms);
	return 0;
}

/*
 * ---- Shutdown ----
 */

void bb_xenbus_shutdown_begin(struct blkback *bb)
{
	bb->shutting_down = 1;
	bb->shutdown_deadline_ns = util_now_ns() + (uint64_t)BB_CLOSE_TIMEOUT_MS * 1000000;
	for (struct bb_vbd *v = bb->vbds; v; v = v->next) {
		if (v->detaching)
			continue; /* its detach completes on its own */
		bb_vbd_disconnect(v);
		if (v->be_state == XenbusStateClosed)
			continue;
		if (fe_let_go(v->fe_state) || v->be_state == XenbusStateUnknown)
			bb_xenbus_switch(v, XenbusStateClosed);
		else
			bb_xenbus_switch(v, XenbusStateClosing);
	}
	shutdown_check(bb);
	bb_timer_update(bb);
}

void bb_xenbus_free_all(struct blkback *bb)
{
	while (bb->vbds) {
		struct bb_vbd *v = bb->vbds;

		if (v->be_state == XenbusStateClosing) {
			log_warn("%s: frontend did not close within %d ms (it is %s); "
				 "closing anyway",
				 v->name, BB_CLOSE_TIMEOUT_MS, bb_xenbus_state_name(v->fe_state));
			bb_xenbus_switch(v, XenbusStateClosed);
		}
		vbd_destroy(v, -ESHUTDOWN, "blkbackd is shutting down");
	}
}
