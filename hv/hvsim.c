/*
 * hvsim.c - the hvsimd instance: its directory and lock, the hv control sockets, and the
 * dispatch of control messages. Every message from a guest socket is untrusted: its size,
 * type and fields are checked here before any handler runs, and a bad one gets an error reply
 * (or, when it cannot even be answered, a closed connection).
 */
#define LOG_TAG "hvsim"
#include "hv/hvsim_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "hv/hvsim_msg.h"
#include "hv/loop.h"
#include "hv/xs_server.h"

/* The longest socket path below DIR. */
#define HVSIM_LONGEST_SUFFIX "/domains/32751/xenstore.sock"

static struct log_ratelimit bad_msg_rl;

/* ---- connections ---- */

void hvsim_conn_close(struct hvsim_conn *c)
{
	struct hvsim *s = c->s;

	hv_loop_del(s->loop, c->fd);
	hvsim_evtchn_close_conn(c);
	hvsim_ledgers_release(c);
	if (c->dom->registrant == c) {
		c->dom->registrant = NULL;
		log_info("d%u: guest side released", c->dom->domid);
	}
	c->dom->nr_conns--;
	for (struct hvsim_conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	close(c->fd);
	free(c);
}

int hvsim_conn_hung_up(struct hvsim_conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};

	return c->broken || (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)));
}

/* A connection we could not write to: stop talking to it, close it on its next event. */
static void conn_break(struct hvsim_conn *c, int err)
{
	if (c->broken)
		return;
	/* A peer that hung up is no news; one whose queue is full does not read its replies. */
	if (err == -EAGAIN)
		LOG_RATELIMITED(&bad_msg_rl, LOG_LVL_WARN,
				"d%u: dropping a connection that does not read", c->dom->domid);
	else
		log_debug("d%u: connection gone (%s)", c->dom->domid, strerror(-err));
	c->broken = 1;
	shutdown(c->fd, SHUT_RDWR);
}

static void conn_reply(struct hvsim_conn *c, const struct hvsim_hdr *req, int status,
		       const void *payload, uint32_t len, const int *fds, unsigned nfds)
{
	int rc;

	if (c->broken)
		return;
	if (status)
		len = nfds = 0;
	rc = hvsim_msg_send(c->fd, req->type, req->seq, status, payload, len, fds, nfds,
			    MSG_DONTWAIT);
	if (rc)
		conn_break(c, rc);
}

void hvsim_conn_notice(struct hvsim_conn *c, evtchn_port_t port)
{
	struct hvsim_evtchn_msg n = {.port = port};
	int rc;

	if (c->broken)
		return;
	rc = hvsim_msg_send(c->fd, HVSIM_PEER_CHANGED, 0, 0, &n, sizeof(n), NULL, 0, MSG_DONTWAIT);
	if (rc)
		conn_break(c, rc);
}

/* Expected request payload size per type; 0 = no payload. */
static const uint32_t req_size[HVSIM_MSG_TYPE_MAX + 1] = {
    [HVSIM_INFO] = 0,
    [HVSIM_DOMAIN_CREATE] = sizeof(struct hvsim_dom_create),
    [HVSIM_DOMAIN_DESTROY] = sizeof(struct hvsim_domid_msg),
    [HVSIM_DOMAIN_LIST] = sizeof(struct hvsim_domid_msg),
    [HVSIM_DOMAIN_GET_MEM] = sizeof(struct hvsim_domid_msg),
    [HVSIM_GUEST_REGISTER_MEM] = 0,
    [HVSIM_EVTCHN_ALLOC_UNBOUND] = sizeof(struct hvsim_evtchn_msg),
    [HVSIM_EVTCHN_BIND_INTERDOMAIN] = sizeof(struct hvsim_evtchn_msg),
    [HVSIM_EVTCHN_PEER] = sizeof(struct hvsim_evtchn_msg),
    [HVSIM_EVTCHN_UNBIND] = sizeof(struct hvsim_evtchn_msg),
};

static void do_info(struct hvsim_conn *c, const struct hvsim_hdr *h)
{
	struct hvsim_info_rep r = {
	    .version = HVSIM_PROTO_VERSION,
	    .domid = c->dom->domid,
	    .mem_bytes = c->dom->mem_bytes,
	    .nr_grants = c->dom->domid ? HVSIM_GNT_ENTRIES : 0,
	    .max_ports = c->dom->max_ports,
	};

	conn_reply(c, h, 0, &r, sizeof(r), NULL, 0);
}

static void do_domain_create(struct hvsim_conn *c, const struct hvsim_hdr *h, const void *p)
{
	struct hvsim_dom_create req;
	struct hvsim_domid_msg rep = {0};
	domid_t domid = 0;
	int rc;

	memcpy(&req, p, sizeof(req));
	if (memchr(req.name, '\0', sizeof(req.name)) == NULL) {
		conn_reply(c, h, -EINVAL, NULL, 0, NULL, 0);
		return;
	}
	rc = hvsim_dom_create(c->s, req.name, req.mem_bytes, &domid);
	rep.domid = domid;
	conn_reply(c, h, rc, &rep, sizeof(rep), NULL, 0);
}

static void do_domain_list(struct hvsim_conn *c, const struct hvsim_hdr *h, uint32_t start)
{
	union {
		struct hvsim_dom_list_rep r;
		char buf[sizeof(struct hvsim_dom_list_rep) +
			 HVSIM_LIST_MAX * sizeof(struct hvsim_dom_info)];
	} u;
	uint32_t n = 0, id;

	_Static_assert(sizeof(u) <= HVSIM_MSG_MAX - sizeof(struct hvsim_hdr), "list reply size");
	memset(&u.r, 0, sizeof(u.r));
	for (id = start; id < DOMID_FIRST_RESERVED; id++) {
		struct hvsim_dom *d = c->s->doms[id];

		if (!d)
			continue;
		if (n == HVSIM_LIST_MAX) {
			u.r.more = 1;
			break;
		}
		hvsim_dom_info(d, &u.r.dom[n++]);
	}
	u.r.count = n;
	conn_reply(c, h, 0, &u, sizeof(u.r) + n * sizeof(struct hvsim_dom_info), NULL, 0);
}

static void do_register_mem(struct hvsim_conn *c, const struct hvsim_hdr *h, int *fds,
			    unsigned nfds)
{
	struct hvsim_mem_rep rep;
	int out[2], fd = -1, rc;

	if (nfds > 1) {
		conn_reply(c, h, -EINVAL, NULL, 0, NULL, 0);
		return;
	}
	if (nfds == 1) {
		fd = fds[0];
		fds[0] = -1;
	}
	rc = hvsim_dom_register_mem(c, &fd, &rep, out);
	if (fd >= 0)
		close(fd);
	conn_reply(c, h, rc, &rep, sizeof(rep), out, 2);
}

static void do_get_mem(struct hvsim_conn *c, const struct hvsim_hdr *h, uint32_t domid)
{
	struct hvsim_mem_rep rep;
	int out[4];
	int rc = hvsim_dom_get_mem(c, domid, &rep, out);

	conn_reply(c, h, rc, &rep, sizeof(rep), out, 4);
}

static void do_evtchn(struct hvsim_conn *c, const struct hvsim_hdr *h, const void *p)
{
	struct hvsim_evtchn_msg req, rep = {0};
	evtchn_port_t port = 0;
	int out[2], nout = 0, rc;

	memcpy(&req, p, sizeof(req));
	switch (h->type) {
	case HVSIM_EVTCHN_ALLOC_UNBOUND:
		rc = hvsim_evtchn_alloc_unbound(c, req.remote, &port, &out[0]);
		nout = 1;
		break;
	case HVSIM_EVTCHN_BIND_INTERDOMAIN:
		rc =
		    hvsim_evtchn_bind_interdomain(c, req.remote, req.port, &port, &out[0], &out[1]);
		nout = 2;
		break;
	case HVSIM_EVTCHN_PEER:
		port = req.port;
		rc = hvsim_evtchn_peer(c, req.port, &out[0]);
		nout = 1;
		break;
	default: /* HVSIM_EVTCHN_UNBIND */
		port = req.port;
		rc = hvsim_evtchn_unbind(c, req.port);
		break;
	}
	rep.port = port;
	conn_reply(c, h, rc, &rep, sizeof(rep), out, nout);
}

/* Handle one received message. Returns 0, or -1 when the connection must close. */
static int conn_message(struct hvsim_conn *c, const struct hvsim_msg *m, size_t len, int *fds,
			unsigned nfds)
{
	const struct hvsim_hdr *h = &m->hdr;
	int guest = c->dom->domid != 0;
	uint32_t domid;

	/* Too short to answer (no seq to echo), or a seq a reply could not carry: hang up. */
	if (len < sizeof(*h) || h->seq == 0) {
		LOG_RATELIMITED(&bad_msg_rl, LOG_LVL_WARN, "d%u: unanswerable message, closing",
				c->dom->domid);
		return -1;
	}
	if (h->type == 0 || h->type > HVSIM_MSG_TYPE_MAX || h->type == HVSIM_PEER_CHANGED) {
		conn_reply(c, h, -EOPNOTSUPP, NULL, 0, NULL, 0);
		return 0;
	}
	if (h->len != len - sizeof(*h) || h->len != req_size[h->type] || h->status != 0) {
		LOG_RATELIMITED(&bad_msg_rl, LOG_LVL_WARN, "d%u: malformed message type %u len %u",
				c->dom->domid, h->type, h->len);
		conn_reply(c, h, -EINVAL, NULL, 0, NULL, 0);
		return 0;
	}
	if (nfds && h->type != HVSIM_GUEST_REGISTER_MEM) {
		conn_reply(c, h, -EINVAL, NULL, 0, NULL, 0);
		return 0;
	}

	switch (h->type) {
	case HVSIM_INFO:
		do_info(c, h);
		return 0;
	case HVSIM_GUEST_REGISTER_MEM:
		if (!guest)
			break;
		do_register_mem(c, h, fds, nfds);
		return 0;
	case HVSIM_EVTCHN_ALLOC_UNBOUND:
	case HVSIM_EVTCHN_BIND_INTERDOMAIN:
	case HVSIM_EVTCHN_PEER:
	case HVSIM_EVTCHN_UNBIND:
		do_evtchn(c, h, m->payload);
		return 0;
	default:
		break;
	}

	/* The rest is the toolstack's: dom0 only. */
	if (guest || h->type == HVSIM_GUEST_REGISTER_MEM) {
		conn_reply(c, h, -EPERM, NULL, 0, NULL, 0);
		return 0;
	}
	memcpy(&domid, m->payload, sizeof(domid));
	switch (h->type) {
	case HVSIM_DOMAIN_CREATE:
		do_domain_create(c, h, m->payload);
		break;
	case HVSIM_DOMAIN_DESTROY:
		conn_reply(c, h, hvsim_dom_destroy(c->s, domid), NULL, 0, NULL, 0);
		break;
	case HVSIM_DOMAIN_LIST:
		do_domain_list(c, h, domid);
		break;
	case HVSIM_DOMAIN_GET_MEM:
		do_get_mem(c, h, domid);
		break;
	}
	return 0;
}

static void conn_cb(void *arg, uint32_t events)
{
	struct hvsim_conn *c = arg;
	struct hvsim_msg m;
	int fds[HVSIM_MAX_FDS];
	unsigned nfds;
	size_t len;
	int rc = 0;

	if (c->broken) {
		hvsim_conn_close(c);
		return;
	}
	/* Bounded, so one busy client cannot starve the others. */
	for (int i = 0; i < 16; i++) {
		rc = hvsim_msg_recv(c->fd, &m, &len, fds, &nfds, MSG_DONTWAIT);
		if (rc == -EAGAIN)
			break;
		if (rc == -EMSGSIZE) {
			/* An oversized message: answer it if its header is readable. */
			if (len >= sizeof(m.hdr) && m.hdr.seq != 0) {
				conn_reply(c, &m.hdr, -EMSGSIZE, NULL, 0, NULL, 0);
				continue;
			}
			hvsim_conn_close(c);
			return;
		}
		if (rc < 0) {
			hvsim_conn_close(c);
			return;
		}
		rc = conn_message(c, &m, len, fds, nfds);
		hvsim_close_fds(fds, nfds);
		if (rc < 0 || c->broken) {
			hvsim_conn_close(c);
			return;
		}
	}
	if ((events & (EPOLLHUP | EPOLLERR)) && rc == -EAGAIN)
		hvsim_conn_close(c);
}

static void listen_cb(void *arg, uint32_t events)
{
	struct hvsim_dom *d = arg;
	struct hvsim *s = d->s;
	struct hvsim_conn *c;
	int fd, rc;

	(void)events;
	fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			LOG_RATELIMITED(&bad_msg_rl, LOG_LVL_WARN, "d%u: accept: %s", d->domid,
					strerror(errno));
		return;
	}
	if (d->domid && d->nr_conns >= HVSIM_MAX_CONNS_PER_GUEST) {
		/* Hang-ups may be waiting behind this accept in the loop: count only the living. */
		for (struct hvsim_conn *o = s->conns, *next; o; o = next) {
			next = o->next;
			if (o->dom == d && hvsim_conn_hung_up(o))
				hvsim_conn_close(o);
		}
	}
	if (d->domid && d->nr_conns >= HVSIM_MAX_CONNS_PER_GUEST) {
		LOG_RATELIMITED(&bad_msg_rl, LOG_LVL_WARN, "d%u: too many connections", d->domid);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->s = s;
	c->dom = d;
	c->fd = fd;
	rc = hv_loop_add(s->loop, fd, EPOLLIN, conn_cb, c);
	if (rc) {
		log_err("d%u: cannot watch a connection: %s", d->domid, strerror(-rc));
		close(fd);
		free(c);
		return;
	}
	d->nr_conns++;
	c->next = s->conns;
	s->conns = c;
}

int hvsim_listen(struct hvsim *s, struct hvsim_dom *d, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (unlink(path) < 0 && errno != ENOENT) {
		rc = -errno;
		goto err_close;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
		rc = -errno;
		log_err("listen %s: %s", path, strerror(-rc));
		goto err_close;
	}
	rc = hv_loop_add(s->loop, fd, EPOLLIN, listen_cb, d);
	if (rc)
		goto err_unlink;
	d->listen_fd = fd;
	return 0;

err_unlink:
	unlink(path);
err_close:
	close(fd);
	return rc;
}

void hvsim_unlisten(struct hvsim *s, struct hvsim_dom *d)
{
	if (d->listen_fd < 0)
		return;
	hv_loop_del(s->loop, d->listen_fd);
	close(d->listen_fd);
	d->listen_fd = -1;
}

/* ---- the instance ---- */

static int domain_exists(void *arg, domid_t domid)
{
	return hvsim_dom_get(arg, domid) != NULL;
}

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Remove what a dead instance left in DIR/domains and DIR/names (only our own kinds of file). */
static void clean_stale(struct hvsim *s)
{
	char path[HVSIM_PATH_MAX * 2];
	struct dirent *de;
	DIR *dh;

	snprintf(path, sizeof(path), "%s/names", s->dir);
	dh = opendir(path);
	if (dh) {
		while ((de = readdir(dh))) {
			if (de->d_type != DT_LNK)
				continue;
			snprintf(path, sizeof(path), "%s/names/%s", s->dir, de->d_name);
			unlink(path);
		}
		closedir(dh);
	}
	snprintf(path, sizeof(path), "%s/domains", s->dir);
	dh = opendir(path);
	if (dh) {
		while ((de = readdir(dh))) {
			if (de->d_name[0] < '0' || de->d_name[0] > '9')
				continue;
			snprintf(path, sizeof(path), "%s/domains/%s/hv.sock", s->dir, de->d_name);
			unlink(path);
			snprintf(path, sizeof(path), "%s/domains/%s/xenstore.sock", s->dir,
				 de->d_name);
			unlink(path);
			snprintf(path, sizeof(path), "%s/domains/%s", s->dir, de->d_name);
			if (rmdir(path) < 0)
				log_warn("cannot remove stale %s: %s", path, strerror(errno));
		}
		closedir(dh);
	}
}

static void raise_nofile(void)
{
	struct rlimit rl;

	/* Every port is an eventfd and every domain a few memfds and sockets. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int hvsim_new(struct hvsim **out, const char *dir)
{
	struct xs_server_hooks hooks = {.domain_exists = domain_exists};
	char path[HVSIM_PATH_MAX];
	struct hvsim *s;
	int rc;

	if (strlen(dir) + strlen(HVSIM_LONGEST_SUFFIX) >= HVSIM_DIR_MAX)
		return -ENAMETOOLONG;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->lock_fd = -1;
	hooks.arg = s;
	raise_nofile();

	rc = mkdir_p(dir);
	if (rc) {
		log_err("mkdir %s: %s", dir, strerror(-rc));
		goto err_free;
	}
	snprintf(path, sizeof(path), "%s/hvsimd.lock", dir);
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s->lock_fd < 0) {
		rc = -errno;
		log_err("open %s: %s", path, strerror(-rc));
		goto err_free;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto err_lock;
	}
	if (ftruncate(s->lock_fd, 0) == 0)
		dprintf(s->lock_fd, "%d\n", (int)getpid());

	clean_stale(s);
	snprintf(path, sizeof(path), "%s/domains", dir);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		rc = -errno;
		goto err_lock;
	}
	snprintf(path, sizeof(path), "%s/names", dir);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		rc = -errno;
		goto err_dirs;
	}

	rc = hv_loop_new(&s->loop);
	if (rc)
		goto err_dirs;
	rc = xs_server_new(&s->xs, s->loop, NULL, &hooks);
	if (rc)
		goto err_loop;
	snprintf(path, sizeof(path), "%s/xenstore.sock", dir);
	rc = xs_server_listen(s->xs, path, 0);
	if (rc) {
		log_err("xenstore listen %s: %s", path, strerror(-rc));
		goto err_xs;
	}
	rc = hvsim_dom0_init(s);
	if (rc)
		goto err_xs;
	snprintf(path, sizeof(path), "%s/hv.sock", dir);
	rc = hvsim_listen(s, s->doms[0], path);
	if (rc)
		goto err_dom0;
	log_info("hvsimd serving %s (xenstore.sock, hv.sock)", dir);
	*out = s;
	return 0;

err_dom0:
	hvsim_dom0_free(s);
err_xs:
	xs_server_free(s->xs);
err_loop:
	hv_loop_free(s->loop);
err_dirs:
	snprintf(path, sizeof(path), "%s/names", dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/domains", dir);
	rmdir(path);
err_lock:
	close(s->lock_fd);
err_free:
	free(s);
	return rc;
}

int hvsim_run(struct hvsim *s, volatile sig_atomic_t *stop)
{
	return hv_loop_run(s->loop, stop, -1);
}

void hvsim_free(struct hvsim *s)
{
	char path[HVSIM_PATH_MAX];

	if (!s)
		return;
	for (uint32_t id = 1; id < DOMID_FIRST_RESERVED && s->nr_guests; id++)
		if (s->doms[id])
			hvsim_dom_destroy(s, id);
	while (s->conns)
		hvsim_conn_close(s->conns);
	snprintf(path, sizeof(path), "%s/hv.sock", s->dir);
	unlink(path);
	hvsim_unlisten(s, s->doms[0]);
	hvsim_dom0_free(s);
	xs_server_free(s->xs);
	hv_loop_free(s->loop);
	snprintf(path, sizeof(path), "%s/names", s->dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/domains", s->dir);
	rmdir(path);
	close(s->lock_fd);
	log_info("hvsimd stopped");
	free(s);
}
