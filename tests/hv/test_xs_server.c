/*
 * test_xs_server.c - the xenstore server over its sockets, driven by the real clients: programs
 * linked with libxenstore, the xenstore-* tools of xenstore-utils, and raw sockets speaking
 * (and mangling) the wire protocol. The server runs in its own thread on an hv_loop; the test
 * thread reaches into it only through srv_call(), which runs a function inside the loop.
 *
 * The tools need nothing but XENSTORED_PATH=<socket> in their environment (libxenstore's
 * xs_open() connects there first; the -s flag is not needed).
 */
#include "hv/loop.h"
#include "hv/xs_server.h"
#include "tests/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xenstore.h>
#include <xen/io/xs_wire.h>

#define WAIT_MS 5000

struct srv {
	struct hv_loop *loop;
	struct xs_server *xs;
	pthread_t th;
	volatile sig_atomic_t stop;
	int efd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*fn)(struct srv *s, void *arg);
	void *arg;
	int done;
	char dir[512];
	char sock0[600], sock1[600], sock2[600];
};

static int dom_exists(void *arg, domid_t domid)
{
	(void)arg;
	return domid >= 1 && domid <= 10;
}

/* Runs in the loop thread: execute the queued call. */
static void srv_efd_cb(void *arg, uint32_t events)
{
	struct srv *s = arg;
	uint64_t v;

	(void)events;
	if (read(s->efd, &v, sizeof(v)) != sizeof(v))
		return;
	pthread_mutex_lock(&s->mu);
	if (s->fn) {
		s->fn(s, s->arg);
		s->fn = NULL;
		s->done = 1;
		pthread_cond_signal(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
}

/* Run @fn inside the server's thread and wait for it. */
static void srv_call(struct srv *s, void (*fn)(struct srv *s, void *arg), void *arg)
{
	uint64_t one = 1;

	pthread_mutex_lock(&s->mu);
	s->fn = fn;
	s->arg = arg;
	s->done = 0;
	CU_ASSERT_EQUAL(write(s->efd, &one, sizeof(one)), sizeof(one));
	while (!s->done)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

static void *srv_thread(void *arg)
{
	struct srv *s = arg;

	hv_loop_run(s->loop, &s->stop, -1);
	return NULL;
}

/* A guest home the way a toolstack makes it: owned by the guest, nobody else. */
static void srv_home(struct srv *s, domid_t id)
{
	char p[64], perm[16];

	snprintf(p, sizeof(p), "/local/domain/%u", (unsigned)id);
	CU_ASSERT_EQUAL_FATAL(xs_server_write(s->xs, p, "", 0), 0);
	snprintf(perm, sizeof(perm), "n%u", (unsigned)id);
	CU_ASSERT_EQUAL_FATAL(xs_server_set_perms(s->xs, p, perm, strlen(perm) + 1), 0);
	snprintf(p, sizeof(p), "/local/domain/%u/domid", (unsigned)id);
	snprintf(perm, sizeof(perm), "%u", (unsigned)id);
	CU_ASSERT_EQUAL_FATAL(xs_server_write(s->xs, p, perm, strlen(perm)), 0);
}

/* A server with dom0's socket and guests 1 and 2, each with its own socket, introduced. */
static struct srv *srv_start(const struct xs_limits *lim)
{
	static int seq;
	struct xs_server_hooks hooks = {.domain_exists = dom_exists};
	struct srv *s = calloc(1, sizeof(*s));

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	snprintf(s->dir, sizeof(s->dir), "%s/xs%d", harness_tmpdir(), seq++);
	CU_ASSERT_EQUAL_FATAL(mkdir(s->dir, 0700), 0);
	snprintf(s->sock0, sizeof(s->sock0), "%s/xenstore.sock", s->dir);
	snprintf(s->sock1, sizeof(s->sock1), "%s/xs1.sock", s->dir);
	snprintf(s->sock2, sizeof(s->sock2), "%s/xs2.sock", s->dir);
	CU_ASSERT_EQUAL_FATAL(hv_loop_new(&s->loop), 0);
	CU_ASSERT_EQUAL_FATAL(xs_server_new(&s->xs, s->loop, lim, &hooks), 0);
	CU_ASSERT_EQUAL_FATAL(xs_server_listen(s->xs, s->sock0, 0), 0);
	srv_home(s, 1);
	srv_home(s, 2);
	CU_ASSERT_EQUAL_FATAL(xs_server_listen(s->xs, s->sock1, 1), 0);
	CU_ASSERT_EQUAL_FATAL(xs_server_listen(s->xs, s->sock2, 2), 0);
	CU_ASSERT_EQUAL_FATAL(xs_server_introduce(s->xs, 1), 0);
	CU_ASSERT_EQUAL_FATAL(xs_server_introduce(s->xs, 2), 0);
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CU_ASSERT_FATAL(s->efd >= 0);
	CU_ASSERT_EQUAL_FATAL(hv_loop_add(s->loop, s->efd, EPOLLIN, srv_efd_cb, s), 0);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&s->th, NULL, srv_thread, s), 0);
	return s;
}

static void do_stop(struct srv *s, void *arg)
{
	(void)arg;
	s->stop = 1;
}

static void srv_stop(struct srv *s)
{
	struct stat sb;

	srv_call(s, do_stop, NULL);
	pthread_join(s->th, NULL);
	hv_loop_del(s->loop, s->efd);
	close(s->efd);
	xs_server_free(s->xs);
	hv_loop_free(s->loop);
	/* Freeing the server removes its socket files. */
	CU_ASSERT_EQUAL(stat(s->sock0, &sb), -1);
	CU_ASSERT_EQUAL(stat(s->sock1, &sb), -1);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

static struct xs_handle *xopen(const char *sock)
{
	struct xs_handle *h;

	setenv("XENSTORED_PATH", sock, 1);
	h = xs_open(0);
	CU_ASSERT_PTR_NOT_NULL(h);
	return h;
}

static int xread_eq(struct xs_handle *h, xs_transaction_t t, const char *path, const char *want)
{
	unsigned int len;
	char *v = xs_read(h, t, path, &len);
	int ok = v && len == strlen(want) && memcmp(v, want, len) == 0;

	free(v);
	return ok;
}

static bool xwrite(struct xs_handle *h, xs_transaction_t t, const char *path, const char *v)
{
	return xs_write(h, t, path, v, (unsigned int)strlen(v));
}

/* Next watch event within WAIT_MS; *path and *token malloc'd copies. 0 or -ETIMEDOUT. */
static int next_event(struct xs_handle *h, char *path, size_t plen, char *token, size_t tlen)
{
	struct pollfd pfd = {.fd = xs_fileno(h), .events = POLLIN};
	unsigned int num;
	char **vec;

	if (poll(&pfd, 1, WAIT_MS) != 1)
		return -ETIMEDOUT;
	vec = xs_read_watch(h, &num);
	if (!vec)
		return -EIO;
	snprintf(path, plen, "%s", vec[XS_WATCH_PATH]);
	if (token)
		snprintf(token, tlen, "%s", vec[XS_WATCH_TOKEN]);
	free(vec);
	return 0;
}

/* Is an event pending right now? (Used after a synchronous round trip has flushed events.) */
static int event_pending(struct xs_handle *h)
{
	struct pollfd pfd = {.fd = xs_fileno(h), .events = POLLIN};

	return poll(&pfd, 1, 0) == 1;
}

/* A round trip on @h: every event the server queued before it is now in libxenstore. */
static void sync_rt(struct xs_handle *h)
{
	free(xs_read(h, XBT_NULL, "/", NULL));
}

/* ---- libxenstore ---- */

static void test_libxs_basic(void)
{
	struct srv *s = srv_start(NULL);
	struct xs_handle *h = xopen(s->sock0);
	unsigned int num, len;
	char **dir, *p, name[64];
	char *v;

	CU_ASSERT(xwrite(h, XBT_NULL, "/a/b/c", "hello"));
	CU_ASSERT(xread_eq(h, XBT_NULL, "/a/b/c", "hello"));
	CU_ASSERT(xread_eq(h, XBT_NULL, "/a/b", ""));
	CU_ASSERT(xwrite(h, XBT_NULL, "/a/z", "1"));
	dir = xs_directory(h, XBT_NULL, "/a", &num);
	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	CU_ASSERT_EQUAL(num, 2);
	CU_ASSERT_STRING_EQUAL(dir[0], "b");
	CU_ASSERT_STRING_EQUAL(dir[1], "z");
	free(dir);
	CU_ASSERT(xs_write(h, XBT_NULL, "/bin", "a\0b", 3));
	v = xs_read(h, XBT_NULL, "/bin", &len);
	CU_ASSERT(v && len == 3 && memcmp(v, "a\0b", 3) == 0);
	free(v);
	CU_ASSERT(xs_mkdir(h, XBT_NULL, "/m/n"));
	CU_ASSERT(xread_eq(h, XBT_NULL, "/m/n", ""));
	CU_ASSERT(xs_rm(h, XBT_NULL, "/a"));
	CU_ASSERT_PTR_NULL(xs_read(h, XBT_NULL, "/a/b/c", &len));
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT(xs_rm(h, XBT_NULL, "/a")); /* missing, parent exists: fine */
	CU_ASSERT(!xs_rm(h, XBT_NULL, "/a/b/c"));
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT(!xwrite(h, XBT_NULL, "/bad//path", "x"));
	CU_ASSERT_EQUAL(errno, EINVAL);
	p = xs_get_domain_path(h, 7);
	CU_ASSERT(p && strcmp(p, "/local/domain/7") == 0);
	free(p);

	/* A child list beyond XENSTORE_PAYLOAD_MAX: DIRECTORY says E2BIG, libxenstore then
	 * pages through it with DIRECTORY_PART. */
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "/big/child-with-a-long-name-%04d", i);
		CU_ASSERT(xwrite(h, XBT_NULL, name, "x"));
	}
	dir = xs_directory(h, XBT_NULL, "/big", &num);
	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	CU_ASSERT_EQUAL(num, 300);
	CU_ASSERT_STRING_EQUAL(dir[0], "child-with-a-long-name-0000");
	CU_ASSERT_STRING_EQUAL(dir[299], "child-with-a-long-name-0299");
	free(dir);
	xs_close(h);
	srv_stop(s);
}

static void test_libxs_txn(void)
{
	struct srv *s = srv_start(NULL);
	struct xs_handle *h1 = xopen(s->sock0), *h2 = xopen(s->sock0);
	xs_transaction_t t;
	int tries = 0;

	CU_ASSERT(xwrite(h1, XBT_NULL, "/acct/balance", "10"));
	/* h1 reads in a transaction, h2 changes what it read: the commit fails with EAGAIN. */
	t = xs_transaction_start(h1);
	CU_ASSERT_NOT_EQUAL_FATAL(t, XBT_NULL);
	CU_ASSERT(xread_eq(h1, t, "/acct/balance", "10"));
	CU_ASSERT(xwrite(h2, XBT_NULL, "/acct/balance", "20"));
	CU_ASSERT(xwrite(h1, t, "/acct/balance", "11"));
	CU_ASSERT(xwrite(h1, t, "/acct/log", "added 1"));
	/* Not visible outside the transaction before commit. */
	CU_ASSERT_PTR_NULL(xs_read(h2, XBT_NULL, "/acct/log", NULL));
	CU_ASSERT(!xs_transaction_end(h1, t, false));
	CU_ASSERT_EQUAL(errno, EAGAIN);
	CU_ASSERT(xread_eq(h2, XBT_NULL, "/acct/balance", "20"));
	CU_ASSERT_PTR_NULL(xs_read(h2, XBT_NULL, "/acct/log", NULL));
	/* The retry loop every client has. */
	do {
		char *v;
		unsigned int len;
		char nv[16];

		t = xs_transaction_start(h1);
		v = xs_read(h1, t, "/acct/balance", &len);
		snprintf(nv, sizeof(nv), "%d", atoi(v ? v : "0") + 1);
		free(v);
		xwrite(h1, t, "/acct/balance", nv);
	} while (!xs_transaction_end(h1, t, false) && errno == EAGAIN && ++tries < 5);
	CU_ASSERT(xread_eq(h2, XBT_NULL, "/acct/balance", "21"));
	/* Abort. */
	t = xs_transaction_start(h1);
	CU_ASSERT(xwrite(h1, t, "/acct/balance", "999"));
	CU_ASSERT(xs_transaction_end(h1, t, true));
	CU_ASSERT(xread_eq(h2, XBT_NULL, "/acct/balance", "21"));
	xs_close(h1);
	xs_close(h2);
	srv_stop(s);
}

static void test_libxs_watch(void)
{
	struct srv *s = srv_start(NULL);
	struct xs_handle *h = xopen(s->sock0), *w = xopen(s->sock0);
	char path[256], tok[64];
	xs_transaction_t t;

	CU_ASSERT(xwrite(h, XBT_NULL, "/w/a/x", "1"));
	CU_ASSERT_FATAL(xs_watch(w, "/w/a", "tokA"));
	/* Fires once at registration. */
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), tok, sizeof(tok)), 0);
	CU_ASSERT_STRING_EQUAL(path, "/w/a");
	CU_ASSERT_STRING_EQUAL(tok, "tokA");
	/* At and below, not beside. */
	CU_ASSERT(xwrite(h, XBT_NULL, "/w/other", "1"));
	CU_ASSERT(xwrite(h, XBT_NULL, "/w/a/x/deep", "2"));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "/w/a/x/deep");
	/* A transaction's changes fire at commit only. */
	t = xs_transaction_start(h);
	CU_ASSERT(xwrite(h, t, "/w/a/y", "1"));
	sync_rt(w);
	CU_ASSERT(!event_pending(w));
	CU_ASSERT(xs_transaction_end(h, t, false));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "/w/a/y");
	/* Removing a parent fires for the watched node. */
	CU_ASSERT(xs_rm(h, XBT_NULL, "/w"));
	{
		int seen_a = 0;

		for (int i = 0; i < 4 && !seen_a; i++) {
			CU_ASSERT_EQUAL_FATAL(next_event(w, path, sizeof(path), NULL, 0), 0);
			seen_a = strcmp(path, "/w/a") == 0;
		}
		CU_ASSERT(seen_a);
	}
	/* Permission changes fire too; after UNWATCH nothing does. */
	CU_ASSERT(xwrite(h, XBT_NULL, "/w/a", ""));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	{
		struct xs_permissions p = {.id = 0, .perms = XS_PERM_READ};

		CU_ASSERT(xs_set_permissions(h, XBT_NULL, "/w/a", &p, 1));
		CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
		CU_ASSERT_STRING_EQUAL(path, "/w/a");
	}
	CU_ASSERT(xs_unwatch(w, "/w/a", "tokA"));
	CU_ASSERT(!xs_unwatch(w, "/w/a", "tokA"));
	CU_ASSERT(xwrite(h, XBT_NULL, "/w/a/z", "1"));
	sync_rt(w);
	while (event_pending(w))
		CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT(xwrite(h, XBT_NULL, "/w/a/z", "2"));
	sync_rt(w);
	CU_ASSERT(!event_pending(w));
	/* The same path twice with different tokens is two watches; the same pair is EEXIST. */
	CU_ASSERT(xs_watch(w, "/q", "t1"));
	CU_ASSERT(xs_watch(w, "/q", "t2"));
	CU_ASSERT(!xs_watch(w, "/q", "t2"));
	CU_ASSERT_EQUAL(errno, EEXIST);
	xs_close(w);
	xs_close(h);
	srv_stop(s);
}

static void test_guest_perms(void)
{
	struct srv *s = srv_start(NULL);
	struct xs_handle *h0 = xopen(s->sock0), *g1 = xopen(s->sock1), *g2 = xopen(s->sock2);
	struct xs_permissions perms[2], *gp;
	unsigned int num;
	char path[256];

	/* Relative paths resolve under the guest's home. */
	CU_ASSERT(xwrite(g1, XBT_NULL, "data/secret", "s1"));
	CU_ASSERT(xread_eq(h0, XBT_NULL, "/local/domain/1/data/secret", "s1"));
	CU_ASSERT(xread_eq(g1, XBT_NULL, "domid", "1"));
	CU_ASSERT(xread_eq(g1, XBT_NULL, "/local/domain/1/data/secret", "s1"));
	/* What the guest created is its own. */
	gp = xs_get_permissions(g1, XBT_NULL, "data/secret", &num);
	CU_ASSERT_FATAL(gp != NULL);
	CU_ASSERT_EQUAL(num, 1);
	CU_ASSERT_EQUAL(gp[0].id, 1);
	CU_ASSERT_EQUAL(gp[0].perms, XS_PERM_NONE);
	free(gp);

	/* Guest 2 can neither read nor write guest 1's nodes, nor learn which exist. */
	CU_ASSERT_PTR_NULL(xs_read(g2, XBT_NULL, "/local/domain/1/data/secret", NULL));
	CU_ASSERT_EQUAL(errno, EACCES);
	CU_ASSERT_PTR_NULL(xs_read(g2, XBT_NULL, "/local/domain/1/data/nothing", NULL));
	CU_ASSERT_EQUAL(errno, EACCES);
	CU_ASSERT(!xwrite(g2, XBT_NULL, "/local/domain/1/data/secret", "pwned"));
	CU_ASSERT_EQUAL(errno, EACCES);
	CU_ASSERT(!xwrite(g2, XBT_NULL, "/local/domain/1/new", "pwned"));
	CU_ASSERT_EQUAL(errno, EACCES);
	CU_ASSERT(!xs_rm(g2, XBT_NULL, "/local/domain/1/data"));
	CU_ASSERT_EQUAL(errno, EACCES);
	CU_ASSERT_PTR_NULL(xs_directory(g2, XBT_NULL, "/local/domain/1", &num));
	CU_ASSERT_EQUAL(errno, EACCES);
	CU_ASSERT(!xwrite(g2, XBT_NULL, "/outside", "x"));
	CU_ASSERT_EQUAL(errno, EACCES);
	/* Its own missing node is plainly missing. */
	CU_ASSERT_PTR_NULL(xs_read(g2, XBT_NULL, "nothing", NULL));
	CU_ASSERT_EQUAL(errno, ENOENT);
	/* Privileged operations are dom0's. */
	CU_ASSERT(!xs_introduce_domain(g2, 5, 0, 1));
	CU_ASSERT_EQUAL(errno, EACCES);

	/* Guest 1 shares a node read-only with guest 2. */
	perms[0].id = 1;
	perms[0].perms = XS_PERM_NONE;
	perms[1].id = 2;
	perms[1].perms = XS_PERM_READ;
	CU_ASSERT(xs_set_permissions(g1, XBT_NULL, "data/secret", perms, 2));
	CU_ASSERT(xread_eq(g2, XBT_NULL, "/local/domain/1/data/secret", "s1"));
	CU_ASSERT(!xwrite(g2, XBT_NULL, "/local/domain/1/data/secret", "no"));
	CU_ASSERT_EQUAL(errno, EACCES);
	gp = xs_get_permissions(g2, XBT_NULL, "/local/domain/1/data/secret", &num);
	CU_ASSERT(gp && num == 2 && gp[1].id == 2 && gp[1].perms == XS_PERM_READ);
	free(gp);
	/* Only the owner changes perms; a guest cannot give a node away. */
	CU_ASSERT(!xs_set_permissions(g2, XBT_NULL, "/local/domain/1/data/secret", perms, 2));
	CU_ASSERT_EQUAL(errno, EACCES);
	perms[0].id = 2;
	CU_ASSERT(!xs_set_permissions(g1, XBT_NULL, "data/secret", perms, 2));
	CU_ASSERT_EQUAL(errno, EPERM);

	/* A relative watch reports relative paths; guest 2 hears nothing of guest 1. */
	CU_ASSERT_FATAL(xs_watch(g1, "data", "rel"));
	CU_ASSERT_EQUAL(next_event(g1, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "data");
	CU_ASSERT_FATAL(xs_watch(g2, "/local/domain/1", "spy"));
	CU_ASSERT_EQUAL(next_event(g2, path, sizeof(path), NULL, 0), 0); /* registration only */
	CU_ASSERT(xwrite(h0, XBT_NULL, "/local/domain/1/data/new", "v"));
	CU_ASSERT_EQUAL(next_event(g1, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "data/new");
	sync_rt(g2);
	CU_ASSERT(!event_pending(g2));
	/* Guest 2 may watch @releaseDomain but, without read on it, gets no events. */
	CU_ASSERT_FATAL(xs_watch(g2, "@releaseDomain", "rd"));
	CU_ASSERT_EQUAL(next_event(g2, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT(xs_release_domain(h0, 1));
	sync_rt(g2);
	CU_ASSERT(!event_pending(g2));
	xs_close(h0);
	xs_close(g1);
	xs_close(g2);
	srv_stop(s);
}

static void do_release2(struct srv *s, void *arg)
{
	*(int *)arg = xs_server_release(s->xs, 2);
}

static void test_domains(void)
{
	struct srv *s = srv_start(NULL);
	struct xs_handle *h = xopen(s->sock0), *w = xopen(s->sock0), *g2 = xopen(s->sock2);
	char path[256];
	struct stat sb;
	int rc = -1;

	CU_ASSERT_FATAL(xs_watch(w, "@introduceDomain", "in"));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_FATAL(xs_watch(w, "@releaseDomain", "out"));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);

	CU_ASSERT(xs_is_domain_introduced(h, 0));
	CU_ASSERT(xs_is_domain_introduced(h, 1));
	CU_ASSERT(!xs_is_domain_introduced(h, 3));
	CU_ASSERT(xs_introduce_domain(h, 3, 0x1234, 5));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "@introduceDomain");
	CU_ASSERT(xs_is_domain_introduced(h, 3));
	/* The hook says domain 42 does not exist. */
	CU_ASSERT(!xs_introduce_domain(h, 42, 0, 5));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT(xs_release_domain(h, 3));
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "@releaseDomain");
	CU_ASSERT(!xs_is_domain_introduced(h, 3));
	CU_ASSERT(!xs_release_domain(h, 3));
	CU_ASSERT_EQUAL(errno, ENOENT);

	/* hvsimd destroying domain 2: socket gone, connections closed, home removed, event. */
	CU_ASSERT(xwrite(g2, XBT_NULL, "data/x", "1"));
	srv_call(s, do_release2, &rc);
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT_EQUAL(next_event(w, path, sizeof(path), NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(path, "@releaseDomain");
	CU_ASSERT_EQUAL(stat(s->sock2, &sb), -1);
	CU_ASSERT_PTR_NULL(xs_read(h, XBT_NULL, "/local/domain/2", NULL));
	CU_ASSERT(!xs_is_domain_introduced(h, 2));
	CU_ASSERT_PTR_NULL(xs_read(g2, XBT_NULL, "domid", NULL));
	xs_close(g2);
	xs_close(w);
	xs_close(h);
	srv_stop(s);
}

static void test_quotas(void)
{
	struct xs_limits lim = {
	    .max_value_bytes = 100,
	    .max_nodes_per_dom = 10,
	    .max_watches_per_dom = 3,
	    .max_trans_per_dom = 2,
	    .max_conns_per_dom = 2,
	};
	struct srv *s = srv_start(&lim);
	struct xs_handle *h0 = xopen(s->sock0), *g1 = xopen(s->sock1), *g1b = xopen(s->sock1);
	struct xs_handle *g1c;
	char big[200], path[64];
	xs_transaction_t t[3];
	int i;

	memset(big, 'x', sizeof(big));
	CU_ASSERT(xs_write(g1, XBT_NULL, "v", big, 100));
	CU_ASSERT(!xs_write(g1, XBT_NULL, "v", big, 101));
	CU_ASSERT_EQUAL(errno, ENOSPC);
	CU_ASSERT(xs_write(h0, XBT_NULL, "/local/domain/1/v0", big, 200)); /* dom0: no limit */
	/* Nodes: home, domid, v, v0 so far. */
	for (i = 0; i < 6; i++) {
		snprintf(path, sizeof(path), "n%d", i);
		CU_ASSERT(xwrite(g1, XBT_NULL, path, "1"));
	}
	CU_ASSERT(!xwrite(g1, XBT_NULL, "one-too-many", "1"));
	CU_ASSERT_EQUAL(errno, ENOSPC);
	/* Watches: 3 per domain, over all its connections. */
	CU_ASSERT(xs_watch(g1, "n0", "a"));
	CU_ASSERT(xs_watch(g1, "n1", "a"));
	CU_ASSERT(xs_watch(g1b, "n2", "a"));
	CU_ASSERT(!xs_watch(g1b, "n3", "a"));
	CU_ASSERT_EQUAL(errno, ENOSPC);
	for (i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "dom0-unlimited-%d", i);
		CU_ASSERT(xs_watch(h0, "/x", path));
	}
	/* Transactions: 2 open per domain, over all its connections. */
	t[0] = xs_transaction_start(g1);
	t[1] = xs_transaction_start(g1b);
	t[2] = xs_transaction_start(g1);
	CU_ASSERT(t[0] != XBT_NULL && t[1] != XBT_NULL);
	CU_ASSERT_EQUAL(t[2], XBT_NULL);
	CU_ASSERT_EQUAL(errno, ENOSPC);
	CU_ASSERT(xs_transaction_end(g1, t[0], true));
	t[2] = xs_transaction_start(g1);
	CU_ASSERT(t[2] != XBT_NULL);
	CU_ASSERT_NOT_EQUAL(xs_transaction_start(h0), XBT_NULL); /* dom0: no limit */
	/* Connections: a third one to guest 1's socket is closed at once. */
	setenv("XENSTORED_PATH", s->sock1, 1);
	g1c = xs_open(0);
	if (g1c) {
		CU_ASSERT_PTR_NULL(xs_read(g1c, XBT_NULL, "domid", NULL));
		xs_close(g1c);
	}
	CU_ASSERT(xread_eq(g1b, XBT_NULL, "domid", "1"));
	xs_close(g1);
	xs_close(g1b);
	xs_close(h0);
	srv_stop(s);
}

/* ---- the xenstore-* tools ---- */

/*
 * Run a tool with XENSTORED_PATH=@sock; stdout into @out. Returns its exit status, or -1 if it
 * did not exit normally within WAIT_MS.
 */
static int run_tool(const char *sock, char *out, size_t outlen, const char *const argv[])
{
	char env_sock[700];
	char *envp[] = {env_sock, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	posix_spawn_file_actions_t fa;
	size_t used = 0;
	int pfd[2], status = 0;
	pid_t pid;

	snprintf(env_sock, sizeof(env_sock), "XENSTORED_PATH=%s", sock);
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, envp) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	for (;;) {
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, WAIT_MS) != 1) {
			kill(pid, SIGKILL);
			break;
		}
		n = read(pfd[0], out + used, outlen - 1 - used);
		if (n <= 0)
			break;
		used += (size_t)n;
		if (used == outlen - 1)
			break;
	}
	out[used] = '\0';
	close(pfd[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define TOOL(sock, out, ...)                                                                       \
	run_tool((sock), (out), sizeof(out), (const char *const[]){__VA_ARGS__, NULL})

/* Read one line from @fd within WAIT_MS. */
static int read_line(int fd, char *buf, size_t len)
{
	size_t used = 0;

	while (used + 1 < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (poll(&p, 1, WAIT_MS) != 1 || read(fd, buf + used, 1) != 1)
			return -1;
		if (buf[used] == '\n')
			break;
		used++;
	}
	buf[used] = '\0';
	return 0;
}

static void test_cli_tools(void)
{
	struct srv *s = srv_start(NULL);
	char out[4096], env_sock[700];
	char *envp[] = {env_sock, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	const char *wargv[] = {"xenstore-watch", "-n", "2", "/cli", NULL};
	posix_spawn_file_actions_t fa;
	int pfd[2], status;
	pid_t pid;

	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-write", "/cli/a", "1", "/cli/b", "two"), 0);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-read", "/cli/a"), 0);
	CU_ASSERT_STRING_EQUAL(out, "1\n");
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-ls", "/cli"), 0);
	CU_ASSERT_STRING_EQUAL(out, "a = \"1\"\nb = \"two\"\n");
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-list", "/cli"), 0);
	CU_ASSERT_STRING_EQUAL(out, "a\nb\n");
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-exists", "/cli/a"), 0);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-exists", "/cli/zz"), 1);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-read", "/cli/zz"), 1);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-chmod", "/cli/a", "n0", "r1"), 0);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-ls", "-p", "/cli"), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "(n0,r1)"));
	/* Guest 1 may now read /cli/a, not /cli/b; relative paths are its home. */
	CU_ASSERT_EQUAL(TOOL(s->sock1, out, "xenstore-read", "/cli/a"), 0);
	CU_ASSERT_STRING_EQUAL(out, "1\n");
	CU_ASSERT_EQUAL(TOOL(s->sock1, out, "xenstore-read", "/cli/b"), 1);
	CU_ASSERT_EQUAL(TOOL(s->sock1, out, "xenstore-write", "mine", "g1"), 0);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-read", "/local/domain/1/mine"), 0);
	CU_ASSERT_STRING_EQUAL(out, "g1\n");
	CU_ASSERT_EQUAL(TOOL(s->sock2, out, "xenstore-read", "/local/domain/1/mine"), 1);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-rm", "/cli/a"), 0);
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-exists", "/cli/a"), 1);

	/* xenstore-watch: the registration event, then one for our write, then it exits. */
	snprintf(env_sock, sizeof(env_sock), "XENSTORED_PATH=%s", s->sock0);
	CU_ASSERT_EQUAL_FATAL(pipe2(pfd, O_CLOEXEC), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	CU_ASSERT_EQUAL_FATAL(posix_spawnp(&pid, wargv[0], &fa, NULL, (char *const *)wargv, envp),
			      0);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	CU_ASSERT_EQUAL(read_line(pfd[0], out, sizeof(out)), 0);
	CU_ASSERT_STRING_EQUAL(out, "/cli");
	CU_ASSERT_EQUAL(TOOL(s->sock0, out, "xenstore-write", "/cli/c", "3"), 0);
	CU_ASSERT_EQUAL(read_line(pfd[0], out, sizeof(out)), 0);
	CU_ASSERT_STRING_EQUAL(out, "/cli/c");
	close(pfd[0]);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	srv_stop(s);
}

/* ---- raw sockets: framing and malformed input ---- */

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int raw_send(int fd, uint32_t type, uint32_t req_id, uint32_t tx_id, const void *p,
		    uint32_t len)
{
	char buf[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX + 64];
	struct xsd_sockmsg h = {.type = type, .req_id = req_id, .tx_id = tx_id, .len = len};

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), p, len);
	return send(fd, buf, sizeof(h) + len, MSG_NOSIGNAL) == (ssize_t)(sizeof(h) + len) ? 0 : -1;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t used = 0;

	while (used < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, WAIT_MS) != 1)
			return -ETIMEDOUT;
		n = recv(fd, (char *)buf + used, len - used, 0);
		if (n <= 0)
			return -ECONNRESET;
		used += (size_t)n;
	}
	return 0;
}

/* One reply frame; payload NUL-terminated in @buf (XENSTORE_PAYLOAD_MAX + 1 bytes). */
static int raw_recv(int fd, struct xsd_sockmsg *h, char *buf)
{
	int rc = read_full(fd, h, sizeof(*h));

	if (rc)
		return rc;
	if (h->len > XENSTORE_PAYLOAD_MAX)
		return -EPROTO;
	rc = read_full(fd, buf, h->len);
	buf[h->len] = '\0';
	return rc;
}

/* The server closed @fd (EOF within WAIT_MS, after any pending replies). */
static int raw_closed(int fd)
{
	char buf[4096];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, WAIT_MS) != 1)
			return 0;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			return 1;
	}
}

static void do_big_dir(struct srv *s, void *arg)
{
	char p[64];

	(void)arg;
	for (int i = 0; i < 300; i++) {
		snprintf(p, sizeof(p), "/big/a-rather-long-child-name-%04d", i);
		CU_ASSERT_EQUAL(xs_server_write(s->xs, p, "", 0), 0);
	}
}

static void test_wire_framing(void)
{
	struct srv *s = srv_start(NULL);
	struct xsd_sockmsg h;
	char buf[XENSTORE_PAYLOAD_MAX + 1];
	char frames[256];
	size_t off = 0;
	int fd = raw_connect(s->sock0);

	CU_ASSERT_FATAL(fd >= 0);
	/* Replies echo req_id and tx_id; errors are XS_ERROR with the errno's name. */
	CU_ASSERT_EQUAL(raw_send(fd, XS_WRITE, 11, 0, "/r/a\0val", 8), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_WRITE && h.req_id == 11 && h.len == 3 && !strcmp(buf, "OK"));
	CU_ASSERT_EQUAL(raw_send(fd, XS_READ, 12, 0, "/r/a", 5), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_READ && h.req_id == 12 && h.len == 3 && !memcmp(buf, "val", 3));
	CU_ASSERT_EQUAL(raw_send(fd, XS_READ, 13, 77, "/r/a", 5), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && h.req_id == 13 && h.tx_id == 77);
	CU_ASSERT(h.len == 7 && !memcmp(buf, "ENOENT", 7));
	/* Unknown, reply-only and removed types: ENOSYS, connection stays. */
	CU_ASSERT_EQUAL(raw_send(fd, 200, 14, 0, "", 0), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && h.req_id == 14 && !strcmp(buf, "ENOSYS"));
	CU_ASSERT_EQUAL(raw_send(fd, XS_WATCH_EVENT, 15, 0, "/a\0t", 5), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && h.req_id == 15 && !strcmp(buf, "ENOSYS"));
	CU_ASSERT_EQUAL(raw_send(fd, XS_INVALID, 16, 0, "", 0), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && !strcmp(buf, "ENOSYS"));
	/* A path without its NUL, and an empty payload: EINVAL. */
	CU_ASSERT_EQUAL(raw_send(fd, XS_READ, 17, 0, "/r/a", 4), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && h.req_id == 17 && !strcmp(buf, "EINVAL"));
	CU_ASSERT_EQUAL(raw_send(fd, XS_READ, 18, 0, "", 0), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && !strcmp(buf, "EINVAL"));
	CU_ASSERT_EQUAL(raw_send(fd, XS_WRITE, 19, 0, "/no-nul-anywhere", 16), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && !strcmp(buf, "EINVAL"));
	/* Two frames in one write come back as two replies, in order. */
	{
		struct xsd_sockmsg a = {XS_READ, 21, 0, 5}, b = {XS_DIRECTORY, 22, 0, 3};

		memcpy(frames, &a, sizeof(a));
		memcpy(frames + sizeof(a), "/r/a", 5);
		off = sizeof(a) + 5;
		memcpy(frames + off, &b, sizeof(b));
		memcpy(frames + off + sizeof(b), "/r", 3);
		off += sizeof(b) + 3;
		CU_ASSERT_EQUAL(send(fd, frames, off, MSG_NOSIGNAL), (ssize_t)off);
		CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
		CU_ASSERT(h.req_id == 21 && h.type == XS_READ);
		CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
		CU_ASSERT(h.req_id == 22 && h.type == XS_DIRECTORY && !strcmp(buf, "a"));
	}
	/* ...and one frame dribbled a byte at a time comes back whole. */
	for (size_t i = 0; i < sizeof(struct xsd_sockmsg) + 5; i++)
		CU_ASSERT_EQUAL(send(fd, frames + i, 1, MSG_NOSIGNAL), 1);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.req_id == 21 && !strcmp(buf, "val"));
	/* A reply that would exceed XENSTORE_PAYLOAD_MAX is refused with E2BIG. */
	srv_call(s, do_big_dir, NULL);
	CU_ASSERT_EQUAL(raw_send(fd, XS_DIRECTORY, 23, 0, "/big", 5), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_ERROR && h.req_id == 23 && !strcmp(buf, "E2BIG"));
	CU_ASSERT_EQUAL(raw_send(fd, XS_DIRECTORY_PART, 24, 0,
				 "/big\0"
				 "0",
				 7),
			0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_DIRECTORY_PART && h.req_id == 24 && h.len <= XENSTORE_PAYLOAD_MAX);
	close(fd);
	srv_stop(s);
}

static void test_wire_malformed(void)
{
	struct srv *s = srv_start(NULL);
	struct xs_handle *good = xopen(s->sock0);
	struct xsd_sockmsg h;
	char buf[XENSTORE_PAYLOAD_MAX + 1];
	uint32_t rnd = 12345;
	int fd;

	CU_ASSERT_FATAL(good != NULL);
	CU_ASSERT(xwrite(good, XBT_NULL, "/ok", "1"));

	/* Header announcing more than XENSTORE_PAYLOAD_MAX: that connection is closed. */
	fd = raw_connect(s->sock0);
	CU_ASSERT_FATAL(fd >= 0);
	h = (struct xsd_sockmsg){.type = XS_READ, .req_id = 1, .len = XENSTORE_PAYLOAD_MAX + 1};
	CU_ASSERT_EQUAL(send(fd, &h, sizeof(h), MSG_NOSIGNAL), (ssize_t)sizeof(h));
	CU_ASSERT(raw_closed(fd));
	close(fd);
	CU_ASSERT(xread_eq(good, XBT_NULL, "/ok", "1"));

	/* Truncated frames, then hang up: no reply owed, nothing else disturbed. */
	fd = raw_connect(s->sock0);
	h = (struct xsd_sockmsg){.type = XS_WRITE, .req_id = 2, .len = 100};
	CU_ASSERT_EQUAL(send(fd, &h, sizeof(h), MSG_NOSIGNAL), (ssize_t)sizeof(h));
	CU_ASSERT_EQUAL(send(fd, "/trunc\0abc", 10, MSG_NOSIGNAL), 10);
	close(fd);
	fd = raw_connect(s->sock0);
	CU_ASSERT_EQUAL(send(fd, &h, 7, MSG_NOSIGNAL), 7);
	close(fd);
	CU_ASSERT(xread_eq(good, XBT_NULL, "/ok", "1"));
	CU_ASSERT_PTR_NULL(xs_read(good, XBT_NULL, "/trunc", NULL));

	/* Random frames of legal length: every one answered, connection alive. */
	fd = raw_connect(s->sock0);
	for (int i = 0; i < 200; i++) {
		uint32_t len, type;

		rnd = rnd * 1103515245u + 12345u;
		type = (rnd >> 8) % 30;
		len = (rnd >> 4) % 600;
		for (uint32_t j = 0; j < len; j++) {
			rnd = rnd * 1103515245u + 12345u;
			/* Mostly printable, some NULs and slashes, to reach the handlers. */
			buf[j] = (rnd >> 16) % 8 == 0	? '\0'
				 : (rnd >> 16) % 8 == 1 ? '/'
							: (char)('a' + (rnd >> 20) % 26);
		}
		/* Keep clear of the privileged domain-lifecycle requests and RESET_WATCHES. */
		if (type == XS_INTRODUCE || type == XS_RELEASE || type == XS_TRANSACTION_START)
			type = XS_READ;
		CU_ASSERT_EQUAL_FATAL(raw_send(fd, type, 1000 + (uint32_t)i, 0, buf, len), 0);
		for (;;) {
			CU_ASSERT_EQUAL_FATAL(raw_recv(fd, &h, buf), 0);
			if (h.type != XS_WATCH_EVENT)
				break;
		}
		CU_ASSERT_EQUAL(h.req_id, 1000 + (uint32_t)i);
	}
	close(fd);

	/* Pure garbage: answered or closed, never a crash. */
	fd = raw_connect(s->sock0);
	for (int i = 0; i < 4096; i++) {
		rnd = rnd * 1103515245u + 12345u;
		buf[i] = (char)(rnd >> 16);
	}
	send(fd, buf, 4096, MSG_NOSIGNAL);
	CU_ASSERT(raw_closed(fd));
	close(fd);

	/* The server and the well-behaved client carry on; new connections work. */
	CU_ASSERT(xread_eq(good, XBT_NULL, "/ok", "1"));
	fd = raw_connect(s->sock0);
	CU_ASSERT_EQUAL(raw_send(fd, XS_READ, 5, 0, "/ok", 4), 0);
	CU_ASSERT_EQUAL(raw_recv(fd, &h, buf), 0);
	CU_ASSERT(h.type == XS_READ && !strcmp(buf, "1"));
	close(fd);
	xs_close(good);
	srv_stop(s);
}

static void test_slow_reader(void)
{
	struct xs_limits lim = {.max_conn_out_bytes = 64 * 1024};
	struct srv *s = srv_start(&lim);
	struct xs_handle *good = xopen(s->sock0);
	char val[3000];
	int fd, closed = 0;

	memset(val, 'v', sizeof(val));
	CU_ASSERT(xs_write(good, XBT_NULL, "/bulk", val, sizeof(val)));
	fd = raw_connect(s->sock0);
	CU_ASSERT_FATAL(fd >= 0);
	/*
	 * Ask and never read: once the socket buffers and the 64 KiB queue are full the server
	 * hangs up, so our sends start failing. Bounded: 20000 replies are 60 MB.
	 */
	for (int i = 0; i < 20000 && !closed; i++) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};

		if (poll(&p, 1, WAIT_MS) != 1)
			break;
		if (p.revents & (POLLHUP | POLLERR))
			closed = 1;
		else if (raw_send(fd, XS_READ, (uint32_t)i, 0, "/bulk", 6) < 0)
			closed = 1;
	}
	CU_ASSERT(closed);
	close(fd);
	{
		unsigned int len;
		char *v = xs_read(good, XBT_NULL, "/bulk", &len);

		CU_ASSERT(v && len == sizeof(val));
		free(v);
	}
	xs_close(good);
	srv_stop(s);
}

static int suite_init(void)
{
	/* A client whose connection the server closed must see EPIPE, not die. */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static CU_TestInfo tests[] = {
    {"libxs_basic", test_libxs_basic},
    {"libxs_txn", test_libxs_txn},
    {"libxs_watch", test_libxs_watch},
    {"guest_perms", test_guest_perms},
    {"domains", test_domains},
    {"quotas", test_quotas},
    {"cli_tools", test_cli_tools},
    {"wire_framing", test_wire_framing},
    {"wire_malformed", test_wire_malformed},
    {"slow_reader", test_slow_reader},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("xs_server", suite_init, NULL, tests)
