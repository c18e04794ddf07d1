/*
 * test_hvsim.c - hvsimd as a whole: hostile control messages from a guest socket (each gets
 * an error reply or a closed connection, and the daemon serves on), guest memory it refuses,
 * the lock that keeps two instances apart, stale sockets, and a clean shutdown.
 */
#include "hv/hv.h"
#include "hv/hvsim.h"
#include "hv/hvsim_msg.h"
#include "tests/harness.h"
#include "tests/hv/test_hvsim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct hvsim_fix fix;
static domid_t domid;

static int suite_init(void)
{
	if (fix_start(&fix))
		return 1;
	return fix_create(&fix, "victim", 16ull << 20, &domid) ? 1 : 0;
}

static int suite_clean(void)
{
	return fix_stop(&fix) == 0 ? 0 : 1;
}

static int guest_sock(void)
{
	char path[192];
	struct hvsim_chan c;

	snprintf(path, sizeof(path), "%s/domains/%u/hv.sock", fix.dir, domid);
	if (hvsim_chan_connect(&c, path))
		return -1;
	return c.fd;
}

/* Send raw bytes (+ optional fds) and read the reply's header. 1 reply, 0 closed, -1 error. */
static int raw_call(int fd, const void *buf, size_t len, const int *fds, unsigned nfds,
		    struct hvsim_hdr *rep)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = (void *)(uintptr_t)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct hvsim_msg m;
	int got[HVSIM_MAX_FDS];
	unsigned ngot;
	size_t rlen;
	int rc;

	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
		return errno == EPIPE || errno == ECONNRESET ? 0 : -1;
	rc = hvsim_msg_recv(fd, &m, &rlen, got, &ngot, 0);
	if (rc == -EPIPE || rc == -ECONNRESET)
		return 0;
	if (rc)
		return -1;
	hvsim_close_fds(got, ngot);
	*rep = m.hdr;
	return 1;
}

static int hdr_call(int fd, uint32_t type, uint32_t seq, uint32_t len, const void *payload,
		    size_t plen, struct hvsim_hdr *rep)
{
	char buf[256];
	struct hvsim_hdr h = {.type = type, .seq = seq, .len = len};

	memcpy(buf, &h, sizeof(h));
	if (plen)
		memcpy(buf + sizeof(h), payload, plen);
	return raw_call(fd, buf, sizeof(h) + plen, NULL, 0, rep);
}

/* The daemon still answers, as the guest and as dom0. */
static void assert_alive(void)
{
	struct hvsim_info_rep info;
	struct hvsim_hdr rep;
	int fd = guest_sock();
	struct hv *hv;

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_INFO, 99, 0, NULL, 0, &rep), 1);
	CU_ASSERT_EQUAL(rep.seq, 99);
	CU_ASSERT_EQUAL(rep.status, 0);
	CU_ASSERT_EQUAL(rep.len, sizeof(info));
	close(fd);
	CU_ASSERT_EQUAL(hv_open(&hv, HV_KIND_SIM, fix.dir), 0);
	hv_close(hv);
}

static void test_framing(void)
{
	struct hvsim_hdr rep;
	char junk[16] = "garbage";
	struct hvsim_evtchn_msg ev = {0};
	static char big[HVSIM_MSG_MAX + 100];
	int fd;

	/* Shorter than a header: nothing to answer, the connection closes. */
	fd = guest_sock();
	CU_ASSERT_EQUAL(raw_call(fd, junk, 5, NULL, 0, &rep), 0);
	close(fd);
	/* An empty message reads as end of stream. */
	fd = guest_sock();
	CU_ASSERT_EQUAL(raw_call(fd, junk, 0, NULL, 0, &rep), 0);
	close(fd);
	/* Sequence 0 is reserved for notices. */
	fd = guest_sock();
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_INFO, 0, 0, NULL, 0, &rep), 0);
	close(fd);

	fd = guest_sock();
	/* Unknown types. */
	CU_ASSERT_EQUAL(hdr_call(fd, 0, 1, 0, NULL, 0, &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EOPNOTSUPP);
	CU_ASSERT_EQUAL(rep.seq, 1);
	CU_ASSERT_EQUAL(hdr_call(fd, 0xdeadbeef, 2, 0, NULL, 0, &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EOPNOTSUPP);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_PEER_CHANGED, 3, sizeof(ev), &ev, sizeof(ev), &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EOPNOTSUPP);
	/* Length field disagreeing with the bytes sent, both ways. */
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_EVTCHN_PEER, 4, 100, &ev, sizeof(ev), &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EINVAL);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_EVTCHN_PEER, 5, 2, &ev, sizeof(ev), &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EINVAL);
	/* Consistent, but the wrong size for the type. */
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_EVTCHN_PEER, 6, 4, &ev, 4, &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EINVAL);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_INFO, 7, 8, junk, 8, &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EINVAL);
	/* A status in a request. */
	{
		struct hvsim_hdr h = {.type = HVSIM_INFO, .seq = 8, .status = -1};

		CU_ASSERT_EQUAL(raw_call(fd, &h, sizeof(h), NULL, 0, &rep), 1);
		CU_ASSERT_EQUAL(rep.status, -EINVAL);
	}
	/* Bigger than any message: answered, not read past. */
	{
		struct hvsim_hdr h = {.type = HVSIM_INFO, .seq = 9, .len = sizeof(big) - sizeof(h)};

		memcpy(big, &h, sizeof(h));
		CU_ASSERT_EQUAL(raw_call(fd, big, sizeof(big), NULL, 0, &rep), 1);
		CU_ASSERT_EQUAL(rep.status, -EMSGSIZE);
		CU_ASSERT_EQUAL(rep.seq, 9);
	}
	/* The same connection still works. */
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_INFO, 10, 0, NULL, 0, &rep), 1);
	CU_ASSERT_EQUAL(rep.status, 0);
	close(fd);
	assert_alive();
}

static void test_guest_may_not(void)
{
	struct hvsim_dom_create cr = {.mem_bytes = 16ull << 20, .name = "evil"};
	struct hvsim_domid_msg d0 = {.domid = 0}, dv = {.domid = domid};
	struct hvsim_hdr rep;
	int fd = guest_sock();

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_DOMAIN_CREATE, 1, sizeof(cr), &cr, sizeof(cr), &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EPERM);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_DOMAIN_DESTROY, 2, sizeof(dv), &dv, sizeof(dv), &rep),
			1);
	CU_ASSERT_EQUAL(rep.status, -EPERM);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_DOMAIN_LIST, 3, sizeof(d0), &d0, sizeof(d0), &rep), 1);
	CU_ASSERT_EQUAL(rep.status, -EPERM);
	CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_DOMAIN_GET_MEM, 4, sizeof(dv), &dv, sizeof(dv), &rep),
			1);
	CU_ASSERT_EQUAL(rep.status, -EPERM);
	close(fd);
	/* And dom0 has no guest memory to register. */
	{
		char path[192];
		struct hvsim_chan c;

		snprintf(path, sizeof(path), "%s/hv.sock", fix.dir);
		CU_ASSERT_EQUAL_FATAL(hvsim_chan_connect(&c, path), 0);
		CU_ASSERT_EQUAL(hdr_call(c.fd, HVSIM_GUEST_REGISTER_MEM, 1, 0, NULL, 0, &rep), 1);
		CU_ASSERT_EQUAL(rep.status, -EPERM);
		/* A name without its NUL. */
		memset(cr.name, 'x', sizeof(cr.name));
		CU_ASSERT_EQUAL(
		    hdr_call(c.fd, HVSIM_DOMAIN_CREATE, 2, sizeof(cr), &cr, sizeof(cr), &rep), 1);
		CU_ASSERT_EQUAL(rep.status, -EINVAL);
		hvsim_chan_close(&c);
	}
	assert_alive();
}

static void test_bad_ports(void)
{
	static const uint32_t ports[] = {0, 1, 1023, 1024, 4096, 0x7fffffff, 0xffffffff};
	static const uint32_t types[] = {HVSIM_EVTCHN_PEER, HVSIM_EVTCHN_UNBIND};
	struct hvsim_evtchn_msg ev;
	struct hvsim_hdr rep;
	int fd = guest_sock();
	uint32_t seq = 1;

	CU_ASSERT_FATAL(fd >= 0);
	for (size_t t = 0; t < 2; t++) {
		for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
			ev.remote = 0;
			ev.port = ports[i];
			CU_ASSERT_EQUAL(
			    hdr_call(fd, types[t], seq++, sizeof(ev), &ev, sizeof(ev), &rep), 1);
			CU_ASSERT_EQUAL(rep.status, -EINVAL);
		}
	}
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		ev.remote = 0;
		ev.port = ports[i];
		CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_EVTCHN_BIND_INTERDOMAIN, seq++, sizeof(ev), &ev,
					 sizeof(ev), &rep),
				1);
		CU_ASSERT_EQUAL(rep.status, -EINVAL);
	}
	/* Domains that do not exist, including reserved and out-of-range ids. */
	ev.port = 1;
	for (uint32_t remote = 0x7ff0; remote < 0x7ff3; remote++) {
		ev.remote = remote;
		CU_ASSERT_EQUAL(hdr_call(fd, HVSIM_EVTCHN_ALLOC_UNBOUND, seq++, sizeof(ev), &ev,
					 sizeof(ev), &rep),
				1);
		CU_ASSERT_EQUAL(rep.status, -ESRCH);
	}
	ev.remote = 0xffffffff;
	CU_ASSERT_EQUAL(
	    hdr_call(fd, HVSIM_EVTCHN_BIND_INTERDOMAIN, seq++, sizeof(ev), &ev, sizeof(ev), &rep),
	    1);
	CU_ASSERT_EQUAL(rep.status, -ESRCH);
	close(fd);
	assert_alive();
}

/* Offer @fd as guest memory on a fresh connection; returns hvsimd's status. */
static int offer_mem(int memfd)
{
	struct hvsim_hdr h = {.type = HVSIM_GUEST_REGISTER_MEM, .seq = 1}, rep;
	int fd = guest_sock();
	int rc;

	if (fd < 0)
		return -EIO;
	rc = raw_call(fd, &h, sizeof(h), &memfd, memfd >= 0 ? 1 : 0, &rep);
	close(fd);
	return rc == 1 ? rep.status : -EIO;
}

static void test_bad_memory(void)
{
	const uint64_t size = 16ull << 20;
	struct hvsim_evtchn_msg ev = {0};
	struct hvsim_hdr rep;
	char path[192];
	int fd, pfd[2], conn;

	/* Nothing offered and nothing registered yet. */
	CU_ASSERT_EQUAL(offer_mem(-1), -ENXIO);
	/* Not a memfd. */
	CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
	CU_ASSERT_EQUAL(offer_mem(pfd[0]), -EINVAL);
	close(pfd[0]);
	close(pfd[1]);
	/* A memfd that cannot be sealed (it could shrink under the backend). */
	fd = memfd_create("t", MFD_CLOEXEC);
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)size), 0);
	CU_ASSERT_EQUAL(offer_mem(fd), -EINVAL);
	close(fd);
	/* The wrong size. */
	fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)size / 2), 0);
	CU_ASSERT_EQUAL(offer_mem(fd), -EINVAL);
	close(fd);
	/* Write-sealed: dom0 could not map it writable. */
	fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)size), 0);
	CU_ASSERT_EQUAL(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0);
	CU_ASSERT_EQUAL(offer_mem(fd), -EINVAL);
	close(fd);
	/* Read-only. */
	fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)size), 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	{
		int ro = open(path, O_RDONLY | O_CLOEXEC);

		CU_ASSERT(ro >= 0);
		CU_ASSERT_EQUAL(offer_mem(ro), -EINVAL);
		close(ro);
	}
	close(fd);
	/* Fds riding on another request are refused (and not kept). */
	conn = guest_sock();
	{
		char buf[sizeof(struct hvsim_hdr) + sizeof(ev)];
		struct hvsim_hdr h = {.type = HVSIM_EVTCHN_PEER, .seq = 5, .len = sizeof(ev)};
		int two[2];

		CU_ASSERT_EQUAL_FATAL(pipe(two), 0);
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), &ev, sizeof(ev));
		CU_ASSERT_EQUAL(raw_call(conn, buf, sizeof(buf), two, 2, &rep), 1);
		CU_ASSERT_EQUAL(rep.status, -EINVAL);
		close(two[0]);
		close(two[1]);
	}
	close(conn);
	/* After all that a proper guest still registers. */
	{
		struct hv *hv;

		CU_ASSERT_EQUAL(hv_guest_open(&hv, fix.dir, "victim"), 0);
		hv_close(hv);
	}
	assert_alive();
}

/* Many connections at once from a guest: the extras are refused, the daemon carries on. */
static void test_connection_flood(void)
{
	struct hvsim_hdr h = {.type = HVSIM_INFO, .seq = 1};
	int fds[80], n = 0, served = 0, closed = 0;

	for (int i = 0; i < 80; i++) {
		fds[i] = guest_sock();
		if (fds[i] >= 0)
			n++;
	}
	/* All stay open until every one is answered or hung up on. */
	for (int i = 0; i < 80; i++)
		if (fds[i] >= 0)
			send(fds[i], &h, sizeof(h), MSG_NOSIGNAL);
	for (int i = 0; i < 80; i++) {
		struct hvsim_msg m;
		int got[HVSIM_MAX_FDS];
		unsigned ngot;
		size_t len;

		if (fds[i] < 0)
			continue;
		if (hvsim_msg_recv(fds[i], &m, &len, got, &ngot, 0) == 0) {
			hvsim_close_fds(got, ngot);
			served++;
		} else {
			closed++;
		}
	}
	for (int i = 0; i < 80; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	CU_ASSERT_EQUAL(n, 80);
	CU_ASSERT(served <= 64);
	CU_ASSERT_EQUAL(served + closed, n);
	assert_alive();
}

static void test_instance_lock_and_stale(void)
{
	char dir[160], path[256];
	struct hvsim_fix f2;
	struct hvsim *s;
	struct stat st;
	int fd;

	/* A second instance in a live instance's directory is refused. */
	CU_ASSERT_EQUAL(hvsim_new(&s, fix.dir), -EBUSY);
	/* A directory too long for its sockets. */
	memset(dir, 'd', sizeof(dir) - 1);
	dir[0] = '/';
	dir[sizeof(dir) - 1] = '\0';
	CU_ASSERT_EQUAL(hvsim_new(&s, dir), -ENAMETOOLONG);

	/* Leftovers of a dead instance are replaced. */
	f2.pid = 0;
	CU_ASSERT_EQUAL_FATAL(fix_start(&f2), 0);
	CU_ASSERT_EQUAL(fix_create(&f2, "left", 16ull << 20, NULL), 0);
	snprintf(dir, sizeof(dir), "%s", f2.dir);
	/* Simulate a crash: kill without cleanup, keep the files. */
	kill(f2.pid, SIGKILL);
	waitpid(f2.pid, NULL, 0);
	f2.pid = 0;
	snprintf(path, sizeof(path), "%s/names/left", dir);
	CU_ASSERT_EQUAL(lstat(path, &st), 0);
	snprintf(path, sizeof(path), "%s/domains/1/hv.sock", dir);
	fd = open(path, O_RDONLY);
	CU_ASSERT_EQUAL(fd, -1);
	CU_ASSERT_EQUAL(lstat(path, &st), 0);

	/* A new instance in the same directory (fix_start picks a new one; start by hand). */
	snprintf(f2.dir, sizeof(f2.dir), "%s", dir);
	{
		pid_t pid;

		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			volatile sig_atomic_t stop = 0;
			int rc = hvsim_new(&s, dir);

			if (rc)
				_exit(3);
			/* Report the cleanup by exiting: the stale link and domain are gone. */
			snprintf(path, sizeof(path), "%s/names/left", dir);
			rc = lstat(path, &st) == 0;
			snprintf(path, sizeof(path), "%s/domains/1", dir);
			rc |= (lstat(path, &st) == 0) << 1;
			(void)stop;
			hvsim_free(s);
			_exit(rc ? 10 + rc : 0);
		}
		CU_ASSERT_FATAL(pid > 0);
		{
			int st2;

			CU_ASSERT_EQUAL(waitpid(pid, &st2, 0), pid);
			CU_ASSERT(WIFEXITED(st2) && WEXITSTATUS(st2) == 0);
		}
	}
}

/* A clean stop removes every socket, link and directory; only the lock file stays. */
static void test_clean_shutdown(void)
{
	struct hvsim_fix f3 = {0};
	char path[256];
	struct dirent *de;
	int others = 0;
	DIR *d;

	CU_ASSERT_EQUAL_FATAL(fix_start(&f3), 0);
	CU_ASSERT_EQUAL(fix_create(&f3, "a", 16ull << 20, NULL), 0);
	CU_ASSERT_EQUAL(fix_create(&f3, "b", 16ull << 20, NULL), 0);
	CU_ASSERT_EQUAL(fix_stop(&f3), 0);
	d = opendir(f3.dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, "hvsimd.lock"))
			continue;
		others++;
	}
	closedir(d);
	CU_ASSERT_EQUAL(others, 0);
	snprintf(path, sizeof(path), "%s/hv.sock", f3.dir);
	CU_ASSERT_EQUAL(access(path, F_OK), -1);
}

static CU_TestInfo tests[] = {
    {"framing", test_framing},
    {"guest_may_not", test_guest_may_not},
    {"bad_ports", test_bad_ports},
    {"bad_memory", test_bad_memory},
    {"connection_flood", test_connection_flood},
    {"instance_lock_and_stale", test_instance_lock_and_stale},
    {"clean_shutdown", test_clean_shutdown},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("hvsim", suite_init, suite_clean, tests)
