/*
 * blkctl_client.c - blkctl's side of blkbackd's control socket (blkback/ctl.h) and Xen's
 * virtual disk names.
 *
 * "Is blkbackd running on this pool?" has one reliable answer: the flock on POOL/blkbackd.lock,
 * which a running daemon holds for its whole life. A connection to the socket is tried first
 * (the common case); when nobody answers, blkctl takes the lock itself, which both proves the
 * daemon is gone and keeps a new one from starting while blkctl changes the pool offline.
 */
#include "tools/blkctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "blkback/pool.h"
#include "common/util.h"

static int connect_ctl(const char *pool, int *out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, rc;

	rc = pool_ctl_path(pool, sa.sun_path, sizeof(sa.sun_path));
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		rc = -errno;
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* Take POOL/blkbackd.lock if it exists. 0 (held or no such file), -EAGAIN if a daemon has it. */
static int take_daemon_lock(const char *pool, int *lock_fd)
{
	char path[PATH_MAX];
	int fd, n;

	*lock_fd = -1;
	n = snprintf(path, sizeof(path), "%s/blkbackd.lock", pool);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	/* Read-only is enough for flock, and never creates a file a daemon of another user owns. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;

		if (err == EINTR)
			continue;
		close(fd);
		return err == EWOULDBLOCK ? -EAGAIN : -err;
	}
	*lock_fd = fd;
	return 0;
}

int blkctl_daemon_open(const char *pool, struct blkctl_daemon *d)
{
	int rc;

	memset(d, 0, sizeof(*d));
	d->fd = d->lock_fd = -1;
	rc = connect_ctl(pool, &d->fd);
	if (rc == 0)
		return 0;
	if (rc != -ENOENT && rc != -ECONNREFUSED)
		return rc; /* -EACCES among others: it may well run, we cannot tell */
	rc = take_daemon_lock(pool, &d->lock_fd);
	if (rc < 0)
		return rc;
	/*
	 * A daemon that took the lock after our connect but before our flock is not running yet
	 * as far as we are concerned: it waits for nothing of ours, and we hold the lock now.
	 */
	return 0;
}

void blkctl_daemon_close(struct blkctl_daemon *d)
{
	if (d->fd >= 0)
		close(d->fd);
	if (d->lock_fd >= 0)
		close(d->lock_fd); /* releases the flock */
	free(d->in);
	memset(d, 0, sizeof(*d));
	d->fd = d->lock_fd = -1;
}

static int64_t ms_left(uint64_t deadline_ns)
{
	uint64_t now = util_now_ns();

	return now >= deadline_ns ? 0 : (int64_t)((deadline_ns - now + 999999) / 1000000);
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == ECONNRESET ? -EPIPE : -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Receive until d->in holds a '\n'; returns the line length (without it) or -errno. */
static ssize_t recv_line(struct blkctl_daemon *d, uint64_t deadline_ns)
{
	size_t scanned = 0;

	for (;;) {
		char *nl =
		    d->in_len > scanned ? memchr(d->in + scanned, '\n', d->in_len - scanned) : NULL;
		struct pollfd pfd = {.fd = d->fd, .events = POLLIN};
		int64_t left;
		ssize_t n;
		int prc;

		if (nl)
			return nl - d->in;
		scanned = d->in_len;
		if (d->in_len >= BLKCTL_REPLY_MAX)
			return -E2BIG;
		if (d->in_cap - d->in_len < 4096) {
			size_t cap = d->in_cap ? d->in_cap * 2 : 8192;
			char *grown = realloc(d->in, cap);

			if (!grown)
				return -ENOMEM;
			d->in = grown;
			d->in_cap = cap;
		}
		left = ms_left(deadline_ns);
		if (left == 0)
			return -ETIMEDOUT;
		prc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (prc < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (prc == 0)
			return -ETIMEDOUT;
		n = recv(d->fd, d->in + d->in_len, d->in_cap - d->in_len, 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == ECONNRESET ? -EPIPE : -errno;
		}
		if (n == 0)
			return -EPIPE;
		d->in_len += (size_t)n;
	}
}

int blkctl_call(struct blkctl_daemon *d, json_object *req, json_object **ans)
{
	uint64_t deadline = util_now_ns() + (uint64_t)BLKCTL_REPLY_TIMEOUT_MS * 1000000;
	enum json_tokener_error jerr;
	const char *text;
	json_object *o, *ok;
	ssize_t len;
	int rc;

	if (d->fd < 0)
		return -ENOTCONN;
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	if (!text)
		return -ENOMEM;
	rc = send_all(d->fd, text, strlen(text));
	if (rc == 0)
		rc = send_all(d->fd, "\n", 1);
	if (rc < 0)
		return rc;
	len = recv_line(d, deadline);
	if (len < 0)
		return (int)len;
	d->in[len] = '\0';
	o = json_tokener_parse_verbose(d->in, &jerr);
	memmove(d->in, d->in + len + 1, d->in_len - (size_t)len - 1);
	d->in_len -= (size_t)len + 1;
	if (!o || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "ok", &ok) ||
	    !json_object_is_type(ok, json_type_boolean)) {
		json_object_put(o);
		return -EPROTO;
	}
	*ans = o;
	return 0;
}

int blkctl_vdev_devid(const char *vdev, uint32_t *devid)
{
	uint32_t disk = 0;
	unsigned letters = 0;
	const char *p;

	if (strncmp(vdev, "xvd", 3) != 0)
		return -EINVAL;
	/*
	 * Letters count like spreadsheet columns (a..z, aa..zz, aaa..): "xvdaa" is disk 26. Four
	 * letters reach disk 475253, inside the extended scheme's 20-bit disk field.
	 */
	for (p = vdev + 3; *p; p++) {
		if (*p < 'a' || *p > 'z' || ++letters > 4)
			return -EINVAL;
		disk = letters == 1 ? (uint32_t)(*p - 'a') : (disk + 1) * 26 + (uint32_t)(*p - 'a');
	}
	if (letters == 0)
		return -EINVAL;
	*devid = disk < 16 ? (202u << 8) | (disk << 4) : (1u << 28) | (disk << 8);
	return 0;
}

int die(const char *fmt, ...)
{
	va_list ap;

	fputs("blkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}
