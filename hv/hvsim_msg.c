/*
 * hvsim_msg.c - SEQPACKET framing with SCM_RIGHTS for the hv control protocol.
 */
#include "hv/hvsim_msg.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CMSG_FDS_SPACE CMSG_SPACE(sizeof(int) * HVSIM_MAX_FDS)

void hvsim_close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

int hvsim_msg_send(int sock, uint32_t type, uint32_t seq, int32_t status, const void *payload,
		   uint32_t len, const int *fds, unsigned nfds, int flags)
{
	struct hvsim_hdr hdr = {.type = type, .seq = seq, .status = status, .len = len};
	union {
		char buf[CMSG_FDS_SPACE];
		struct cmsghdr align;
	} ctl;
	struct iovec iov[2] = {
	    {.iov_base = &hdr, .iov_len = sizeof(hdr)},
	    {.iov_base = (void *)(uintptr_t)payload, .iov_len = len},
	};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
	ssize_t n;

	if (nfds > HVSIM_MAX_FDS || len > sizeof(((struct hvsim_msg *)0)->payload))
		return -EMSGSIZE;
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	do {
		n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return 0;
}

int hvsim_msg_recv(int sock, struct hvsim_msg *m, size_t *len, int *fds, unsigned *nfds, int flags)
{
	union {
		char buf[CMSG_FDS_SPACE];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
	struct msghdr mh = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = ctl.buf,
	    .msg_controllen = sizeof(ctl.buf),
	};
	unsigned got = 0;
	ssize_t n;

	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	/* Collect every fd first, whatever else is wrong, so none leaks. */
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t cnt;
		int tmp[HVSIM_MAX_FDS];

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (cnt > HVSIM_MAX_FDS)
			cnt = HVSIM_MAX_FDS;
		memcpy(tmp, CMSG_DATA(cm), cnt * sizeof(int));
		for (size_t i = 0; i < cnt; i++) {
			if (got < HVSIM_MAX_FDS)
				fds[got++] = tmp[i];
			else
				close(tmp[i]);
		}
	}
	*nfds = got;
	if (n == 0) {
		hvsim_close_fds(fds, got);
		*nfds = 0;
		return -EPIPE;
	}
	if (mh.msg_flags & MSG_TRUNC) {
		hvsim_close_fds(fds, got);
		*nfds = 0;
		*len = (size_t)n;
		return -EMSGSIZE;
	}
	*len = (size_t)n;
	return 0;
}

int hvsim_chan_connect(struct hvsim_chan *c, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, rc;

	c->fd = -1;
	c->seq = 0;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	c->fd = fd;
	return 0;
}

void hvsim_chan_close(struct hvsim_chan *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* A notice: pass it on. Returns 0, or -EPROTO if @m is not one. */
static int chan_notice(struct hvsim_chan *c, const struct hvsim_msg *m, size_t len)
{
	if (m->hdr.seq != 0)
		return -EPROTO;
	if (c->notice)
		c->notice(c->arg, m, len);
	return 0;
}

int hvsim_chan_call(struct hvsim_chan *c, uint32_t type, const void *req, uint32_t req_len,
		    const int *fds, unsigned nfds, void *rep, uint32_t rep_cap, uint32_t *rep_len,
		    int *rfds, unsigned want_fds)
{
	struct hvsim_msg m;
	int got_fds[HVSIM_MAX_FDS];
	unsigned ngot;
	uint32_t seq;
	size_t len;
	int rc;

	if (c->fd < 0)
		return -EPIPE;
	/* Sequence numbers skip 0, which marks notices. */
	seq = ++c->seq;
	if (seq == 0)
		seq = c->seq = 1;
	rc = hvsim_msg_send(c->fd, type, seq, 0, req, req_len, fds, nfds, 0);
	if (rc < 0)
		return rc == -ECONNRESET ? -EPIPE : rc;

	for (;;) {
		rc = hvsim_msg_recv(c->fd, &m, &len, got_fds, &ngot, 0);
		if (rc == -ECONNRESET)
			return -EPIPE;
		if (rc < 0)
			return rc;
		if (len < sizeof(m.hdr) || m.hdr.len != len - sizeof(m.hdr)) {
			hvsim_close_fds(got_fds, ngot);
			return -EPROTO;
		}
		if (m.hdr.seq == seq)
			break;
		hvsim_close_fds(got_fds, ngot);
		rc = chan_notice(c, &m, len);
		if (rc < 0)
			return rc;
	}

	if (m.hdr.type != type || m.hdr.status > 0) {
		hvsim_close_fds(got_fds, ngot);
		return -EPROTO;
	}
	if (m.hdr.status < 0) {
		hvsim_close_fds(got_fds, ngot);
		return m.hdr.status;
	}
	if (ngot != want_fds || m.hdr.len > rep_cap) {
		hvsim_close_fds(got_fds, ngot);
		return -EPROTO;
	}
	if (m.hdr.len)
		memcpy(rep, m.payload, m.hdr.len);
	if (rep_len)
		*rep_len = m.hdr.len;
	for (unsigned i = 0; i < ngot; i++)
		rfds[i] = got_fds[i];
	return 0;
}

int hvsim_chan_drain(struct hvsim_chan *c)
{
	struct hvsim_msg m;
	int got_fds[HVSIM_MAX_FDS];
	unsigned ngot;
	size_t len;
	int rc, n = 0;

	if (c->fd < 0)
		return -EPIPE;
	for (;;) {
		rc = hvsim_msg_recv(c->fd, &m, &len, got_fds, &ngot, MSG_DONTWAIT);
		if (rc == -EAGAIN)
			return n;
		if (rc == -ECONNRESET)
			return -EPIPE;
		if (rc < 0)
			return rc;
		hvsim_close_fds(got_fds, ngot);
		if (len < sizeof(m.hdr) || m.hdr.len != len - sizeof(m.hdr))
			return -EPROTO;
		rc = chan_notice(c, &m, len);
		if (rc < 0)
			return rc;
		n++;
	}
}
