/*
 * qos_daemon.c - the QoS scheduler inside blkbackd: one qos_sched for the pool's device, one
 * qos_vbd per connected vbd, their persisted settings, and the control commands "set" and "qos".
 *
 * The pool is one device (its files share a disk), so it has one scheduler; with --sim-device
 * that device is simulated and the scheduler's cost model is the simulated device's own.
 * Otherwise the model is the pool's POOL/qos/device.json (written by `blkctl calibrate` or by
 * hand), or a generic flash model that vrate then scales to what the device really does.
 *
 * Lifetimes: a vbd gets its qos_vbd once all its rings run (bb_vbd_connect_rings) and loses it
 * after their threads are joined and before their wake fds close (bb_vbd_disconnect), so the
 * wake callback, which the scheduler may call from any vbd's ring thread, only ever writes fds
 * that are open. Ring threads load v->qos per request: the few requests a ring takes before the
 * handle is published go unscheduled, which only matters for the first microseconds.
 *
 * Settings are keyed by the domain's name and the vdev (qos_glue.h), because domids change when
 * a guest restarts. `attach` writes them (defaults overlaid with its options), `set` changes
 * them, a detach removes them; a restarted blkbackd finds them again for the vbds it picks up.
 */
#define LOG_TAG "qos"
#include "blkback/blkback_internal.h"
#include "blkback/qos_glue.h"
#include "blkback/qos_model.h"
#include "qos/simdev.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <xenstore.h>

/*
 * ---- The device ----
 */

int bb_qos_start(struct blkback *bb)
{
	struct qos_params p;
	char why[256];
	int rc;

	qos_params_default(&p);
	snprintf(bb->qos_model_src, sizeof(bb->qos_model_src),
		 "default (a 50000-IOPS flash device, scaled by vrate)");
	if (bb->opts.sim_device) {
		struct qos_simdev_params sp;

		rc = qos_simdev_parse(bb->opts.sim_device, &sp, why, sizeof(why));
		if (rc < 0) {
			log_err("--sim-device %s: %s", bb->opts.sim_device, why);
			return rc;
		}
		rc = qos_simdev_new(&sp, NULL, &bb->simdev);
		if (rc < 0) {
			log_err("cannot create the simulated device: %s", strerror(-rc));
			return rc;
		}
		snprintf(bb->sim_spec, sizeof(bb->sim_spec), "%s", bb->opts.sim_device);
		/* The scheduler knows the simulated device exactly, as calibration would tell it.
		 */
		p.cost = sp.cost;
		snprintf(bb->qos_model_src, sizeof(bb->qos_model_src), "the simulated device %s",
			 bb->sim_spec);
	} else {
		rc = qos_model_load(bb->opts.pool, &p.cost, why, sizeof(why));
		if (rc == 0) {
			qos_model_path(bb->qos_model_src, sizeof(bb->qos_model_src), bb->opts.pool);
		} else if (rc != -ENOENT) {
			/* Serving the disks matters more than a broken calibration file. */
			log_err("the pool's device model is unusable (%s); using the default model",
				rc == -EINVAL ? why : strerror(-rc));
			qos_params_default(&p);
		}
	}
	if (bb->opts.no_qos) {
		log_info("I/O scheduling off (--no-qos)%s%s",
			 bb->simdev ? "; simulated device " : "", bb->simdev ? bb->sim_spec : "");
		return 0;
	}
	rc = qos_sched_new(&p, NULL, &bb->qos, why, sizeof(why));
	if (rc < 0) {
		log_err("cannot create the I/O scheduler: %s", rc == -EINVAL ? why : strerror(-rc));
		return rc;
	}
	log_info("I/O scheduling on: %llu IOPS capacity, cost model from %s",
		 (unsigned long long)qos_sched_capacity_iops(bb->qos), bb->qos_model_src);
	return 0;
}

void bb_qos_stop(struct blkback *bb)
{
	qos_sched_free(bb->qos);
	bb->qos = NULL;
	qos_simdev_free(bb->simdev);
	bb->simdev = NULL;
}

/*
 * ---- Per vbd ----
 */

/*
 * The settings' key: the domain's name, or its id when it has none or one that cannot name a
 * file (attach's domain_key() decides the same way).
 */
static void key_of(const char *name, domid_t domid, char *buf, size_t len)
{
	if (name && name[0] && !strchr(name, '/') && name[0] != '.')
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%u", (unsigned)domid);
}

static void vbd_key(const struct bb_vbd *v, char *buf, size_t len)
{
	key_of(v->domain, v->domid, buf, len);
}

/* Scheduler wake-up: room was granted to the vbd. Lock held: only write the rings' eventfds. */
static void qos_wake(void *arg)
{
	struct bb_vbd *v = arg;
	uint64_t one = 1;

	/* A failed write is EAGAIN: the counter is already non-zero, so the ring wakes anyway. */
	for (unsigned i = 0; i < v->nr_rings; i++)
		if (v->rings[i].wake_efd >= 0)
			(void)!write(v->rings[i].wake_efd, &one, sizeof(one));
}

static void log_settings(const char *who, const char *what, const struct qos_vbd_settings *s)
{
	log_info("%s: %s weight %u, cap %llu IOPS %llu B/s, reservation %llu IOPS, burst %llu IOPS "
		 "%llu B/s for %u s",
		 who, what, s->weight, (unsigned long long)s->cap_iops,
		 (unsigned long long)s->cap_bps, (unsigned long long)s->reserve_iops,
		 (unsigned long long)s->burst_iops, (unsigned long long)s->burst_bps,
		 s->burst_seconds);
}

void bb_qos_vbd_connect(struct bb_vbd *v)
{
	struct blkback *bb = v->bb;
	struct qos_vbd_settings set;
	struct qos_vbd *qv = NULL;
	char key[64], why[256];
	int rc;

	if (!bb || !bb->qos)
		return;
	vbd_key(v, key, sizeof(key));
	rc = qos_glue_settings_load(bb->opts.pool, key, v->vdev, &set);
	if (rc < 0 && rc != -ENOENT) {
		log_warn(
		    "%s: the saved QoS settings of %s/%s are unreadable (%s); using the defaults",
		    v->name, key, v->vdev, strerror(-rc));
		qos_vbd_settings_default(&set);
	}
	rc = qos_vbd_add(bb->qos, &set, qos_wake, v, &qv, why, sizeof(why));
	if (rc == -EINVAL) {
		/* Saved under another device (or by hand): serve the disk with the defaults. */
		log_warn("%s: saved QoS settings refused (%s); using the defaults", v->name, why);
		qos_vbd_settings_default(&set);
		rc = qos_vbd_add(bb->qos, &set, qos_wake, v, &qv, why, sizeof(why));
	}
	if (rc < 0) {
		log_err("%s: cannot schedule the disk's I/O: %s; serving it unscheduled", v->name,
			rc == -EINVAL ? why : strerror(-rc));
		return;
	}
	__atomic_store_n(&v->qos, qv, __ATOMIC_RELEASE);
	log_settings(v->name, "QoS", &set);
}

void bb_qos_vbd_disconnect(struct bb_vbd *v)
{
	struct qos_vbd *qv = v->qos;
	struct qos_vbd_stats st;

	if (!qv)
		return;
	/* Counters are kept across reconnects, as blkback's own (stats). */
	qos_vbd_stats(qv, &st);
	v->qos_retired.ops += st.ops;
	v->qos_retired.bytes += st.bytes;
	v->qos_retired.dev_ns += st.dev_ns;
	v->qos_retired.throttled_ns += st.throttled_ns;
	v->qos_retired.parked_ns += st.parked_ns;
	v->qos_retired.boosts += st.boosts;
	__atomic_store_n(&v->qos, NULL, __ATOMIC_RELEASE);
	qos_vbd_remove(qv);
}

void bb_qos_vbd_forget(struct bb_vbd *v)
{
	char key[64], path[512];

	vbd_key(v, key, sizeof(key));
	if (qos_glue_settings_path(path, sizeof(path), v->bb->opts.pool, key, v->vdev) == 0 &&
	    unlink(path) < 0 && errno != ENOENT)
		log_warn("%s: cannot remove %s: %s", v->name, path, strerror(errno));
}

/*
 * ---- Control commands ----
 */

static const char *const settings_keys[] = {
    "weight", "cap_iops", "cap_bps", "reserve_iops", "burst_iops", "burst_bps", "burst_seconds",
};

static int has_settings(json_object *req)
{
	for (size_t i = 0; i < sizeof(settings_keys) / sizeof(settings_keys[0]); i++)
		if (json_object_object_get_ex(req, settings_keys[i], NULL))
			return 1;
	return 0;
}

static json_object *reply(int err, const char *why)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(err == 0));
	if (err) {
		json_object_object_add(o, "error", json_object_new_string(why));
		json_object_object_add(o, "errno", json_object_new_int(err < 0 ? -err : err));
	}
	return o;
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key,
			       json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

/* The domain's name in xenstore, or its id as a string (the settings' key). */
static void domain_key(struct blkback *bb, domid_t domid, char *buf, size_t len)
{
	char path[64];
	unsigned n = 0;
	char *name;

	snprintf(path, sizeof(path), "/local/domain/%u/name", (unsigned)domid);
	name = xs_read(bb->xs, XBT_NULL, path, &n);
	key_of(n ? name : NULL, domid, buf, len);
	free(name);
}

int bb_qos_attach_check(struct blkback *bb, json_object *req, struct qos_vbd_settings *set,
			char *why, size_t why_len)
{
	qos_vbd_settings_default(set);
	if (has_settings(req) && !bb->qos) {
		snprintf(why, why_len,
			 "QoS is off (blkbackd runs with --no-qos): weights, caps and "
			 "reservations cannot be set");
		return -EOPNOTSUPP;
	}
	if (qos_glue_settings_from_json(req, set, why, why_len) < 0)
		return -EINVAL;
	return bb->qos ? qos_settings_check(bb->qos, NULL, set, why, why_len) : 0;
}

int bb_qos_attach_save(struct blkback *bb, domid_t domid, const char *vdev,
		       const struct qos_vbd_settings *set, char *why, size_t why_len)
{
	char key[64];
	int rc;

	domain_key(bb, domid, key, sizeof(key));
	rc = qos_glue_settings_save(bb->opts.pool, key, vdev, set);
	if (rc < 0)
		snprintf(why, why_len,
			 "the disk is attached but its QoS settings could not be saved "
			 "in %s/qos: %s",
			 bb->opts.pool, strerror(-rc));
	return rc;
}

static int find_vbd(struct blkback *bb, json_object *req, struct bb_vbd **out, char *why,
		    size_t why_len)
{
	json_object *d, *x;
	const char *dom, *vdev;
	char idbuf[16];
	uint32_t devid;
	domid_t domid;

	if (!json_object_object_get_ex(req, "domain", &d) ||
	    !json_object_object_get_ex(req, "vdev", &x) ||
	    !json_object_is_type(x, json_type_string) ||
	    !(json_object_is_type(d, json_type_string) || json_object_is_type(d, json_type_int))) {
		snprintf(why, why_len, "the request needs \"domain\" and \"vdev\"");
		return -EINVAL;
	}
	if (json_object_is_type(d, json_type_int)) {
		snprintf(idbuf, sizeof(idbuf), "%lld", (long long)json_object_get_int64(d));
		dom = idbuf;
	} else {
		dom = json_object_get_string(d);
	}
	vdev = json_object_get_string(x);
	if (bb_vdev_to_devid(vdev, &devid) < 0) {
		snprintf(why, why_len, "'%.32s' is not a Xen virtual disk name (xvda, xvdb, ...)",
			 vdev);
		return -EINVAL;
	}
	if (bb_xenbus_find_domain(bb, dom, &domid) < 0) {
		snprintf(why, why_len, "no domain named '%.64s'", dom);
		return -ENOENT;
	}
	*out = bb_vbd_find(bb, domid, devid);
	if (!*out) {
		snprintf(why, why_len, "domain %.64s has no disk %.32s", dom, vdev);
		return -ENOENT;
	}
	return 0;
}

static json_object *cmd_set(struct blkback *bb, json_object *req)
{
	struct qos_vbd_settings set, old;
	struct bb_vbd *v;
	char key[64], why[256];
	json_object *o;
	int rc;

	rc = find_vbd(bb, req, &v, why, sizeof(why));
	if (rc < 0)
		return reply(rc, why);
	if (!bb->qos)
		return reply(-EOPNOTSUPP, "QoS is off (blkbackd runs with --no-qos): weights, caps "
					  "and reservations cannot be set");
	if (!has_settings(req))
		return reply(-EINVAL, "set needs at least one of weight, cap_iops, cap_bps, "
				      "reserve_iops, burst_iops, burst_bps, burst_seconds");
	vbd_key(v, key, sizeof(key));
	rc = qos_glue_settings_load(bb->opts.pool, key, v->vdev, &set);
	if (rc < 0 && rc != -ENOENT)
		qos_vbd_settings_default(&set); /* corrupt: replaced by what is set now */
	if (v->qos) {
		struct qos_vbd_stats st;

		/* The live settings are the truth (a corrupt file was replaced by defaults). */
		qos_vbd_stats(v->qos, &st);
		set = st.set;
	}
	old = set;
	rc = qos_glue_settings_from_json(req, &set, why, sizeof(why));
	if (rc < 0)
		return reply(rc, why);
	rc = qos_settings_check(bb->qos, v->qos, &set, why, sizeof(why));
	if (rc < 0)
		return reply(rc, why);
	/*
	 * Apply, then save: the save fsyncs, which can take longer than a period on a busy disk,
	 * and the change should show within one. A failed save takes the change back.
	 */
	if (v->qos && (rc = qos_vbd_set(v->qos, &set, why, sizeof(why))) < 0)
		return reply(rc, why);
	rc = qos_glue_settings_save(bb->opts.pool, key, v->vdev, &set);
	if (rc < 0) {
		if (v->qos)
			qos_vbd_set(v->qos, &old, NULL, 0);
		snprintf(why, sizeof(why),
			 "cannot save the QoS settings in %s/qos: %s; nothing "
			 "changed",
			 bb->opts.pool, strerror(-rc));
		return reply(rc, why);
	}
	log_settings(v->name, "QoS set:", &set);
	o = reply(0, NULL);
	json_object_object_add(o, "settings", qos_glue_settings_to_json(&set));
	return o;
}

static json_object *vbd_json(struct blkback *bb, struct bb_vbd *v)
{
	json_object *o = json_object_new_object();
	struct qos_vbd_settings set;
	struct qos_vbd_stats st;
	char key[64];

	json_object_object_add(o, "domid", json_object_new_int(v->domid));
	json_object_object_add(o, "domain", json_object_new_string(v->domain));
	json_object_object_add(o, "vdev", json_object_new_string(v->vdev));
	json_object_object_add(o, "vol", json_object_new_string(v->vol_name));
	memset(&st, 0, sizeof(st));
	if (v->qos) {
		qos_vbd_stats(v->qos, &st);
		set = st.set;
	} else {
		vbd_key(v, key, sizeof(key));
		if (qos_glue_settings_load(bb->opts.pool, key, v->vdev, &set) < 0)
			qos_vbd_settings_default(&set);
	}
	add_u64(o, "weight", set.weight);
	add_u64(o, "cap_iops", set.cap_iops);
	add_u64(o, "cap_bps", set.cap_bps);
	add_u64(o, "reserve_iops", set.reserve_iops);
	add_u64(o, "burst_iops", set.burst_iops);
	add_u64(o, "burst_bps", set.burst_bps);
	add_u64(o, "burst_seconds", set.burst_seconds);
	json_object_object_add(
	    o, "state", json_object_new_string(v->qos ? qos_state_name(st.state) : "disconnected"));
	json_object_object_add(o, "share_pct", json_object_new_double(st.share_ppm / 10000.0));
	json_object_object_add(o, "credit_ns", json_object_new_int64(st.credit_ns));
	add_u64(o, "iops", st.iops);
	add_u64(o, "bps", st.bps);
	add_u64(o, "ops", st.ops + v->qos_retired.ops);
	add_u64(o, "bytes", st.bytes + v->qos_retired.bytes);
	add_u64(o, "dev_ns", st.dev_ns + v->qos_retired.dev_ns);
	add_u64(o, "throttled_ns", st.throttled_ns + v->qos_retired.throttled_ns);
	add_u64(o, "parked_ns", st.parked_ns + v->qos_retired.parked_ns);
	add_u64(o, "boosts", st.boosts + v->qos_retired.boosts);
	add_u64(o, "inflight", st.inflight);
	return o;
}

static json_object *cmd_qos(struct blkback *bb)
{
	json_object *o = reply(0, NULL), *dev = json_object_new_object(), *arr;

	json_object_object_add(o, "enabled", json_object_new_boolean(bb->qos != NULL));
	/* When the counters were read (CLOCK_MONOTONIC): rates from two samples need no guess. */
	add_u64(o, "time_ns", util_now_ns());
	if (bb->qos) {
		struct qos_sched_stats s;

		qos_sched_tick(bb->qos); /* an idle device's periods still end */
		qos_sched_stats(bb->qos, &s);
		add_u64(dev, "period_ns", s.period_ns);
		add_u64(dev, "periods", s.periods);
		add_u64(dev, "vrate_ppm", s.vrate_ppm);
		add_u64(dev, "window_ns", s.window_ns);
		add_u64(dev, "inflight_ns", s.inflight_ns);
		add_u64(dev, "lat_base_ns", s.lat_base_ns);
		add_u64(dev, "lat_target_ns", s.lat_target_ns);
		add_u64(dev, "lat_mean_ns", s.lat_mean_ns);
		add_u64(dev, "grant_delay_ns", s.grant_delay_ns);
		add_u64(dev, "budget_ns", s.budget_ns);
		add_u64(dev, "capacity_iops", s.capacity_iops);
		add_u64(dev, "reserved_iops", s.reserved_iops);
		add_u64(dev, "weight_active", s.weight_active);
		add_u64(dev, "nvbd", s.nvbd);
		add_u64(dev, "nactive", s.nactive);
		add_u64(dev, "nwaiting", s.nwaiting);
	}
	json_object_object_add(dev, "model", json_object_new_string(bb->qos_model_src));
	json_object_object_add(dev, "sim_device",
			       bb->simdev ? json_object_new_string(bb->sim_spec) : NULL);
	json_object_object_add(o, "device", dev);
	arr = json_object_new_array();
	for (struct bb_vbd *v = bb->vbds; v; v = v->next)
		json_object_array_add(arr, vbd_json(bb, v));
	json_object_object_add(o, "vbds", arr);
	return o;
}

json_object *bb_ctl_qos(struct blkback *bb, const char *cmd, json_object *req)
{
	if (strcmp(cmd, "set") == 0)
		return cmd_set(bb, req);
	if (strcmp(cmd, "qos") == 0)
		return cmd_qos(bb);
	return NULL;
}
