/* test_hvsim_fixture.c - the private hvsimd of the hv tests (no suite of its own). */
#include "tests/hv/test_hvsim.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "hv/hvsim.h"
#include "hv/hvsim_gnt.h"
#include "hv/hvsim_msg.h"
#include "tests/harness.h"

static volatile sig_atomic_t child_stop;

static void on_term(int sig)
{
	(void)sig;
	child_stop = 1;
}

static void child_main(const char *dir)
{
	struct sigaction sa = {.sa_handler = on_term};
	struct hvsim *s;
	int rc;

	/* Never outlive the test binary, however it ends. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Only errors: the tests provoke warnings on purpose. */
	log_set_level("err");
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	rc = hvsim_new(&s, dir);
	if (rc) {
		fprintf(stderr, "test hvsimd: %s\n", strerror(-rc));
		_exit(3);
	}
	rc = hvsim_run(s, &child_stop);
	hvsim_free(s);
	/* _exit: the parent's atexit handlers (temp dir removal) are not ours to run. */
	_exit(rc ? 4 : 0);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};

	nanosleep(&ts, NULL);
}

int fix_start(struct hvsim_fix *f)
{
	static int seq;
	char path[192];

	snprintf(f->dir, sizeof(f->dir), "%s/hv%d", harness_tmpdir(), ++seq);
	snprintf(path, sizeof(path), "%s/hv.sock", f->dir);
	fflush(NULL);
	f->pid = fork();
	if (f->pid < 0)
		return -errno;
	if (f->pid == 0)
		child_main(f->dir);
	/* Ready when the socket accepts; bounded at 10 s. */
	for (int i = 0; i < 10000; i++) {
		struct hvsim_chan c = {.fd = -1};
		int status;

		if (hvsim_chan_connect(&c, path) == 0) {
			hvsim_chan_close(&c);
			return 0;
		}
		if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
			f->pid = 0;
			return -ECHILD;
		}
		sleep_ms(1);
	}
	fix_stop(f);
	return -ETIMEDOUT;
}

int fix_stop(struct hvsim_fix *f)
{
	int status;

	if (f->pid <= 0)
		return -1;
	kill(f->pid, SIGTERM);
	if (waitpid(f->pid, &status, 0) != f->pid)
		return -1;
	f->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int dom0_call(const struct hvsim_fix *f, uint32_t type, const void *req, uint32_t len,
		     void *rep, uint32_t rep_cap, int *fds, unsigned nfds)
{
	struct hvsim_chan c = {.fd = -1};
	char path[192];
	int rc;

	snprintf(path, sizeof(path), "%s/hv.sock", f->dir);
	rc = hvsim_chan_connect(&c, path);
	if (rc)
		return rc;
	rc = hvsim_chan_call(&c, type, req, len, NULL, 0, rep, rep_cap, NULL, fds, nfds);
	hvsim_chan_close(&c);
	return rc;
}

int fix_create(const struct hvsim_fix *f, const char *name, uint64_t mem_bytes, domid_t *domid)
{
	struct hvsim_dom_create req = {.mem_bytes = mem_bytes};
	struct hvsim_domid_msg rep = {0};
	int rc;

	snprintf(req.name, sizeof(req.name), "%s", name);
	rc = dom0_call(f, HVSIM_DOMAIN_CREATE, &req, sizeof(req), &rep, sizeof(rep), NULL, 0);
	if (!rc && domid)
		*domid = (domid_t)rep.domid;
	return rc;
}

int fix_destroy(const struct hvsim_fix *f, domid_t domid)
{
	struct hvsim_domid_msg req = {.domid = domid};

	return dom0_call(f, HVSIM_DOMAIN_DESTROY, &req, sizeof(req), NULL, 0, NULL, 0);
}

void *fix_map_table(const struct hvsim_fix *f, domid_t domid, uint32_t *nr_entries)
{
	struct hvsim_domid_msg req = {.domid = domid};
	struct hvsim_mem_rep rep;
	int fds[4];
	void *p;

	if (dom0_call(f, HVSIM_DOMAIN_GET_MEM, &req, sizeof(req), &rep, sizeof(rep), fds, 4))
		return NULL;
	p = mmap(NULL, hvsim_gnt_table_bytes(rep.nr_grants), PROT_READ | PROT_WRITE, MAP_SHARED,
		 fds[1], 0);
	hvsim_close_fds(fds, 4);
	if (p == MAP_FAILED)
		return NULL;
	*nr_entries = rep.nr_grants;
	return p;
}

void fix_unmap_table(void *table, uint32_t nr_entries)
{
	munmap(table, hvsim_gnt_table_bytes(nr_entries));
}

int fix_wait_readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}
