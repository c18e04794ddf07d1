/*
 * ctl.c - the control socket server (protocol in ctl.h): one JSON object per line in, one per
 * line out, on the control thread's event loop.
 *
 * A client is a local user, not a guest, but its input is still parsed strictly: a line longer
 * than CTL_MAX_LINE or one that is not a JSON object gets an error answer and the connection
 * is closed; a field of the wrong type is refused with a sentence naming it. A detach answers
 * only when the vbd is gone (the frontend closed, or the close timeout passed); meanwhile that
 * connection reads nothing more, other connections carry on.
 */
#define LOG_TAG "ctl"
#include "blkback/blkback_internal.h"
#include "blkback/ctl.h"
#include "hv/loop.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct bb_ctl_conn {
	struct bb_ctl_conn *next;
	struct blkback *bb;
	int fd;
	char in[CTL_MAX_LINE + 1];
	size_t in_len;
	char *out;
	size_t out_len, out_off;
	int busy;        /**< a detach is pending: read nothing until it is answered */
	int dispatching; /**< inside handle_line: a synchronous detach answer must not recurse */
	int closing;     /**< close once the output is written */
};

static void conn_close(struct bb_ctl_conn *c);
static void conn_process(struct bb_ctl_conn *c);

/*
 * ---- Output ----
 */

static void conn_update_events(struct bb_ctl_conn *c)
{
	uint32_t ev = 0;

	if (!c->busy && !c->closing)
		ev |= EPOLLIN;
	if (c->out_off < c->out_len)
		ev |= EPOLLOUT;
	hv_loop_mod(c->bb->loop, c->fd, ev);
}

/* Write what is pending. Returns 0, or -1 when the connection was closed. */
static int conn_flush(struct bb_ctl_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(c);
			return -1;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->closing) {
			conn_close(c);
			return -1;
		}
	}
	conn_update_events(c);
	return 0;
}

/* Queue @obj (consumed) as one line. */
static void conn_reply(struct bb_ctl_conn *c, json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *buf = realloc(c->out, c->out_len + len + 1);

	if (!buf) {
		log_err("out of memory for a control answer");
		c->closing = 1;
	} else {
		c->out = buf;
		memcpy(c->out + c->out_len, s, len);
		c->out[c->out_len + len] = '\n';
		c->out_len += len + 1;
	}
	json_object_put(obj);
}

static json_object *reply_ok(void)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

static json_object *reply_err(int err, const char *why)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(why));
	json_object_object_add(o, "errno", json_object_new_int(err < 0 ? -err : err));
	return o;
}

/*
 * ---- Request fields ----
 */

/* A required (or optional, when @required is 0: *out stays NULL) string field. */
static int field_str(json_object *req, const char *key, int required, const char **out,
		     char *why, size_t why_len)
{
	json_object *f;

	*out = NULL;
	if (!json_object_object_get_ex(req, key, &f) || json_object_is_type(f, json_type_null)) {
		if (!required)
			return 0;
		snprintf(why, why_len, "the request needs \"%s\"", key);
		return -EINVAL;
	}
	if (!json_object_is_type(f, json_type_string)) {
		snprintf(why, why_len, "\"%s\" must be a string", key);
		return -EINVAL;
	}
	*out = json_object_get_string(f);
	return 0;
}

static int field_bool(json_object *req, const char *key, int *out, char *why, size_t why_len)
{
	json_object *f;

	*out = 0;
	if (!json_object_object_get_ex(req, key, &f) || json_object_is_type(f, json_type_null))
		return 0;
	if (!json_object_is_type(f, json_type_boolean)) {
		snprintf(why, why_len, "\"%s\" must be true or false", key);
		return -EINVAL;
	}
	*out = json_object_get_boolean(f);
	return 0;
}

static int field_size(json_object *req, const char *key, uint64_t *out, char *why,
		      size_t why_len)
{
	json_object *f;
	int64_t v;

	if (!json_object_object_get_ex(req, key, &f)) {
		snprintf(why, why_len, "the request needs \"%s\"", key);
		return -EINVAL;
	}
	if (!json_object_is_type(f, json_type_int)) {
		snprintf(why, why_len, "\"%s\" must be a whole number of bytes", key);
		return -EINVAL;
	}
	errno = 0;
	v = json_object_get_int64(f);
	if (v <= 0 || errno == ERANGE) {
		snprintf(why, why_len, "\"%s\" must be a positive number of bytes", key);
		return -EINVAL;
	}
	*out = (uint64_t)v;
	return 0;
}

/* "domain": a name or a decimal id, as a string or a number. Fills @buf. */
static int field_domain(json_object *req, int required, char *buf, size_t len, char *why,
			size_t why_len)
{
	json_object *f;

	buf[0] = '\0';
	if (!json_object_object_get_ex(req, "domain", &f) ||
	    json_object_is_type(f, json_type_null)) {
		if (!required)
			return 0;
		snprintf(why, why_len, "the request needs \"domain\"");
		return -EINVAL;
	}
	if (json_object_is_type(f, json_type_int)) {
		int64_t id = json_object_get_int64(f);

		if (id < 0 || id >= DOMID_FIRST_RESERVED) {
			snprintf(why, why_len, "domain id %lld is out of range", (long long)id);
			return -EINVAL;
		}
		snprintf(buf, len, "%lld", (long long)id);
		return 0;
	}
	if (!json_object_is_type(f, json_type_string) || !json_object_get_string_len(f)) {
		snprintf(why, why_len, "\"domain\" must be a domain name or id");
		return -EINVAL;
	}
	if ((size_t)json_object_get_string_len(f) >= len) {
		snprintf(why, why_len, "the domain name is too long");
		return -EINVAL;
	}
	snprintf(buf, len, "%s", json_object_get_string(f));
	return 0;
}

static int resolve_domain(struct blkback *bb, const char *dom, domid_t *domid, char *why,
			  size_t why_len)
{
	int rc = bb_xenbus_find_domain(bb, dom, domid);

	if (rc < 0)
		snprintf(why, why_len, "no domain named '%.64s'", dom);
	return rc;
}

/*
 * ---- Commands ----
 */

static json_object *cmd_ping(struct bb_ctl_conn *c)
{
	json_object *o = reply_ok();

	json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
	const char *dir = c->bb->opts.hv_dir ? c->bb->opts.hv_dir : "";

	json_object_object_add(o, "hv_dir", json_object_new_string(dir));
	return o;
}

static json_object *cmd_attach(struct bb_ctl_conn *c, json_object *req)
{
	struct blkback *bb = c->bb;
	const char *vol, *vdev;
	char dom[64], why[256];
	domid_t domid;
	uint32_t devid;
	struct qos_vbd_settings set;
	int ro, rc;
	json_object *o;

	if ((rc = field_str(req, "vol", 1, &vol, why, sizeof(why))) < 0 ||
	    (rc = field_domain(req, 1, dom, sizeof(dom), why, sizeof(why))) < 0 ||
	    (rc = field_str(req, "vdev", 1, &vdev, why, sizeof(why))) < 0 ||
	    (rc = field_bool(req, "ro", &ro, why, sizeof(why))) < 0)
		return reply_err(rc, why);
	if (!pool_vol_name_ok(vol)) {
		snprintf(why, sizeof(why), "'%.64s' is not a volume name", vol);
		return reply_err(-EINVAL, why);
	}
	rc = resolve_domain(bb, dom, &domid, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	rc = bb_qos_attach_check(bb, req, &set, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	rc = bb_xenbus_attach(bb, vol, domid, vdev, ro, &devid, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	/* Saved before the backend watch fires, so the vbd connects with them. */
	rc = bb_qos_attach_save(bb, domid, vdev, &set, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	o = reply_ok();
	json_object_object_add(o, "domid", json_object_new_int(domid));
	json_object_object_add(o, "devid", json_object_new_int64(devid));
	return o;
}

/* Returns NULL when the answer comes later (bb_ctl_detach_done). */
static json_object *cmd_detach(struct bb_ctl_conn *c, json_object *req)
{
	struct blkback *bb = c->bb;
	const char *vdev;
	char dom[64], why[256];
	domid_t domid;
	uint32_t devid;
	struct bb_vbd *v;
	int rc;

	if ((rc = field_domain(req, 1, dom, sizeof(dom), why, sizeof(why))) < 0 ||
	    (rc = field_str(req, "vdev", 1, &vdev, why, sizeof(why))) < 0)
		return reply_err(rc, why);
	if (bb_vdev_to_devid(vdev, &devid) < 0) {
		snprintf(why, sizeof(why),
			 "'%.32s' is not a Xen virtual disk name (xvda, xvdb, ...)", vdev);
		return reply_err(-EINVAL, why);
	}
	rc = resolve_domain(bb, dom, &domid, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	v = bb_vbd_find(bb, domid, devid);
	if (!v) {
		/* Nodes blkbackd never served (a bad attach by another toolstack) still go away. */
		rc = bb_xenbus_remove_nodes(bb, domid, devid);
		if (rc == 0)
			return reply_ok();
		if (rc == -ENOENT)
			snprintf(why, sizeof(why), "domain %.64s has no disk %.32s", dom, vdev);
		else
			snprintf(why, sizeof(why), "cannot remove the nodes of %.32s: %s", vdev,
				 strerror(-rc));
		return reply_err(rc, why);
	}
	if (v->detaching) {
		snprintf(why, sizeof(why), "%s is already being detached", v->name);
		return reply_err(-EBUSY, why);
	}
	c->busy = 1;
	v->detach_conn = c;
	bb_xenbus_detach_begin(v); /* may finish (and answer) right away */
	return NULL;
}

static json_object *cmd_resize(struct bb_ctl_conn *c, json_object *req)
{
	const char *vol;
	char why[256];
	uint64_t size, old = 0;
	int shrink, rc;
	json_object *o;

	if ((rc = field_str(req, "vol", 1, &vol, why, sizeof(why))) < 0 ||
	    (rc = field_size(req, "size", &size, why, sizeof(why))) < 0 ||
	    (rc = field_bool(req, "shrink", &shrink, why, sizeof(why))) < 0)
		return reply_err(rc, why);
	if (!pool_vol_name_ok(vol)) {
		snprintf(why, sizeof(why), "'%.64s' is not a volume name", vol);
		return reply_err(-EINVAL, why);
	}
	rc = bb_vol_resize(c->bb, vol, size, shrink, &old, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	o = reply_ok();
	json_object_object_add(o, "old_size", json_object_new_int64((int64_t)old));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
	return o;
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

static void add_lat(json_object *o, const char *key, const struct bb_hist *h, double pct)
{
	json_object_object_add(o, key,
			       json_object_new_double((double)bb_hist_percentile(h, pct) / 1000.0));
}

static json_object *vbd_stats_json(const struct bb_vbd *v)
{
	json_object *o = json_object_new_object();
	struct bb_stats *st = malloc(sizeof(*st)); /* two histograms: too big for the stack */

	json_object_object_add(o, "domid", json_object_new_int(v->domid));
	json_object_object_add(o, "domain", json_object_new_string(v->domain));
	json_object_object_add(o, "vdev", json_object_new_string(v->vdev));
	add_u64(o, "devid", v->devid);
	json_object_object_add(o, "vol", json_object_new_string(v->vol_name));
	json_object_object_add(o, "state",
			       json_object_new_string(bb_xenbus_state_name(v->be_state)));
	json_object_object_add(o, "ro", json_object_new_boolean(v->ro));
	if (!st)
		return o;
	bb_vbd_stats(v, st);
	add_u64(o, "rd_req", st->rd_req);
	add_u64(o, "wr_req", st->wr_req);
	add_u64(o, "f_req", st->f_req);
	add_u64(o, "ds_req", st->ds_req);
	add_u64(o, "oo_req", st->oo_req);
	add_u64(o, "rd_sect", st->rd_sect);
	add_u64(o, "wr_sect", st->wr_sect);
	add_u64(o, "errors", st->errors);
	add_u64(o, "inflight", st->inflight);
	add_lat(o, "rd_lat_p50_us", &st->rd_lat, 50);
	add_lat(o, "rd_lat_p99_us", &st->rd_lat, 99);
	add_lat(o, "wr_lat_p50_us", &st->wr_lat, 50);
	add_lat(o, "wr_lat_p99_us", &st->wr_lat, 99);
	free(st);
	return o;
}

static json_object *cmd_stats(struct bb_ctl_conn *c, json_object *req)
{
	struct blkback *bb = c->bb;
	const char *vdev;
	char dom[64], why[256];
	domid_t domid = 0;
	uint32_t devid = 0;
	int one, rc;
	json_object *o, *arr;

	if ((rc = field_domain(req, 0, dom, sizeof(dom), why, sizeof(why))) < 0 ||
	    (rc = field_str(req, "vdev", 0, &vdev, why, sizeof(why))) < 0)
		return reply_err(rc, why);
	one = dom[0] || vdev;
	if (one) {
		if (!dom[0] || !vdev)
			return reply_err(-EINVAL,
					 "stats of one disk needs both \"domain\" and \"vdev\"");
		if (bb_vdev_to_devid(vdev, &devid) < 0) {
			snprintf(why, sizeof(why),
				 "'%.32s' is not a Xen virtual disk name (xvda, xvdb, ...)", vdev);
			return reply_err(-EINVAL, why);
		}
		rc = resolve_domain(bb, dom, &domid, why, sizeof(why));
		if (rc < 0)
			return reply_err(rc, why);
		if (!bb_vbd_find(bb, domid, devid)) {
			snprintf(why, sizeof(why), "domain %.64s has no disk %.32s", dom, vdev);
			return reply_err(-ENOENT, why);
		}
	}
	arr = json_object_new_array();
	for (struct bb_vbd *v = bb->vbds; v; v = v->next) {
		if (one && (v->domid != domid || v->devid != devid))
			continue;
		json_object_array_add(arr, vbd_stats_json(v));
	}
	o = reply_ok();
	json_object_object_add(o, "vbds", arr);
	return o;
}

static void attached_one(void *arg, domid_t domid, const char *vdev)
{
	json_object *e = json_object_new_object();

	json_object_object_add(e, "domid", json_object_new_int(domid));
	json_object_object_add(e, "vdev", json_object_new_string(vdev));
	json_object_array_add(arg, e);
}

static json_object *cmd_attached(struct bb_ctl_conn *c, json_object *req)
{
	const char *vol;
	char why[256];
	json_object *o, *arr;
	int rc;

	rc = field_str(req, "vol", 1, &vol, why, sizeof(why));
	if (rc < 0)
		return reply_err(rc, why);
	arr = json_object_new_array();
	bb_xenbus_vol_users(c->bb, vol, attached_one, arr);
	o = reply_ok();
	json_object_object_add(o, "vbds", arr);
	return o;
}

/* Answer one request line. */
static void handle_line(struct bb_ctl_conn *c, const char *line)
{
	enum json_tokener_error jerr = json_tokener_success;
	json_object *req = json_tokener_parse_verbose(line, &jerr);
	json_object *ans = NULL;
	const char *cmd;
	char why[256];
	int rc;

	if (!req || !json_object_is_type(req, json_type_object)) {
		snprintf(why, sizeof(why), "the request is not a JSON object%s%s",
			 req ? "" : ": ", req ? "" : json_tokener_error_desc(jerr));
		conn_reply(c, reply_err(-EINVAL, why));
		c->closing = 1;
		json_object_put(req);
		return;
	}
	rc = field_str(req, "cmd", 1, &cmd, why, sizeof(why));
	if (rc < 0) {
		ans = reply_err(rc, why);
	} else if (strcmp(cmd, "ping") == 0) {
		ans = cmd_ping(c);
	} else if (strcmp(cmd, "stats") == 0) {
		ans = cmd_stats(c, req);
	} else if (strcmp(cmd, "attached") == 0) {
		ans = cmd_attached(c, req);
	} else if ((ans = bb_ctl_qos(c->bb, cmd, req))) {
		/* "set" and "qos" (qos_daemon.c) */
	} else if ((ans = bb_ctl_dedup(c->bb, cmd, req))) {
		/* a dedup command (ctl_dedup.c) */
	} else if (strcmp(cmd, "attach") != 0 && strcmp(cmd, "detach") != 0 &&
		   strcmp(cmd, "resize") != 0) {
		snprintf(why, sizeof(why), "unknown command '%.32s'", cmd);
		ans = reply_err(-EINVAL, why);
	} else if (c->bb->shutting_down) {
		ans = reply_err(-ESHUTDOWN, "blkbackd is shutting down");
	} else if (strcmp(cmd, "attach") == 0) {
		ans = cmd_attach(c, req);
	} else if (strcmp(cmd, "detach") == 0) {
		ans = cmd_detach(c, req);
	} else {
		ans = cmd_resize(c, req);
	}
	if (ans)
		conn_reply(c, ans);
	json_object_put(req);
}

/* Handle every complete line in the input buffer (stops while a detach is pending). */
static void conn_process(struct bb_ctl_conn *c)
{
	char *nl;

	while (!c->busy && !c->closing && (nl = memchr(c->in, '\n', c->in_len))) {
		size_t used = (size_t)(nl - c->in) + 1;

		*nl = '\0';
		c->dispatching = 1;
		if (memchr(c->in, '\0', (size_t)(nl - c->in))) {
			conn_reply(c, reply_err(-EINVAL, "the request contains a NUL byte"));
			c->closing = 1;
		} else {
			handle_line(c, c->in);
		}
		c->dispatching = 0;
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	if (!c->busy && !c->closing && c->in_len >= CTL_MAX_LINE) {
		char why[96];

		snprintf(why, sizeof(why), "the request is longer than %d bytes", CTL_MAX_LINE);
		conn_reply(c, reply_err(-E2BIG, why));
		c->closing = 1;
	}
	conn_flush(c);
}

static void conn_cb(void *arg, uint32_t events)
{
	struct bb_ctl_conn *c = arg;

	if (events & EPOLLOUT) {
		if (conn_flush(c) < 0)
			return;
	}
	if (events & EPOLLIN) {
		ssize_t n = recv(c->fd, c->in + c->in_len, CTL_MAX_LINE - c->in_len, MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			conn_close(c);
			return;
		}
		if (n > 0)
			c->in_len += (size_t)n;
		conn_process(c);
		return;
	}
	if (events & (EPOLLHUP | EPOLLERR))
		conn_close(c);
}

static void conn_close(struct bb_ctl_conn *c)
{
	struct blkback *bb = c->bb;
	struct bb_ctl_conn **pp;

	bb_ctl_conn_forget(bb, c);
	hv_loop_del(bb->loop, c->fd);
	close(c->fd);
	for (pp = &bb->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	free(c->out);
	free(c);
}

void bb_ctl_conn_forget(struct blkback *bb, struct bb_ctl_conn *c)
{
	for (struct bb_vbd *v = bb->vbds; v; v = v->next)
		if (v->detach_conn == c)
			v->detach_conn = NULL;
}

void bb_ctl_detach_done(struct bb_ctl_conn *c, int err, const char *why)
{
	c->busy = 0;
	conn_reply(c, err ? reply_err(err, why ? why : strerror(-err)) : reply_ok());
	if (c->dispatching)
		return; /* conn_process goes on with the next line and flushes */
	conn_process(c);
}

static void listen_cb(void *arg, uint32_t events)
{
	struct blkback *bb = arg;

	(void)events;
	for (;;) {
		int fd = accept4(bb->ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct bb_ctl_conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_err("accept on %s: %s", bb->ctl_path, strerror(errno));
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->bb = bb;
		c->fd = fd;
		if (hv_loop_add(bb->loop, fd, EPOLLIN, conn_cb, c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = bb->conns;
		bb->conns = c;
	}
}

int bb_ctl_start(struct blkback *bb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int rc;

	rc = pool_ctl_path(bb->opts.pool, bb->ctl_path, sizeof(bb->ctl_path));
	if (rc < 0)
		return rc;
	if (strlen(bb->ctl_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, bb->ctl_path, strlen(bb->ctl_path) + 1);
	bb->ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (bb->ctl_fd < 0)
		return -errno;
	/* We hold the pool lock, so a socket file left here is a dead daemon's. */
	unlink(bb->ctl_path);
	if (bind(bb->ctl_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(bb->ctl_fd, 16) < 0) {
		rc = -errno;
		goto err;
	}
	rc = hv_loop_add(bb->loop, bb->ctl_fd, EPOLLIN, listen_cb, bb);
	if (rc < 0)
		goto err_unlink;
	return 0;

err_unlink:
	unlink(bb->ctl_path);
err:
	close(bb->ctl_fd);
	bb->ctl_fd = -1;
	return rc;
}

void bb_ctl_stop_listening(struct blkback *bb)
{
	if (bb->ctl_fd < 0)
		return;
	hv_loop_del(bb->loop, bb->ctl_fd);
	close(bb->ctl_fd);
	bb->ctl_fd = -1;
	unlink(bb->ctl_path);
}

void bb_ctl_stop(struct blkback *bb)
{
	bb_ctl_stop_listening(bb);
	while (bb->conns) {
		struct bb_ctl_conn *c = bb->conns;

		/* Best effort: flush what is queued, then close. */
		c->closing = 1;
		if (conn_flush(c) == 0)
			conn_close(c);
	}
}
