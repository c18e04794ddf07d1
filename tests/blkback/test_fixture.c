/* test_fixture.c - the private hvsimd and blkbackd of the blkback tests (see test_fixture.h). */
#include "tests/blkback/test_fixture.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xenstore.h>

#include "blkback/blkback.h"
#include "blkback/pool.h"
#include "common/log.h"
#include "hv/hvsim.h"
#include "hv/hvsim_msg.h"
#include "hv/hvsim_proto.h"
#include "tests/harness.h"

static volatile sig_atomic_t child_stop;

static void on_term(int sig)
{
	(void)sig;
	child_stop = 1;
}

/* The children log errors only, unless BB_TEST_LOG names a level: tests provoke warnings. */
static void child_setup(void)
{
	struct sigaction sa = { .sa_handler = on_term };
	const char *lvl = getenv("BB_TEST_LOG");

	log_set_level(lvl ? lvl : "err");
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	/* Die with the test binary, whatever happens to it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/*
	 * Drop every descriptor inherited from the test: a guest context the test holds open
	 * must not stay alive in a daemon child (hvsimd would see that guest as still running).
	 */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int set_sun_path(struct sockaddr_un *sa, const char *dir, const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s%s", dir, name);
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

/* Wait until @path accepts a connection (bounded at 10 s) or the child @pid died. */
static int wait_socket(const char *path, pid_t *pid)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (set_sun_path(&sa, path, "") < 0)
		return -ENAMETOOLONG;
	for (int i = 0; i < 10000; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), status;

		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			return 0;
		}
		if (fd >= 0)
			close(fd);
		if (waitpid(*pid, &status, WNOHANG) == *pid) {
			*pid = 0;
			return -ECHILD;
		}
		sleep_ms(1);
	}
	return -ETIMEDOUT;
}

int fix_start_bb(struct bb_fix *f)
{
	char path[256];

	fflush(NULL);
	f->bb_pid = fork();
	if (f->bb_pid < 0)
		return -errno;
	if (f->bb_pid == 0) {
		struct blkback_opts o;
		struct blkback *bb;
		int rc;

		child_setup();
		blkback_opts_default(&o);
		o.hv_dir = f->hv_dir;
		o.pool = f->pool;
		o.max_queues = 4;
		o.no_direct = 1;
		o.poll_us = f->poll_us;
		rc = blkback_new(&bb, &o);
		if (rc < 0)
			_exit(3);
		rc = blkback_run(bb, &child_stop);
		blkback_free(bb);
		_exit(rc < 0 ? 4 : 0);
	}
	snprintf(path, sizeof(path), "%s/blkbackd.sock", f->pool);
	return wait_socket(path, &f->bb_pid);
}

int fix_start(struct bb_fix *f)
{
	static int seq;
	unsigned poll_us = f->poll_us;
	char path[256];
	int rc;

	memset(f, 0, sizeof(*f));
	f->poll_us = poll_us;
	snprintf(f->dir, sizeof(f->dir), "%s/bb%d", harness_tmpdir(), ++seq);
	snprintf(f->hv_dir, sizeof(f->hv_dir), "%s/hv", f->dir);
	snprintf(f->pool, sizeof(f->pool), "%s/pool", f->dir);
	if (mkdir(f->dir, 0755) < 0)
		return -errno;
	rc = pool_init(f->pool);
	if (rc < 0)
		return rc;
	fflush(NULL);
	f->hv_pid = fork();
	if (f->hv_pid < 0)
		return -errno;
	if (f->hv_pid == 0) {
		struct hvsim *s;
		int r;

		child_setup();
		r = hvsim_new(&s, f->hv_dir);
		if (r)
			_exit(3);
		r = hvsim_run(s, &child_stop);
		hvsim_free(s);
		_exit(r ? 4 : 0);
	}
	snprintf(path, sizeof(path), "%s/xenstore.sock", f->hv_dir);
	rc = wait_socket(path, &f->hv_pid);
	if (rc < 0)
		goto err;
	/* hv.sock speaks its own message protocol: connect the way hv.h does (bounded). */
	snprintf(path, sizeof(path), "%s/hv.sock", f->hv_dir);
	for (int i = 0;; i++) {
		struct hvsim_chan c = { .fd = -1 };

		if (hvsim_chan_connect(&c, path) == 0) {
			hvsim_chan_close(&c);
			break;
		}
		if (i == 10000) {
			rc = -ETIMEDOUT;
			goto err;
		}
		sleep_ms(1);
	}
	snprintf(path, sizeof(path), "%s/xenstore.sock", f->hv_dir);
	setenv("XENSTORED_PATH", path, 1);
	f->xs = xs_open(0);
	unsetenv("XENSTORED_PATH");
	if (!f->xs) {
		rc = -EIO;
		goto err;
	}
	rc = fix_start_bb(f);
	if (rc < 0)
		goto err;
	return 0;
err:
	fix_stop(f);
	return rc;
}

static int reap(pid_t *pid)
{
	int status;

	if (*pid <= 0)
		return -1;
	kill(*pid, SIGTERM);
	if (waitpid(*pid, &status, 0) != *pid)
		return -1;
	*pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int fix_stop_bb(struct bb_fix *f)
{
	return reap(&f->bb_pid);
}

void fix_stop(struct bb_fix *f)
{
	reap(&f->bb_pid);
	if (f->xs)
		xs_close(f->xs);
	f->xs = NULL;
	reap(&f->hv_pid);
}

static int dom0_call(struct bb_fix *f, uint32_t type, const void *req, uint32_t len, void *rep,
		     uint32_t rep_cap)
{
	struct hvsim_chan c = { .fd = -1 };
	char path[256];
	int rc;

	snprintf(path, sizeof(path), "%s/hv.sock", f->hv_dir);
	rc = hvsim_chan_connect(&c, path);
	if (rc)
		return rc;
	rc = hvsim_chan_call(&c, type, req, len, NULL, 0, rep, rep_cap, NULL, NULL, 0);
	hvsim_chan_close(&c);
	return rc;
}

int fix_domain(struct bb_fix *f, const char *name, domid_t *domid)
{
	struct hvsim_dom_create req = { .mem_bytes = 64ull << 20 };
	struct hvsim_domid_msg rep = { 0 };
	int rc;

	snprintf(req.name, sizeof(req.name), "%s", name);
	rc = dom0_call(f, HVSIM_DOMAIN_CREATE, &req, sizeof(req), &rep, sizeof(rep));
	if (!rc && domid)
		*domid = (domid_t)rep.domid;
	return rc;
}

int fix_destroy(struct bb_fix *f, domid_t domid)
{
	struct hvsim_domid_msg req = { .domid = domid };

	return dom0_call(f, HVSIM_DOMAIN_DESTROY, &req, sizeof(req), NULL, 0);
}

int fix_vol(struct bb_fix *f, const char *name, uint64_t bytes)
{
	return pool_vol_create(f->pool, name, bytes);
}

static int ctl_vsend(struct bb_fix *f, const char *fmt, va_list ap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[4200];
	int fd, n;

	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 1)
		return -EINVAL;
	line[n++] = '\n';
	if (set_sun_path(&sa, f->pool, "/blkbackd.sock") < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, line, (size_t)n) != n) {
		close(fd);
		return -EIO;
	}
	return fd;
}

int fix_ctl_send(struct bb_fix *f, const char *fmt, ...)
{
	va_list ap;
	int fd;

	va_start(ap, fmt);
	fd = ctl_vsend(f, fmt, ap);
	va_end(ap);
	return fd;
}

json_object *fix_ctl_recv(int fd)
{
	char buf[65536];
	json_object *ans = NULL;
	size_t got = 0;

	if (fd < 0)
		return NULL;
	/* One answer line; bounded at 10 s (a detach waits for the frontend, up to 5 s). */
	while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 10000) != 1)
			goto out;
		r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			goto out;
		got += (size_t)r;
	}
	buf[got] = '\0';
	ans = json_tokener_parse(buf);
out:
	close(fd);
	return ans;
}

json_object *fix_ctl(struct bb_fix *f, const char *fmt, ...)
{
	va_list ap;
	int fd;

	va_start(ap, fmt);
	fd = ctl_vsend(f, fmt, ap);
	va_end(ap);
	return fix_ctl_recv(fd);
}

int fix_ok(json_object *answer)
{
	json_object *ok;

	return answer && json_object_object_get_ex(answer, "ok", &ok) &&
	       json_object_get_boolean(ok);
}

int64_t fix_int(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return -1;
	return json_object_get_int64(v);
}

char *fix_read(struct bb_fix *f, const char *fmt, ...)
{
	char path[256];
	unsigned len;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return xs_read(f->xs, XBT_NULL, path, &len);
}

json_object *fix_stats(struct bb_fix *f, const char *domain, const char *vdev)
{
	json_object *ans = fix_ctl(f, "{\"cmd\":\"stats\",\"domain\":\"%s\",\"vdev\":\"%s\"}",
				   domain, vdev);
	json_object *vbds, *one = NULL;

	if (fix_ok(ans) && json_object_object_get_ex(ans, "vbds", &vbds) &&
	    json_object_array_length(vbds) == 1)
		one = json_object_get(json_object_array_get_idx(vbds, 0));
	json_object_put(ans);
	return one;
}
