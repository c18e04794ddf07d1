/*
 * xs_server.c - the xenstore daemon's I/O half: unix listeners (one domid each), connections
 * with buffered non-blocking input and output, framing and validation of struct xsd_sockmsg,
 * dispatch of the XS_* requests onto the store, watches, and the domain list behind
 * INTRODUCE / RELEASE / IS_DOMAIN_INTRODUCED and the special watches.
 *
 * Robustness rules, as C xenstored: a header announcing more than XENSTORE_PAYLOAD_MAX bytes,
 * a read error or an output queue over its bound closes that one connection; anything else
 * malformed (unknown type, missing NUL, bad arguments) gets an XS_ERROR reply.
 *
 * Connections closed while the server is working (a watch event overflowing some other
 * client's queue, say) are only marked dead; they are freed when the outermost entry point
 * returns, so no loop over the connection list ever meets a freed one.
 */
#define LOG_TAG "xs"
#include "hv/xs_internal.h"

#include "common/log.h"
#include "hv/loop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define XS_DEF_VALUE_BYTES 2048
#define XS_DEF_NODES	   1000
#define XS_DEF_WATCHES	   128
#define XS_DEF_TRANS	   10
#define XS_DEF_CONNS	   64
#define XS_DEF_OUT_BYTES   (1u << 20)
#define XS_PERMS_PER_NODE  5	/* xenstored's quota-nperm */
#define XS_TXN_NODES	   1024 /* xenstored's quota-transaction-nodes */
/* A guest transaction's overlay; xenstored bounds all of a domain's memory to 2.5 MiB. */
#define XS_TXN_BYTES	    (256u << 10)
#define XS_READS_PER_WAKE   16 /* input chunks handled per wakeup, for fairness */
#define XS_ACCEPTS_PER_WAKE 16
#define XS_LISTEN_BACKLOG   64

struct xs_watch {
	struct xs_watch *next;
	char *node; /**< canonical path or "@..." */
	char *token;
	uint32_t prefix_len; /**< strip this from event paths: the watch was relative */
};

struct xs_ctxn {
	struct xs_ctxn *next;
	uint32_t id;
	struct xs_txn *t;
};

struct xs_out {
	struct xs_out *next;
	uint32_t len, off;
	char data[];
};

struct xs_sdom {
	struct xs_sdom *next;
	domid_t domid;
	bool introduced;
	uint32_t nwatches; /**< over all its connections */
	uint32_t ntxns;	   /**< open transactions, over all its connections */
	uint32_t nconns;
};

struct xs_conn {
	struct xs_conn *next;
	struct xs_server *xs;
	struct xs_sdom *dom;
	int fd; /**< -1: in-memory connection */
	bool dead;
	bool pollout; /**< EPOLLOUT is being watched */
	/* Input: the header, then its payload; one spare byte keeps a NUL after it. */
	struct xsd_sockmsg hdr;
	uint32_t hdr_used, in_used;
	char in[XENSTORE_PAYLOAD_MAX + 1];
	struct xs_out *out_head, **out_tail;
	size_t out_bytes;
	struct xs_watch *watches;
	struct xs_ctxn *txns;
	uint32_t next_txid;
};

struct xs_listener {
	struct xs_listener *next;
	struct xs_server *xs;
	int fd;
	domid_t domid;
	char *path;
};

struct xs_server {
	struct hv_loop *loop;
	struct xs_limits lim;
	struct xs_server_hooks hooks;
	struct xs_store *store;
	struct xs_conn *conns;
	struct xs_listener *listeners;
	struct xs_sdom *doms;
	int depth;    /**< nesting of entry points; dead connections are freed at 0 */
	bool reaping; /**< some connection died */
	struct log_ratelimit rl;
};

struct xs_req {
	const struct xsd_sockmsg *hdr;
	const char *buf;
	uint32_t len;
	struct xs_ctxn *txn;
};

/* ---- domains ---- */

static struct xs_sdom *dom_get(struct xs_server *xs, domid_t domid)
{
	struct xs_sdom *d;

	for (d = xs->doms; d; d = d->next)
		if (d->domid == domid)
			return d;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->domid = domid;
	d->introduced = domid == 0;
	d->next = xs->doms;
	xs->doms = d;
	return d;
}

static struct xs_sdom *dom_find(struct xs_server *xs, domid_t domid)
{
	for (struct xs_sdom *d = xs->doms; d; d = d->next)
		if (d->domid == domid)
			return d;
	return NULL;
}

/* ---- output ---- */

static void conn_kill(struct xs_conn *c, const char *why);

static void conn_set_pollout(struct xs_conn *c, bool on)
{
	if (c->fd < 0 || c->pollout == on)
		return;
	if (hv_loop_mod(c->xs->loop, c->fd, EPOLLIN | (on ? EPOLLOUT : 0)) == 0)
		c->pollout = on;
}

/* Send what is queued; returns -errno on a dead socket. */
static int conn_flush(struct xs_conn *c)
{
	while (c->out_head) {
		struct iovec iov[16];
		struct msghdr mh = {.msg_iov = iov};
		struct xs_out *o = c->out_head;
		ssize_t n;

		for (; o && mh.msg_iovlen < 16; o = o->next) {
			iov[mh.msg_iovlen].iov_base = o->data + o->off;
			iov[mh.msg_iovlen++].iov_len = o->len - o->off;
		}
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c->out_bytes -= (size_t)n;
		while (n > 0) {
			o = c->out_head;
			if ((size_t)n >= o->len - o->off) {
				n -= o->len - o->off;
				c->out_head = o->next;
				free(o);
			} else {
				o->off += (uint32_t)n;
				n = 0;
			}
		}
		if (!c->out_head)
			c->out_tail = &c->out_head;
	}
	conn_set_pollout(c, c->out_head != NULL);
	return 0;
}

/* Queue one frame (sending it right away when nothing is ahead of it). */
static void conn_send(struct xs_conn *c, uint32_t type, uint32_t req_id, uint32_t tx_id,
		      const void *payload, uint32_t len)
{
	struct xsd_sockmsg h = {.type = type, .req_id = req_id, .tx_id = tx_id, .len = len};
	size_t total = sizeof(h) + len, done = 0;
	struct xs_out *o;

	if (c->dead)
		return;
	if (c->fd >= 0 && !c->out_head) {
		struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)payload, len}};
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
		ssize_t n;

		do {
			n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_kill(c, "send failed");
			return;
		}
		done = n > 0 ? (size_t)n : 0;
		if (done == total)
			return;
	}
	if (c->out_bytes + total - done > c->xs->lim.max_conn_out_bytes) {
		conn_kill(c, "output queue over its bound (client not reading)");
		return;
	}
	o = malloc(sizeof(*o) + total);
	if (!o) {
		conn_kill(c, "out of memory for output");
		return;
	}
	memcpy(o->data, &h, sizeof(h));
	if (len)
		memcpy(o->data + sizeof(h), payload, len);
	o->len = (uint32_t)total;
	o->off = (uint32_t)done;
	o->next = NULL;
	*c->out_tail = o;
	c->out_tail = &o->next;
	c->out_bytes += total - done;
	conn_set_pollout(c, true);
}

static void send_reply(struct xs_conn *c, const struct xs_req *r, uint32_t type, const void *data,
		       uint32_t len);

static void send_error(struct xs_conn *c, const struct xs_req *r, int err)
{
	const char *s = "EINVAL";

	for (size_t i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++) {
		if (xsd_errors[i].errnum == -err) {
			s = xsd_errors[i].errstring;
			break;
		}
	}
	conn_send(c, XS_ERROR, r->hdr->req_id, r->hdr->tx_id, s, (uint32_t)strlen(s) + 1);
}

static void send_reply(struct xs_conn *c, const struct xs_req *r, uint32_t type, const void *data,
		       uint32_t len)
{
	if (len > XENSTORE_PAYLOAD_MAX) {
		send_error(c, r, -E2BIG);
		return;
	}
	conn_send(c, type, r->hdr->req_id, r->hdr->tx_id, data, len);
}

static void send_ok(struct xs_conn *c, const struct xs_req *r)
{
	send_reply(c, r, r->hdr->type, "OK", 3);
}

/* ---- watches ---- */

/* Is @path at or below @watch? "/" covers every ordinary path. */
static bool is_child(const char *path, const char *watch)
{
	size_t len = strlen(watch);

	if (strcmp(watch, "/") == 0)
		return path[0] == '/';
	return strncmp(path, watch, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

static void watch_event(struct xs_conn *c, const struct xs_watch *w, const char *path)
{
	char buf[XENSTORE_PAYLOAD_MAX];
	const char *p = path + w->prefix_len;
	size_t plen = strlen(p), tlen = strlen(w->token);

	/* An event that does not fit is dropped, as xenstored does. */
	if (plen + tlen + 2 > sizeof(buf))
		return;
	memcpy(buf, p, plen + 1);
	memcpy(buf + plen + 1, w->token, tlen + 1);
	conn_send(c, XS_WATCH_EVENT, 0, 0, buf, (uint32_t)(plen + tlen + 2));
}

static void server_event(void *arg, const struct xs_event *ev)
{
	struct xs_server *xs = arg;
	bool special = ev->path[0] == '@';

	for (struct xs_conn *c = xs->conns; c; c = c->next) {
		int visible = -1; /* computed on the first matching watch */

		if (c->dead)
			continue;
		for (struct xs_watch *w = c->watches; w; w = w->next) {
			bool match;

			if (special || w->node[0] == '@')
				match = strcmp(ev->path, w->node) == 0;
			else if (ev->exact)
				match = strcmp(ev->path, w->node) == 0;
			else
				match = is_child(ev->path, w->node);
			if (!match)
				continue;
			if (visible < 0)
				visible = xs_store_event_visible(xs->store, ev, c->dom->domid);
			if (visible) {
				watch_event(c, w, ev->path);
				/* An overflowing queue closed it, freeing its watches. */
				if (c->dead)
					break;
			}
		}
	}
}

static void watch_free(struct xs_conn *c, struct xs_watch *w)
{
	c->dom->nwatches--;
	free(w->node);
	free(w->token);
	free(w);
}

static void conn_drop_watches(struct xs_conn *c)
{
	while (c->watches) {
		struct xs_watch *w = c->watches;

		c->watches = w->next;
		watch_free(c, w);
	}
}

static void conn_drop_txns(struct xs_conn *c)
{
	while (c->txns) {
		struct xs_ctxn *x = c->txns;

		c->txns = x->next;
		xs_store_txn_end(x->t, 0);
		free(x);
		c->dom->ntxns--;
	}
}

/* ---- connection lifetime ---- */

static void conn_kill(struct xs_conn *c, const char *why)
{
	struct xs_server *xs = c->xs;

	if (c->dead)
		return;
	if (why)
		LOG_RATELIMITED(&xs->rl, LOG_LVL_WARN, "d%u: closing connection: %s",
				(unsigned)c->dom->domid, why);
	c->dead = true;
	xs->reaping = true;
	if (c->fd >= 0) {
		hv_loop_del(xs->loop, c->fd);
		close(c->fd);
		c->fd = -1;
	}
	conn_drop_watches(c);
	conn_drop_txns(c);
	while (c->out_head) {
		struct xs_out *o = c->out_head;

		c->out_head = o->next;
		free(o);
	}
	c->out_tail = &c->out_head;
	c->out_bytes = 0;
	c->dom->nconns--;
}

static void server_reap(struct xs_server *xs)
{
	struct xs_conn **pp = &xs->conns;

	if (!xs->reaping)
		return;
	while (*pp) {
		struct xs_conn *c = *pp;

		if (c->dead) {
			*pp = c->next;
			free(c);
		} else {
			pp = &c->next;
		}
	}
	xs->reaping = false;
}

static void server_enter(struct xs_server *xs)
{
	xs->depth++;
}

static void server_leave(struct xs_server *xs)
{
	if (--xs->depth == 0)
		server_reap(xs);
}

static struct xs_conn *conn_new(struct xs_server *xs, struct xs_sdom *d, int fd)
{
	struct xs_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->xs = xs;
	c->dom = d;
	c->fd = fd;
	c->out_tail = &c->out_head;
	c->next_txid = 1;
	c->next = xs->conns;
	xs->conns = c;
	d->nconns++;
	return c;
}

/* ---- request helpers ---- */

/* The payload as exactly one NUL-terminated string, or NULL. */
static const char *onearg(const struct xs_req *r)
{
	if (!r->len || memchr(r->buf, 0, r->len) != r->buf + r->len - 1)
		return NULL;
	return r->buf;
}

/* Number of NUL-terminated strings; vec (may be NULL) gets the first @max. */
static uint32_t get_strings(const struct xs_req *r, const char **vec, uint32_t max)
{
	uint32_t n = 0, off = 0;

	while (off < r->len) {
		const char *nul = memchr(r->buf + off, 0, r->len - off);

		if (!nul)
			break;
		if (vec && n < max)
			vec[n] = r->buf + off;
		n++;
		off = (uint32_t)(nul - r->buf) + 1;
	}
	return n;
}

/* A domid as xenstored parses it: decimal, nothing after, at most 65535. */
static int parse_domid(const char *s, domid_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -EINVAL;
	*out = (domid_t)v;
	return 0;
}

static struct xs_txn *req_txn(const struct xs_req *r)
{
	return r->txn ? r->txn->t : NULL;
}

static int path_arg(struct xs_conn *c, const char *in, int special, char *out, int *rel)
{
	if (!in)
		return -EINVAL;
	return xs_canonicalize(c->dom->domid, in, special, out, rel);
}

/* ---- handlers: 0 after replying, or -errno for send_error ---- */

static int do_read(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	const char *val;
	uint32_t len;
	int rc = path_arg(c, onearg(r), 0, path, NULL);

	if (!rc)
		rc = xs_store_read(c->xs->store, c->dom->domid, req_txn(r), path, &val, &len);
	if (rc)
		return rc;
	send_reply(c, r, XS_READ, val, len);
	return 0;
}

static int do_write(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	const char *vec[1];
	size_t off;
	int rc;

	/* The value is binary and may hold NULs: only the path must be terminated. */
	if (get_strings(r, vec, 1) < 1)
		return -EINVAL;
	rc = path_arg(c, vec[0], 0, path, NULL);
	if (rc)
		return rc;
	off = strlen(vec[0]) + 1;
	rc = xs_store_write(c->xs->store, c->dom->domid, req_txn(r), path, r->buf + off,
			    r->len - (uint32_t)off);
	if (rc)
		return rc;
	send_ok(c, r);
	return 0;
}

static int do_mkdir(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	int rc = path_arg(c, onearg(r), 0, path, NULL);

	if (!rc)
		rc = xs_store_mkdir(c->xs->store, c->dom->domid, req_txn(r), path);
	if (rc)
		return rc;
	send_ok(c, r);
	return 0;
}

static int do_rm(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	int rc = path_arg(c, onearg(r), 0, path, NULL);

	if (!rc)
		rc = xs_store_rm(c->xs->store, c->dom->domid, req_txn(r), path);
	if (rc)
		return rc;
	send_ok(c, r);
	return 0;
}

static int do_directory(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	const char *ch;
	uint32_t len;
	uint64_t gen;
	int rc = path_arg(c, onearg(r), 0, path, NULL);

	if (!rc)
		rc = xs_store_directory(c->xs->store, c->dom->domid, req_txn(r), path, &ch, &len,
					&gen);
	if (rc)
		return rc;
	send_reply(c, r, XS_DIRECTORY, ch, len);
	return 0;
}

/*
 * "<path>|<offset>|" -> "<gen>|<names from offset>|" with one extra NUL once the list is
 * complete; libxenstore falls back to it when DIRECTORY answers E2BIG.
 */
static int do_directory_part(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF], out[XENSTORE_PAYLOAD_MAX];
	const char *vec[2], *ch;
	uint32_t len, off, genlen, n = 0, maxlen;
	uint64_t gen;
	int rc;

	if (get_strings(r, vec, 2) != 2)
		return -EINVAL;
	rc = path_arg(c, vec[0], 0, path, NULL);
	if (!rc)
		rc = xs_store_directory(c->xs->store, c->dom->domid, req_txn(r), path, &ch, &len,
					&gen);
	if (rc)
		return rc;
	off = (uint32_t)strtoul(vec[1], NULL, 10);
	genlen = (uint32_t)snprintf(out, sizeof(out), "%llu", (unsigned long long)gen) + 1;
	if (off >= len) {
		out[genlen] = '\0';
		send_reply(c, r, XS_DIRECTORY_PART, out, genlen + 1);
		return 0;
	}
	/* Whole names only, leaving room for the final extra NUL. */
	maxlen = (uint32_t)sizeof(out) - genlen - 1;
	while (off + n < len) {
		uint32_t l = (uint32_t)strnlen(ch + off + n, len - off - n) + 1;

		if (n + l > maxlen)
			break;
		n += l;
	}
	memcpy(out + genlen, ch + off, n);
	if (off + n >= len)
		out[genlen + n++] = '\0';
	send_reply(c, r, XS_DIRECTORY_PART, out, genlen + n);
	return 0;
}

static int do_get_perms(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF], out[XENSTORE_PAYLOAD_MAX];
	const struct xs_perm *p;
	uint32_t n, len = 0;
	int rc = path_arg(c, onearg(r), 1, path, NULL);

	if (!rc)
		rc = xs_store_get_perms(c->xs->store, c->dom->domid, req_txn(r), path, &p, &n);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		if (len + XS_PERM_STR_MAX > sizeof(out))
			return -E2BIG; /* the reply would not fit, as xenstored answers */
		len += (uint32_t)xs_perm_format(&p[i], out + len) + 1;
	}
	send_reply(c, r, XS_GET_PERMS, out, len);
	return 0;
}

static int do_set_perms(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	struct xs_perm perms[XENSTORE_PAYLOAD_MAX / 3];
	const char *vec[1];
	uint32_t n = get_strings(r, vec, 1);
	int rc;

	if (n < 2)
		return -EINVAL;
	n--;
	if (n > sizeof(perms) / sizeof(perms[0]))
		return c->dom->domid ? -ENOSPC : -EINVAL;
	rc = path_arg(c, vec[0], 1, path, NULL);
	if (!rc)
		rc = xs_perms_parse(vec[0] + strlen(vec[0]) + 1, n, perms);
	if (!rc)
		rc = xs_store_set_perms(c->xs->store, c->dom->domid, req_txn(r), path, perms, n);
	if (rc)
		return rc;
	send_ok(c, r);
	return 0;
}

static int do_watch(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	const char *vec[2];
	struct xs_watch *w;
	int rel, rc;

	if (get_strings(r, vec, 2) != 2)
		return -EINVAL;
	rc = path_arg(c, vec[0], 1, path, &rel);
	if (rc)
		return rc;
	for (w = c->watches; w; w = w->next)
		if (strcmp(w->node, path) == 0 && strcmp(w->token, vec[1]) == 0)
			return -EEXIST;
	if (c->dom->domid != 0 && c->dom->nwatches >= c->xs->lim.max_watches_per_dom)
		return -ENOSPC;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->node = strdup(path);
	w->token = strdup(vec[1]);
	if (!w->node || !w->token) {
		free(w->node);
		free(w->token);
		free(w);
		return -ENOMEM;
	}
	if (rel)
		w->prefix_len = (uint32_t)(strlen(path) - strlen(vec[0]));
	/* Append: events for several watches come out in registration order. */
	{
		struct xs_watch **pp = &c->watches;

		while (*pp)
			pp = &(*pp)->next;
		*pp = w;
	}
	c->dom->nwatches++;
	send_ok(c, r);
	/* Fire once right away, as xenstored: clients read the initial state on this event. */
	if (!c->dead)
		watch_event(c, w, path);
	return 0;
}

static int do_unwatch(struct xs_conn *c, const struct xs_req *r)
{
	char path[XS_PATH_BUF];
	const char *vec[2];
	int rc;

	if (get_strings(r, vec, 2) != 2)
		return -EINVAL;
	rc = path_arg(c, vec[0], 1, path, NULL);
	if (rc)
		return rc;
	for (struct xs_watch **pp = &c->watches; *pp; pp = &(*pp)->next) {
		struct xs_watch *w = *pp;

		if (strcmp(w->node, path) == 0 && strcmp(w->token, vec[1]) == 0) {
			*pp = w->next;
			watch_free(c, w);
			send_ok(c, r);
			return 0;
		}
	}
	return -ENOENT;
}

static int do_reset_watches(struct xs_conn *c, const struct xs_req *r)
{
	conn_drop_watches(c);
	conn_drop_txns(c);
	send_ok(c, r);
	return 0;
}

static int do_transaction_start(struct xs_conn *c, const struct xs_req *r)
{
	char id[16];
	struct xs_ctxn *x;
	int rc;

	/* No nesting: a request already inside a transaction cannot start one. */
	if (r->txn)
		return -EBUSY;
	if (c->dom->domid != 0 && c->dom->ntxns >= c->xs->lim.max_trans_per_dom)
		return -ENOSPC;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	rc = xs_store_txn_start(c->xs->store, c->dom->domid, &x->t);
	if (rc) {
		free(x);
		return rc;
	}
	/* Ids are per connection; skip 0 (no transaction) and any still in use. */
	for (;;) {
		struct xs_ctxn *y;

		x->id = c->next_txid++;
		if (!x->id)
			continue;
		for (y = c->txns; y && y->id != x->id; y = y->next)
			;
		if (!y)
			break;
	}
	x->next = c->txns;
	c->txns = x;
	c->dom->ntxns++;
	snprintf(id, sizeof(id), "%u", x->id);
	send_reply(c, r, XS_TRANSACTION_START, id, (uint32_t)strlen(id) + 1);
	return 0;
}

static int do_transaction_end(struct xs_conn *c, const struct xs_req *r)
{
	const char *arg = onearg(r);
	struct xs_ctxn **pp;
	int rc;

	if (!arg || (strcmp(arg, "T") != 0 && strcmp(arg, "F") != 0))
		return -EINVAL;
	if (!r->txn)
		return -ENOENT;
	for (pp = &c->txns; *pp != r->txn; pp = &(*pp)->next)
		;
	*pp = r->txn->next;
	c->dom->ntxns--;
	rc = xs_store_txn_end(r->txn->t, arg[0] == 'T');
	free(r->txn);
	if (rc)
		return rc;
	send_ok(c, r);
	return 0;
}

static int do_get_domain_path(struct xs_conn *c, const struct xs_req *r)
{
	const char *arg = onearg(r);
	char path[32];
	domid_t domid;

	if (!arg || parse_domid(arg, &domid))
		return -EINVAL;
	snprintf(path, sizeof(path), "/local/domain/%u", (unsigned)domid);
	send_reply(c, r, XS_GET_DOMAIN_PATH, path, (uint32_t)strlen(path) + 1);
	return 0;
}

static int fire_special(struct xs_server *xs, const char *name)
{
	return xs_store_fire(xs->store, name);
}

static int introduce(struct xs_server *xs, domid_t domid)
{
	struct xs_sdom *d;

	if (domid == 0 || domid >= DOMID_FIRST_RESERVED)
		return -EINVAL;
	if (xs->hooks.domain_exists && !xs->hooks.domain_exists(xs->hooks.arg, domid))
		return -EINVAL;
	d = dom_get(xs, domid);
	if (!d)
		return -ENOMEM;
	if (d->introduced)
		return 0;
	d->introduced = true;
	fire_special(xs, "@introduceDomain");
	return 0;
}

/* "<domid>|<gfn>|<evtchn>|": the gfn and port only matter to a ring-based xenstored. */
static int do_introduce(struct xs_conn *c, const struct xs_req *r)
{
	const char *vec[3];
	domid_t domid;
	int rc;

	if (get_strings(r, vec, 3) < 3)
		return -EINVAL;
	if (parse_domid(vec[0], &domid) || atoi(vec[2]) <= 0)
		return -EINVAL;
	rc = introduce(c->xs, domid);
	if (rc)
		return rc;
	send_ok(c, r);
	return 0;
}

/* Close @domid's connections without firing anything for them. */
static void drop_domain_conns(struct xs_server *xs, domid_t domid)
{
	for (struct xs_conn *c = xs->conns; c; c = c->next)
		if (!c->dead && c->dom->domid == domid)
			conn_kill(c, NULL);
}

static int do_release(struct xs_conn *c, const struct xs_req *r)
{
	const char *arg = onearg(r);
	struct xs_sdom *d;
	domid_t domid;

	if (!arg || parse_domid(arg, &domid) || domid == 0)
		return -EINVAL;
	d = dom_find(c->xs, domid);
	if (!d || !d->introduced)
		return -ENOENT;
	d->introduced = false;
	drop_domain_conns(c->xs, domid);
	fire_special(c->xs, "@releaseDomain");
	send_ok(c, r);
	return 0;
}

static int do_is_domain_introduced(struct xs_conn *c, const struct xs_req *r)
{
	const char *arg = onearg(r);
	struct xs_sdom *d;
	domid_t domid;
	bool yes;

	if (!arg || parse_domid(arg, &domid))
		return -EINVAL;
	d = dom_find(c->xs, domid);
	yes = domid == 0 || domid == DOMID_SELF || (d && d->introduced);
	send_reply(c, r, XS_IS_DOMAIN_INTRODUCED, yes ? "T" : "F", 2);
	return 0;
}

#define XS_F_PRIV  1u /* dom0 only */
#define XS_F_NOTID 2u /* tx_id ignored */

static const struct {
	int (*fn)(struct xs_conn *c, const struct xs_req *r);
	unsigned int flags;
} handlers[XS_TYPE_COUNT] = {
    [XS_DIRECTORY] = {do_directory, 0},
    [XS_READ] = {do_read, 0},
    [XS_GET_PERMS] = {do_get_perms, 0},
    [XS_WATCH] = {do_watch, XS_F_NOTID},
    [XS_UNWATCH] = {do_unwatch, XS_F_NOTID},
    [XS_TRANSACTION_START] = {do_transaction_start, 0},
    [XS_TRANSACTION_END] = {do_transaction_end, 0},
    [XS_INTRODUCE] = {do_introduce, XS_F_PRIV},
    [XS_RELEASE] = {do_release, XS_F_PRIV},
    [XS_GET_DOMAIN_PATH] = {do_get_domain_path, 0},
    [XS_WRITE] = {do_write, 0},
    [XS_MKDIR] = {do_mkdir, 0},
    [XS_RM] = {do_rm, 0},
    [XS_SET_PERMS] = {do_set_perms, 0},
    [XS_IS_DOMAIN_INTRODUCED] = {do_is_domain_introduced, XS_F_PRIV},
    [XS_RESET_WATCHES] = {do_reset_watches, 0},
    [XS_DIRECTORY_PART] = {do_directory_part, 0},
};

static void process_message(struct xs_conn *c)
{
	struct xs_req r = {.hdr = &c->hdr, .buf = c->in, .len = c->hdr.len};
	uint32_t type = c->hdr.type;
	int rc;

	c->in[c->hdr.len] = '\0'; /* a sentinel for the parsers, not part of the payload */
	/* Types we do not implement (CONTROL, RESUME, SET_TARGET, ...) get ENOSYS, as xenstored. */
	if (type >= XS_TYPE_COUNT || !handlers[type].fn) {
		LOG_RATELIMITED(&c->xs->rl, LOG_LVL_DEBUG, "d%u: unknown type %u",
				(unsigned)c->dom->domid, type);
		send_error(c, &r, -ENOSYS);
		return;
	}
	if ((handlers[type].flags & XS_F_PRIV) && c->dom->domid != 0) {
		send_error(c, &r, -EACCES);
		return;
	}
	if (!(handlers[type].flags & XS_F_NOTID) && c->hdr.tx_id) {
		for (r.txn = c->txns; r.txn && r.txn->id != c->hdr.tx_id; r.txn = r.txn->next)
			;
		if (!r.txn) {
			send_error(c, &r, -ENOENT);
			return;
		}
	}
	rc = handlers[type].fn(c, &r);
	if (rc)
		send_error(c, &r, rc);
}

/* Consume input bytes: header, payload, dispatch, repeat. */
static void conn_input(struct xs_conn *c, const char *buf, size_t len)
{
	while (len && !c->dead) {
		size_t n;

		if (c->hdr_used < sizeof(c->hdr)) {
			n = sizeof(c->hdr) - c->hdr_used;
			if (n > len)
				n = len;
			memcpy((char *)&c->hdr + c->hdr_used, buf, n);
			c->hdr_used += (uint32_t)n;
			buf += n;
			len -= n;
			if (c->hdr_used < sizeof(c->hdr))
				return;
			if (c->hdr.len > XENSTORE_PAYLOAD_MAX) {
				conn_kill(c, "frame longer than XENSTORE_PAYLOAD_MAX");
				return;
			}
			c->in_used = 0;
		}
		n = c->hdr.len - c->in_used;
		if (n > len)
			n = len;
		memcpy(c->in + c->in_used, buf, n);
		c->in_used += (uint32_t)n;
		buf += n;
		len -= n;
		if (c->in_used == c->hdr.len) {
			process_message(c);
			c->hdr_used = 0;
			c->in_used = 0;
		}
	}
}

static void conn_cb(void *arg, uint32_t events)
{
	struct xs_conn *c = arg;
	struct xs_server *xs = c->xs;
	char buf[XENSTORE_PAYLOAD_MAX + sizeof(struct xsd_sockmsg)];

	server_enter(xs);
	if (events & EPOLLOUT) {
		if (conn_flush(c) < 0)
			conn_kill(c, NULL);
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (int i = 0; i < XS_READS_PER_WAKE && !c->dead; i++) {
			ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n <= 0) {
				/* Peer gone (a frame cut short included): drop only this one. */
				conn_kill(c, NULL);
				break;
			}
			conn_input(c, buf, (size_t)n);
		}
	}
	server_leave(xs);
}

static void listener_cb(void *arg, uint32_t events)
{
	struct xs_listener *l = arg;
	struct xs_server *xs = l->xs;

	(void)events;
	server_enter(xs);
	for (int i = 0; i < XS_ACCEPTS_PER_WAKE; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct xs_sdom *d;
		struct xs_conn *c;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				LOG_RATELIMITED(&xs->rl, LOG_LVL_WARN, "accept on %s: %s", l->path,
						strerror(errno));
			break;
		}
		d = dom_get(xs, l->domid);
		if (!d || (l->domid != 0 && d->nconns >= xs->lim.max_conns_per_dom)) {
			LOG_RATELIMITED(&xs->rl, LOG_LVL_WARN, "d%u: refusing connection: %s",
					(unsigned)l->domid,
					d ? "too many connections" : "out of memory");
			close(fd);
			continue;
		}
		c = conn_new(xs, d, fd);
		if (!c) {
			close(fd);
			continue;
		}
		if (hv_loop_add(xs->loop, fd, EPOLLIN, conn_cb, c) < 0)
			conn_kill(c, "cannot watch the socket");
	}
	server_leave(xs);
}

/* ---- public API ---- */

int xs_server_new(struct xs_server **out, struct hv_loop *loop, const struct xs_limits *lim,
		  const struct xs_server_hooks *hooks)
{
	struct xs_server *xs = calloc(1, sizeof(*xs));
	struct xs_store_limits sl;
	int rc;

	if (!xs)
		return -ENOMEM;
	xs->loop = loop;
	if (lim)
		xs->lim = *lim;
	if (!xs->lim.max_value_bytes)
		xs->lim.max_value_bytes = XS_DEF_VALUE_BYTES;
	if (!xs->lim.max_nodes_per_dom)
		xs->lim.max_nodes_per_dom = XS_DEF_NODES;
	if (!xs->lim.max_watches_per_dom)
		xs->lim.max_watches_per_dom = XS_DEF_WATCHES;
	if (!xs->lim.max_trans_per_dom)
		xs->lim.max_trans_per_dom = XS_DEF_TRANS;
	if (!xs->lim.max_conns_per_dom)
		xs->lim.max_conns_per_dom = XS_DEF_CONNS;
	if (!xs->lim.max_conn_out_bytes)
		xs->lim.max_conn_out_bytes = XS_DEF_OUT_BYTES;
	if (hooks)
		xs->hooks = *hooks;
	sl = (struct xs_store_limits){
	    .max_value_bytes = xs->lim.max_value_bytes,
	    .max_nodes_per_dom = xs->lim.max_nodes_per_dom,
	    .max_perms_per_node = XS_PERMS_PER_NODE,
	    .max_txn_nodes = XS_TXN_NODES,
	    .max_txn_bytes = XS_TXN_BYTES,
	};
	rc = xs_store_new(&xs->store, &sl, server_event, xs);
	if (rc) {
		free(xs);
		return rc;
	}
	if (!dom_get(xs, 0)) {
		xs_store_free(xs->store);
		free(xs);
		return -ENOMEM;
	}
	*out = xs;
	return 0;
}

static void listener_close(struct xs_server *xs, struct xs_listener *l)
{
	hv_loop_del(xs->loop, l->fd);
	close(l->fd);
	unlink(l->path);
	free(l->path);
	free(l);
}

void xs_server_free(struct xs_server *xs)
{
	if (!xs)
		return;
	server_enter(xs);
	for (struct xs_conn *c = xs->conns; c; c = c->next)
		conn_kill(c, NULL);
	while (xs->listeners) {
		struct xs_listener *l = xs->listeners;

		xs->listeners = l->next;
		listener_close(xs, l);
	}
	server_leave(xs);
	server_reap(xs);
	while (xs->doms) {
		struct xs_sdom *d = xs->doms;

		xs->doms = d->next;
		free(d);
	}
	xs_store_free(xs->store);
	free(xs);
}

int xs_server_listen(struct xs_server *xs, const char *path, domid_t domid)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct xs_listener *l;
	int rc;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->xs = xs;
	l->domid = domid;
	l->path = strdup(path);
	if (!l->path) {
		rc = -ENOMEM;
		goto err_l;
	}
	if (!dom_get(xs, domid)) {
		rc = -ENOMEM;
		goto err_path;
	}
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		rc = -errno;
		goto err_path;
	}
	/* A socket file left by an earlier run would make bind fail. */
	if (unlink(path) < 0 && errno != ENOENT) {
		rc = -errno;
		goto err_fd;
	}
	if (bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(l->fd, XS_LISTEN_BACKLOG) < 0) {
		rc = -errno;
		goto err_unlink;
	}
	rc = hv_loop_add(xs->loop, l->fd, EPOLLIN, listener_cb, l);
	if (rc)
		goto err_unlink;
	l->next = xs->listeners;
	xs->listeners = l;
	return 0;

err_unlink:
	unlink(path);
err_fd:
	close(l->fd);
err_path:
	free(l->path);
err_l:
	free(l);
	return rc;
}

int xs_server_introduce(struct xs_server *xs, domid_t domid)
{
	int rc;

	server_enter(xs);
	rc = introduce(xs, domid);
	server_leave(xs);
	return rc;
}

int xs_server_release(struct xs_server *xs, domid_t domid)
{
	char path[32];
	struct xs_sdom *d;
	int rc;

	if (domid == 0 || domid >= DOMID_FIRST_RESERVED)
		return -EINVAL;
	server_enter(xs);
	for (struct xs_listener **pp = &xs->listeners; *pp;) {
		struct xs_listener *l = *pp;

		if (l->domid == domid) {
			*pp = l->next;
			listener_close(xs, l);
		} else {
			pp = &l->next;
		}
	}
	drop_domain_conns(xs, domid);
	snprintf(path, sizeof(path), "/local/domain/%u", (unsigned)domid);
	rc = xs_store_rm(xs->store, 0, NULL, path);
	if (rc == -ENOENT)
		rc = 0;
	xs_store_domain_gone(xs->store, domid);
	d = dom_find(xs, domid);
	if (d)
		d->introduced = false;
	fire_special(xs, "@releaseDomain");
	server_leave(xs);
	return rc;
}

int xs_server_write(struct xs_server *xs, const char *path, const void *val, size_t len)
{
	char p[XS_PATH_BUF];
	int rc;

	if (len > XENSTORE_PAYLOAD_MAX)
		return -E2BIG;
	rc = xs_canonicalize(0, path, 0, p, NULL);
	if (rc)
		return rc;
	server_enter(xs);
	rc = xs_store_write(xs->store, 0, NULL, p, val, (uint32_t)len);
	server_leave(xs);
	return rc;
}

int xs_server_rm(struct xs_server *xs, const char *path)
{
	char p[XS_PATH_BUF];
	int rc = xs_canonicalize(0, path, 0, p, NULL);

	if (rc)
		return rc;
	server_enter(xs);
	rc = xs_store_rm(xs->store, 0, NULL, p);
	server_leave(xs);
	return rc;
}

int xs_server_set_perms(struct xs_server *xs, const char *path, const char *perms, size_t len)
{
	char p[XS_PATH_BUF];
	struct xs_perm pv[XENSTORE_PAYLOAD_MAX / 3];
	uint32_t n = 0;
	int rc;

	if (len == 0 || len > XENSTORE_PAYLOAD_MAX || perms[len - 1] != '\0')
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		n += perms[i] == '\0';
	if (n > sizeof(pv) / sizeof(pv[0]))
		return -EINVAL;
	rc = xs_canonicalize(0, path, 1, p, NULL);
	if (!rc)
		rc = xs_perms_parse(perms, n, pv);
	if (rc)
		return rc;
	server_enter(xs);
	rc = xs_store_set_perms(xs->store, 0, NULL, p, pv, n);
	server_leave(xs);
	return rc;
}

int xs_server_read(struct xs_server *xs, const char *path, char **val, size_t *len)
{
	char p[XS_PATH_BUF];
	const char *v;
	uint32_t l;
	int rc = xs_canonicalize(0, path, 0, p, NULL);

	if (!rc)
		rc = xs_store_read(xs->store, 0, NULL, p, &v, &l);
	if (rc)
		return rc;
	*val = malloc(l + 1);
	if (!*val)
		return -ENOMEM;
	memcpy(*val, v, l);
	(*val)[l] = '\0';
	if (len)
		*len = l;
	return 0;
}

/* ---- in-memory connections ---- */

int xs_server_conn_mem(struct xs_server *xs, domid_t domid, struct xs_conn **out)
{
	struct xs_sdom *d = dom_get(xs, domid);

	if (!d)
		return -ENOMEM;
	*out = conn_new(xs, d, -1);
	return *out ? 0 : -ENOMEM;
}

int xs_server_conn_feed(struct xs_conn *c, const void *buf, size_t len)
{
	struct xs_server *xs = c->xs;
	int rc;

	server_enter(xs);
	conn_input(c, buf, len);
	rc = c->dead ? -ECONNRESET : 0;
	server_leave(xs);
	return rc;
}

void xs_server_conn_drain(struct xs_conn *c, void (*fn)(void *arg, const void *buf, size_t len),
			  void *arg)
{
	while (c->out_head) {
		struct xs_out *o = c->out_head;

		c->out_head = o->next;
		if (fn)
			fn(arg, o->data + o->off, o->len - o->off);
		free(o);
	}
	c->out_tail = &c->out_head;
	c->out_bytes = 0;
}

void xs_server_conn_close(struct xs_conn *c)
{
	struct xs_server *xs = c->xs;

	server_enter(xs);
	conn_kill(c, NULL);
	server_leave(xs);
}
