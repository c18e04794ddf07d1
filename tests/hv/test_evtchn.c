/*
 * test_evtchn.c - event channels through hv.h on a running hvsimd: ping-pong between a guest
 * process and a dom0 process, masking (a fired port stays masked until unmask, and an event
 * sent meanwhile is delivered on unmask), sends before binding, peer death and rebinding,
 * and the errors of each call.
 */
#include "hv/hv.h"
#include "tests/harness.h"
#include "tests/hv/test_hvsim.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static struct hvsim_fix fix;
static domid_t domid;

static int suite_init(void)
{
	if (fix_start(&fix))
		return 1;
	return fix_create(&fix, "evguest", 16ull << 20, &domid) ? 1 : 0;
}

static int suite_clean(void)
{
	return fix_stop(&fix) == 0 ? 0 : 1;
}

/* Wait up to 5 s for @port to fire on @e; leaves it masked. 1 fired, 0 not. */
static int wait_port(struct hv_evtchn *e, evtchn_port_t port)
{
	for (int i = 0; i < 50; i++) {
		evtchn_port_t p;
		int rc;

		while ((rc = hv_evtchn_pending(e, &p)) == 1)
			if (p == port)
				return 1;
		if (rc < 0)
			return 0;
		fix_wait_readable(hv_evtchn_fd(e), 100);
	}
	return 0;
}

/* Nothing pending right now (after handling whatever notices are queued). */
static int nothing_pending(struct hv_evtchn *e)
{
	evtchn_port_t p;

	return hv_evtchn_pending(e, &p) == 0;
}

#define ROUNDS 2000

/* The guest process: allocate a port for dom0, publish it, then answer every ping. */
static int guest_side(int wfd)
{
	struct hv_evtchn *e;
	evtchn_port_t port;
	struct hv *hv;

	if (hv_guest_open(&hv, fix.dir, "evguest") || hv_evtchn_open(hv, &e))
		return 10;
	if (hv_evtchn_alloc_unbound(e, 0, &port))
		return 11;
	if (write(wfd, &port, sizeof(port)) != sizeof(port))
		return 12;
	for (int i = 0; i < ROUNDS; i++) {
		if (!wait_port(e, port))
			return 13;
		if (hv_evtchn_unmask(e, port) || hv_evtchn_notify(e, port))
			return 14;
	}
	hv_evtchn_close(e);
	hv_close(hv);
	return 0;
}

static void test_ping_pong(void)
{
	struct hv_evtchn *e;
	evtchn_port_t rport, port;
	struct hv *hv;
	int fds[2], st, i;
	pid_t pid;

	CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		_exit(guest_side(fds[1]));
	}
	close(fds[1]);
	CU_ASSERT_EQUAL_FATAL(read(fds[0], &rport, sizeof(rport)), sizeof(rport));
	close(fds[0]);
	CU_ASSERT_EQUAL_FATAL(hv_open(&hv, HV_KIND_SIM, fix.dir), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_open(hv, &e), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(e, domid, rport, &port), 0);
	for (i = 0; i < ROUNDS; i++) {
		if (hv_evtchn_notify(e, port) || !wait_port(e, port) || hv_evtchn_unmask(e, port))
			break;
	}
	CU_ASSERT_EQUAL(i, ROUNDS);
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	hv_evtchn_close(e);
	hv_close(hv);
}

struct pair {
	struct hv *guest, *dom0;
	struct hv_evtchn *ge, *de;
	evtchn_port_t gport, dport;
};

static void pair_open(struct pair *p)
{
	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&p->guest, fix.dir, "evguest"), 0);
	CU_ASSERT_EQUAL_FATAL(hv_open(&p->dom0, HV_KIND_SIM, fix.dir), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_open(p->guest, &p->ge), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_open(p->dom0, &p->de), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_alloc_unbound(p->ge, 0, &p->gport), 0);
}

static void pair_close(struct pair *p)
{
	hv_evtchn_close(p->ge);
	hv_evtchn_close(p->de);
	hv_close(p->dom0);
	hv_close(p->guest);
}

static void test_masking(void)
{
	struct pair p;

	pair_open(&p);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport, &p.dport), 0);
	/* Several sends before the receiver looks: one pending event. */
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(hv_evtchn_notify(p.ge, p.gport), 0);
	CU_ASSERT(wait_port(p.de, p.dport));
	CU_ASSERT(nothing_pending(p.de));
	/* Sent while masked: held, not delivered... */
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.ge, p.gport), 0);
	CU_ASSERT_FALSE(fix_wait_readable(hv_evtchn_fd(p.de), 50));
	CU_ASSERT(nothing_pending(p.de));
	/* ...until unmask. */
	CU_ASSERT_EQUAL(hv_evtchn_unmask(p.de, p.dport), 0);
	CU_ASSERT(wait_port(p.de, p.dport));
	CU_ASSERT_EQUAL(hv_evtchn_unmask(p.de, p.dport), 0);
	CU_ASSERT(nothing_pending(p.de));
	/* And the other way round. */
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, p.dport), 0);
	CU_ASSERT(wait_port(p.ge, p.gport));
	CU_ASSERT_EQUAL(hv_evtchn_unmask(p.ge, p.gport), 0);
	CU_ASSERT(nothing_pending(p.ge));
	pair_close(&p);
}

static void test_send_before_bind(void)
{
	struct pair p;

	pair_open(&p);
	/* Nobody bound yet: the send is dropped, not an error. */
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.ge, p.gport), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport, &p.dport), 0);
	CU_ASSERT(nothing_pending(p.de));
	/* Bound now, and the guest learns its peer without rebinding. */
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.ge, p.gport), 0);
	CU_ASSERT(wait_port(p.de, p.dport));
	pair_close(&p);
}

static void test_peer_death_and_rebind(void)
{
	struct pair p;
	evtchn_port_t g2;

	pair_open(&p);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport, &p.dport), 0);
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, p.dport), 0);
	CU_ASSERT(wait_port(p.ge, p.gport));
	/* The guest closes its port: dom0 hears of it (its fd becomes readable)... */
	CU_ASSERT_EQUAL(hv_evtchn_unbind(p.ge, p.gport), 0);
	CU_ASSERT(fix_wait_readable(hv_evtchn_fd(p.de), 5000));
	CU_ASSERT(nothing_pending(p.de));
	/* ...and its sends are dropped. */
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, p.dport), 0);
	CU_ASSERT_EQUAL(hv_evtchn_unmask(p.ge, p.gport), -EINVAL);
	/* dom0's port is unbound again: the guest binds to it and both directions work. */
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(p.ge, 0, p.dport, &g2), 0);
	CU_ASSERT(fix_wait_readable(hv_evtchn_fd(p.de), 5000));
	CU_ASSERT(nothing_pending(p.de));
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, p.dport), 0);
	CU_ASSERT(wait_port(p.ge, g2));
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.ge, g2), 0);
	CU_ASSERT(wait_port(p.de, p.dport));
	/* The guest's whole handle goes: its ports go with it. */
	hv_evtchn_close(p.ge);
	p.ge = NULL;
	CU_ASSERT(fix_wait_readable(hv_evtchn_fd(p.de), 5000));
	CU_ASSERT(nothing_pending(p.de));
	CU_ASSERT_EQUAL(hv_evtchn_unmask(p.de, p.dport), 0);
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, p.dport), 0);
	CU_ASSERT(nothing_pending(p.de));
	pair_close(&p);
}

static void test_domain_destroy(void)
{
	struct hv *guest, *dom0;
	struct hv_evtchn *ge, *de, *ge2;
	evtchn_port_t gport, dport, x;
	domid_t id;

	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "evdoomed", 16ull << 20, &id), 0);
	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&guest, fix.dir, "evdoomed"), 0);
	CU_ASSERT_EQUAL_FATAL(hv_open(&dom0, HV_KIND_SIM, fix.dir), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_open(guest, &ge), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_open(dom0, &de), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_alloc_unbound(ge, 0, &gport), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(de, id, gport, &dport), 0);
	CU_ASSERT_EQUAL(fix_destroy(&fix, id), 0);
	/* dom0's side: told, and its sends are dropped. */
	CU_ASSERT(fix_wait_readable(hv_evtchn_fd(de), 5000));
	CU_ASSERT(nothing_pending(de));
	CU_ASSERT_EQUAL(hv_evtchn_notify(de, dport), 0);
	CU_ASSERT_EQUAL(hv_evtchn_bind_interdomain(de, id, gport, &x), -ESRCH);
	CU_ASSERT_EQUAL(hv_evtchn_alloc_unbound(de, id, &x), -ESRCH);
	/* The guest's connections are gone with the domain. */
	CU_ASSERT_EQUAL(hv_evtchn_alloc_unbound(ge, 0, &x), -EPIPE);
	CU_ASSERT_NOT_EQUAL(hv_evtchn_open(guest, &ge2), 0);
	hv_evtchn_close(ge);
	hv_evtchn_close(de);
	hv_close(guest);
	hv_close(dom0);
}

static void test_errors(void)
{
	struct pair p;
	evtchn_port_t x;

	pair_open(&p);
	/* Binding needs an unbound port offered to us. */
	CU_ASSERT_EQUAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport + 100, &x), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_bind_interdomain(p.de, domid, 0, &x), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_bind_interdomain(p.de, 999, 1, &x), -ESRCH);
	CU_ASSERT_EQUAL(hv_evtchn_alloc_unbound(p.de, 999, &x), -ESRCH);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport, &p.dport), 0);
	/* Already bound: not unbound any more. */
	CU_ASSERT_EQUAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport, &x), -EINVAL);
	/* Ports this handle does not own. */
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, p.dport + 1), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_unmask(p.de, 0), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_unbind(p.de, 4096), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.de, UINT32_MAX), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_unbind(p.de, p.dport), 0);
	CU_ASSERT_EQUAL(hv_evtchn_unbind(p.de, p.dport), -EINVAL);
	pair_close(&p);
}

/* Two handles of one domain: each owns its ports, and each sees only its own events. */
static void test_handles_are_separate(void)
{
	struct pair p;
	struct hv_evtchn *de2;
	evtchn_port_t g2, d2;

	pair_open(&p);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_open(p.dom0, &de2), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_alloc_unbound(p.ge, 0, &g2), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(p.de, domid, p.gport, &p.dport), 0);
	CU_ASSERT_EQUAL_FATAL(hv_evtchn_bind_interdomain(de2, domid, g2, &d2), 0);
	CU_ASSERT_NOT_EQUAL(p.dport, d2);
	CU_ASSERT_EQUAL(hv_evtchn_unbind(de2, p.dport), -EINVAL);
	CU_ASSERT_EQUAL(hv_evtchn_notify(p.ge, g2), 0);
	CU_ASSERT(wait_port(de2, d2));
	CU_ASSERT(nothing_pending(p.de));
	hv_evtchn_close(de2);
	pair_close(&p);
}

static CU_TestInfo tests[] = {
    {"ping_pong", test_ping_pong},
    {"masking", test_masking},
    {"send_before_bind", test_send_before_bind},
    {"peer_death_and_rebind", test_peer_death_and_rebind},
    {"domain_destroy", test_domain_destroy},
    {"errors", test_errors},
    {"handles_are_separate", test_handles_are_separate},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("evtchn", suite_init, suite_clean, tests)
