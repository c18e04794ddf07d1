/*
 * bench_hv - `make bench-hv`: the sim hypervisor's costs, measured on a private hvsimd (the
 * hvsimd binary next to this one, in a temp dir):
 *   - xenstore READ round trips per second (the real libxenstore, one client);
 *   - event-channel notify-to-wake latency, median and p99: dom0 notifies, a guest process
 *     blocked in poll() on its evtchn fd wakes; both read CLOCK_MONOTONIC, one-way;
 *   - grant map+unmap per second: map_pages with batches of 1 and 11 pages (a full blkif
 *     request), and map_contig of 1 and 11 pages.
 */
#define LOG_TAG "bench"
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xenstore.h>

#include "common/log.h"
#include "common/util.h"
#include "hv/hv.h"
#include "hv/hvsim_msg.h"

#define EVT_WARMUP 1000
#define BATCH	   11

static char dir[64];
static pid_t hvsimd_pid;
static double seconds = 1.0;
static unsigned evt_rounds = 20000;

static void stop_hvsimd(void)
{
	char path[128];

	if (hvsimd_pid > 0) {
		kill(hvsimd_pid, SIGTERM);
		waitpid(hvsimd_pid, NULL, 0);
		hvsimd_pid = 0;
	}
	if (dir[0]) {
		snprintf(path, sizeof(path), "%s/hv/hvsimd.lock", dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/hv", dir);
		rmdir(path);
		rmdir(dir);
	}
}

static int start_hvsimd(const char *bindir)
{
	char exe[PATH_MAX + 16], hv[128];

	snprintf(dir, sizeof(dir), "/tmp/sluice-bench-hv.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("bench_hv: mkdtemp");
		return -1;
	}
	snprintf(hv, sizeof(hv), "%s/hv", dir);
	snprintf(exe, sizeof(exe), "%s/hvsimd", bindir);
	hvsimd_pid = fork();
	if (hvsimd_pid < 0)
		return -1;
	if (hvsimd_pid == 0) {
		execl(exe, "hvsimd", "--dir", hv, "--log-level", "warn", (char *)NULL);
		fprintf(stderr, "bench_hv: exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 10000; i++) {
		struct hv *h;

		if (hv_open(&h, HV_KIND_SIM, hv) == 0) {
			hv_close(h);
			return 0;
		}
		if (waitpid(hvsimd_pid, NULL, WNOHANG) == hvsimd_pid) {
			hvsimd_pid = 0;
			return -1;
		}
		usleep(1000);
	}
	return -1;
}

static int create_domain(const char *name, domid_t *domid)
{
	struct hvsim_dom_create req = {.mem_bytes = 64ull << 20};
	struct hvsim_domid_msg rep;
	struct hvsim_chan c = {.fd = -1};
	char path[128];
	int rc;

	snprintf(req.name, sizeof(req.name), "%s", name);
	snprintf(path, sizeof(path), "%s/hv/hv.sock", dir);
	rc = hvsim_chan_connect(&c, path);
	if (!rc)
		rc = hvsim_chan_call(&c, HVSIM_DOMAIN_CREATE, &req, sizeof(req), NULL, 0, &rep,
				     sizeof(rep), NULL, NULL, 0);
	hvsim_chan_close(&c);
	if (!rc)
		*domid = (domid_t)rep.domid;
	return rc;
}

static double elapsed_s(uint64_t t0)
{
	return (double)(util_now_ns() - t0) / 1e9;
}

static int bench_xenstore(struct hv *dom0, domid_t domid)
{
	struct xs_handle *h = hv_xs_open(dom0);
	char path[64];
	uint64_t n = 0, t0;
	double s;

	if (!h) {
		fprintf(stderr, "bench_hv: xs_open: %s\n", strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/local/domain/%u/name", domid);
	t0 = util_now_ns();
	do {
		for (int i = 0; i < 256; i++) {
			unsigned len;
			char *v = xs_read(h, XBT_NULL, path, &len);

			if (!v) {
				fprintf(stderr, "bench_hv: xs_read: %s\n", strerror(errno));
				xs_close(h);
				return -1;
			}
			free(v);
		}
		n += 256;
	} while (elapsed_s(t0) < seconds);
	s = elapsed_s(t0);
	xs_close(h);
	printf("xenstore READ round trips:        %10.0f /s\n", (double)n / s);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Block until @port fires on @e; leaves it unmasked again. Returns 0 or -1. */
static int evt_wait(struct hv_evtchn *e, evtchn_port_t port)
{
	struct pollfd p = {.fd = hv_evtchn_fd(e), .events = POLLIN};

	for (;;) {
		evtchn_port_t got;
		int rc;

		while ((rc = hv_evtchn_pending(e, &got)) == 1) {
			if (hv_evtchn_unmask(e, got))
				return -1;
			if (got == port)
				return 0;
		}
		if (rc < 0)
			return -1;
		if (poll(&p, 1, 5000) != 1)
			return -1;
	}
}

/* The guest: offer a port, then answer every event, stamping when it woke. */
static int evt_guest(const char *hv, int wfd, uint64_t *wake)
{
	struct hv_evtchn *e;
	evtchn_port_t port;
	struct hv *g;
	unsigned total = EVT_WARMUP + evt_rounds;

	if (hv_guest_open(&g, hv, "bench") || hv_evtchn_open(g, &e) ||
	    hv_evtchn_alloc_unbound(e, 0, &port))
		return 1;
	if (write(wfd, &port, sizeof(port)) != sizeof(port))
		return 1;
	for (unsigned i = 0; i < total; i++) {
		if (evt_wait(e, port))
			return 1;
		wake[i] = util_now_ns();
		if (hv_evtchn_notify(e, port))
			return 1;
	}
	hv_evtchn_close(e);
	hv_close(g);
	return 0;
}

static int bench_evtchn(struct hv *dom0, domid_t domid)
{
	unsigned total = EVT_WARMUP + evt_rounds;
	uint64_t *send, *wake, *lat;
	char hv[128];
	struct hv_evtchn *e;
	evtchn_port_t rport, port;
	int pfd[2], st, rc = -1;
	pid_t pid;

	/* The guest writes its wake times where we can read them. */
	wake = mmap(NULL, total * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	send = calloc(total, sizeof(uint64_t));
	lat = calloc(evt_rounds, sizeof(uint64_t));
	if (wake == MAP_FAILED || !send || !lat || pipe(pfd))
		goto out;
	snprintf(hv, sizeof(hv), "%s/hv", dir);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		close(pfd[0]);
		_exit(evt_guest(hv, pfd[1], wake));
	}
	close(pfd[1]);
	if (read(pfd[0], &rport, sizeof(rport)) != sizeof(rport) || hv_evtchn_open(dom0, &e)) {
		close(pfd[0]);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		goto out;
	}
	close(pfd[0]);
	if (hv_evtchn_bind_interdomain(e, domid, rport, &port))
		goto out_child;
	for (unsigned i = 0; i < total; i++) {
		send[i] = util_now_ns();
		if (hv_evtchn_notify(e, port) || evt_wait(e, port))
			goto out_child;
	}
	rc = 0;
out_child:
	hv_evtchn_close(e);
	if (rc)
		kill(pid, SIGKILL);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		rc = -1;
	if (!rc) {
		for (unsigned i = 0; i < evt_rounds; i++)
			lat[i] = wake[EVT_WARMUP + i] - send[EVT_WARMUP + i];
		qsort(lat, evt_rounds, sizeof(*lat), cmp_u64);
		printf(
		    "evtchn notify-to-wake latency:    median %.1f us, p99 %.1f us (%u events)\n",
		    (double)lat[evt_rounds / 2] / 1e3, (double)lat[evt_rounds * 99 / 100] / 1e3,
		    evt_rounds);
	}
out:
	if (rc)
		fprintf(stderr, "bench_hv: event-channel ping-pong failed\n");
	free(send);
	free(lat);
	if (wake != MAP_FAILED)
		munmap(wake, total * sizeof(uint64_t));
	return rc;
}

static int bench_map_pages(struct hv_gnttab *g, domid_t domid, const grant_ref_t *refs, uint32_t n)
{
	void *addrs[BATCH];
	int status[BATCH];
	uint64_t it = 0, t0 = util_now_ns();
	double s;

	do {
		for (int i = 0; i < 1024; i++) {
			if (hv_gnttab_map_pages(g, domid, n, refs, HV_PROT_READ | HV_PROT_WRITE,
						addrs, status) ||
			    hv_gnttab_unmap_pages(g, domid, n, refs, HV_PROT_READ | HV_PROT_WRITE,
						  addrs))
				return -1;
		}
		it += 1024;
	} while (elapsed_s(t0) < seconds);
	s = elapsed_s(t0);
	printf("grant map+unmap, map_pages x%-2u:   %10.0f /s  (%.0f pages/s)\n", n, (double)it / s,
	       (double)(it * n) / s);
	return 0;
}

static int bench_map_contig(struct hv_gnttab *g, domid_t domid, const grant_ref_t *refs, uint32_t n)
{
	uint64_t it = 0, t0 = util_now_ns();
	void *addr;
	double s;

	do {
		for (int i = 0; i < 64; i++) {
			if (hv_gnttab_map_contig(g, domid, n, refs, HV_PROT_READ | HV_PROT_WRITE,
						 &addr) ||
			    hv_gnttab_unmap_contig(g, addr, n))
				return -1;
		}
		it += 64;
	} while (elapsed_s(t0) < seconds);
	s = elapsed_s(t0);
	printf("grant map+unmap, map_contig x%-2u:  %10.0f /s  (%.0f pages/s)\n", n, (double)it / s,
	       (double)(it * n) / s);
	return 0;
}

static int bench_grants(struct hv *dom0, domid_t domid)
{
	grant_ref_t refs[BATCH];
	struct hv_gnttab *g;
	struct hv *guest;
	char hv[128];
	uint32_t frame;
	int rc = -1;

	snprintf(hv, sizeof(hv), "%s/hv", dir);
	if (hv_guest_open(&guest, hv, "bench"))
		return -1;
	if (hv_guest_alloc_frames(guest, BATCH, &frame))
		goto out_guest;
	for (int i = 0; i < BATCH; i++)
		if (hv_guest_alloc_gref(guest, &refs[i]) ||
		    hv_guest_grant(guest, refs[i], 0, frame + i, 0))
			goto out_guest;
	if (hv_gnttab_open(dom0, &g))
		goto out_guest;
	if (!bench_map_pages(g, domid, refs, 1) && !bench_map_pages(g, domid, refs, BATCH) &&
	    !bench_map_contig(g, domid, refs, 1) && !bench_map_contig(g, domid, refs, BATCH))
		rc = 0;
	hv_gnttab_close(g);
out_guest:
	hv_close(guest);
	if (rc)
		fprintf(stderr, "bench_hv: grant mapping failed\n");
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"seconds", required_argument, NULL, 's'},
	    {"events", required_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char self[PATH_MAX], hv[128], *slash;
	struct hv *dom0;
	domid_t domid;
	uint64_t v;
	ssize_t n;
	int opt, rc = 1;

	while ((opt = getopt_long(argc, argv, "s:e:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (util_parse_u64(optarg, 1, 60, &v)) {
				fprintf(stderr, "bench_hv: --seconds takes 1..60\n");
				return 2;
			}
			seconds = (double)v;
			break;
		case 'e':
			if (util_parse_u64(optarg, 100, 10000000, &v)) {
				fprintf(stderr, "bench_hv: --events takes 100..10000000\n");
				return 2;
			}
			evt_rounds = (unsigned)v;
			break;
		default:
			fprintf(stderr, "usage: bench_hv [--seconds N] [--events N]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	log_set_level("warn");
	signal(SIGPIPE, SIG_IGN);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return 1;
	self[n] = '\0';
	slash = strrchr(self, '/');
	*slash = '\0';
	if (start_hvsimd(self)) {
		fprintf(stderr, "bench_hv: could not start %s/hvsimd\n", self);
		stop_hvsimd();
		return 1;
	}
	snprintf(hv, sizeof(hv), "%s/hv", dir);
	if (hv_open(&dom0, HV_KIND_SIM, hv) || create_domain("bench", &domid)) {
		fprintf(stderr, "bench_hv: could not set up a domain\n");
		stop_hvsimd();
		return 1;
	}
	printf("bench_hv: hvsimd in %s, one guest domain (d%u), %.0f s per measurement\n", hv,
	       domid, seconds);
	if (!bench_xenstore(dom0, domid) && !bench_evtchn(dom0, domid) &&
	    !bench_grants(dom0, domid))
		rc = 0;
	hv_close(dom0);
	stop_hvsimd();
	return rc;
}
