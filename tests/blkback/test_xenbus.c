/*
 * test_xenbus.c - the XenbusState machine against a real hvsimd and blkbackd, with a raw test
 * frontend: features published at InitWait, connect with every ring shape, close and reconnect,
 * a frontend that skips states or writes no protocol, every refused transport key (with Xen's
 * error node), a hostile req_prod disconnecting one vbd while another guest carries on, and a
 * destroyed domain cleaned up. Also Xen's vdev numbering.
 */
#include "blkback/blkback_internal.h"
#include "tests/blkback/test_fixture.h"
#include "tests/blkback/test_front.h"
#include "tests/harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VOL_BYTES (16ull << 20)

static struct bb_fix F;
static domid_t D1, D2;

static int suite_init(void)
{
	int rc = fix_start(&F);

	if (rc < 0) {
		fprintf(stderr, "xenbus: cannot start the daemons: %s\n", strerror(-rc));
		return 1;
	}
	if (fix_domain(&F, "x1", &D1) < 0 || fix_domain(&F, "x2", &D2) < 0)
		return 1;
	if (fix_vol(&F, "xv1", VOL_BYTES) < 0 || fix_vol(&F, "xv2", VOL_BYTES) < 0)
		return 1;
	return 0;
}

static int suite_clean(void)
{
	fix_stop(&F);
	return 0;
}

static void attach(const char *vol, const char *dom, const char *vdev)
{
	json_object *a = fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"%s\",\"domain\":\"%s\","
				     "\"vdev\":\"%s\"}",
				 vol, dom, vdev);

	CU_ASSERT_FATAL(fix_ok(a));
	json_object_put(a);
}

/* Detach a vbd whose frontend is closed or gone (answers without waiting). */
static void detach(const char *dom, const char *vdev)
{
	json_object *a = fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"%s\",\"vdev\":\"%s\"}", dom,
				 vdev);

	CU_ASSERT(fix_ok(a));
	json_object_put(a);
}

static void fill(void *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		((unsigned char *)p)[i] = (unsigned char)(seed + i * 13 + (i >> 8));
}

/* Write pages 0..n-1 at @sector, read them back into pages 16.., compare. */
static void io_roundtrip(struct tf *f, unsigned qi, uint64_t sector, unsigned n, unsigned seed)
{
	for (unsigned i = 0; i < n; i++) {
		fill(tf_page(f, i), HV_PAGE_SIZE, seed + i);
		memset(tf_page(f, 16 + i), 0, HV_PAGE_SIZE);
	}
	CU_ASSERT_EQUAL(tf_rw(f, qi, BLKIF_OP_WRITE, sector, 0, n, seed), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f, qi, BLKIF_OP_READ, sector, 16, n, seed + 1), BLKIF_RSP_OKAY);
	for (unsigned i = 0; i < n; i++)
		CU_ASSERT_EQUAL(memcmp(tf_page(f, i), tf_page(f, 16 + i), HV_PAGE_SIZE), 0);
}

static void test_vdev_numbers(void)
{
	static const struct {
		const char *vdev;
		uint32_t devid;
	} ok[] = {
		{ "xvda", 51712 },
		{ "xvdb", 51728 },
		{ "xvdp", (202u << 8) | (15u << 4) },
		{ "xvda1", 51713 },
		{ "xvdq", (1u << 28) | (16u << 8) },
		{ "xvdz", (1u << 28) | (25u << 8) },
		{ "xvdaa", (1u << 28) | (26u << 8) },
		{ "xvdba", (1u << 28) | (52u << 8) },
		{ "xvdaaa", (1u << 28) | (702u << 8) },
		{ "xvdq3", (1u << 28) | (16u << 8) | 3 },
		{ "xvda16", (1u << 28) | 16 },
	};
	static const char *const bad[] = { "", "xvd", "hda", "sda", "xvdA", "xvda0", "xvda256",
					   "xvd1", "xvda-1", "xvdaaaaa", " xvda", "xvda " };
	uint32_t devid;
	char buf[32];

	for (unsigned i = 0; i < ARRAY_SIZE(ok); i++) {
		CU_ASSERT_EQUAL(bb_vdev_to_devid(ok[i].vdev, &devid), 0);
		CU_ASSERT_EQUAL(devid, ok[i].devid);
		bb_devid_to_vdev(ok[i].devid, buf, sizeof(buf));
		CU_ASSERT_STRING_EQUAL(buf, ok[i].vdev);
	}
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++)
		CU_ASSERT_EQUAL(bb_vdev_to_devid(bad[i], &devid), -EINVAL);
	bb_devid_to_vdev(12345, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "d12345");
	CU_ASSERT_STRING_EQUAL(bb_xenbus_state_name(XenbusStateInitWait), "InitWait");
	CU_ASSERT_STRING_EQUAL(bb_xenbus_state_name(XenbusStateConnected), "Connected");
	CU_ASSERT_STRING_EQUAL(bb_xenbus_state_name(42), "Invalid");
}

static void test_handshake_close_reconnect(void)
{
	struct tf_opts o = { 0 };
	struct tf *f = NULL;
	char *s;

	attach("xv1", "x1", "xvda");
	CU_ASSERT_EQUAL_FATAL(tf_open(&f, F.hv_dir, "x1", "xvda"), 0);
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateInitWait), 0);
	/* What the backend offers before the frontend commits to anything. */
	s = fix_read(&F, "%s/feature-flush-cache", f->be);
	CU_ASSERT(s && strcmp(s, "1") == 0);
	free(s);
	s = fix_read(&F, "%s/feature-barrier", f->be);
	CU_ASSERT(s && strcmp(s, "1") == 0);
	free(s);
	s = fix_read(&F, "%s/max-ring-page-order", f->be);
	CU_ASSERT(s && strcmp(s, "4") == 0);
	free(s);
	s = fix_read(&F, "%s/multi-queue-max-queues", f->be);
	CU_ASSERT(s && strcmp(s, "4") == 0);
	free(s);
	s = fix_read(&F, "%s/feature-discard", f->be);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	s = fix_read(&F, "%s/feature-persistent", f->be);
	CU_ASSERT(s && strcmp(s, "1") == 0);
	free(s);
	s = fix_read(&F, "%s/feature-max-indirect-segments", f->be);
	CU_ASSERT(s && strcmp(s, "256") == 0);
	free(s);

	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	CU_ASSERT_EQUAL(f->sectors, VOL_BYTES / 512);
	CU_ASSERT_EQUAL(f->sector_size, 512);
	CU_ASSERT_EQUAL(f->info, 0);
	s = fix_read(&F, "%s/physical-sector-size", f->be);
	CU_ASSERT_PTR_NOT_NULL(s);
	free(s);
	io_roundtrip(f, 0, 0, 3, 10);

	/* Close, then come back: Initialising takes the backend to InitWait again. */
	CU_ASSERT_EQUAL(tf_close(f), 0);
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateInitialising), 0);
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateInitWait), 0);
	o.ring_order = 2;
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	io_roundtrip(f, 0, 64, 11, 20);
	/* The data of the first connection is still there. */
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 0, 30, 3, 99), BLKIF_RSP_OKAY);
	for (unsigned i = 0; i < 3; i++) {
		unsigned char want[HV_PAGE_SIZE];

		fill(want, sizeof(want), 10 + i);
		CU_ASSERT_EQUAL(memcmp(tf_page(f, 30 + i), want, sizeof(want)), 0);
	}
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach("x1", "xvda");
	s = fix_read(&F, "/local/domain/0/backend/vbd/%u/51712", D1);
	CU_ASSERT_PTR_NULL(s);
	free(s);
}

static void test_skip_states_no_protocol(void)
{
	struct tf_opts o = { .skip_initialised = 1, .protocol = "", .write_order = 1 };
	struct tf *f = NULL;

	attach("xv1", "x1", "xvdb");
	CU_ASSERT_EQUAL_FATAL(tf_open(&f, F.hv_dir, "x1", "xvdb"), 0);
	/* Initialising -> Connected directly, no protocol key, ring-ref0 with order 0. */
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	io_roundtrip(f, 0, 128, 2, 40);
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach("x1", "xvdb");
}

static void test_multi_queue(void)
{
	struct tf_opts o = { .queues = 3, .ring_order = 1 };
	struct tf *f = NULL;
	json_object *st;

	attach("xv1", "x1", "xvdc");
	CU_ASSERT_EQUAL_FATAL(tf_open(&f, F.hv_dir, "x1", "xvdc"), 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	for (unsigned q = 0; q < 3; q++)
		io_roundtrip(f, q, 256 + q * 64, 4, 50 + q * 10);
	st = fix_stats(&F, "x1", "xvdc");
	CU_ASSERT_EQUAL(fix_int(st, "wr_req"), 3);
	CU_ASSERT_EQUAL(fix_int(st, "rd_req"), 3);
	CU_ASSERT_EQUAL(fix_int(st, "wr_sect"), 3 * 32);
	json_object_put(st);
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach("x1", "xvdc");
}

/* A refused connect: backend Closing, Xen's error node names the reason; then recover. */
static void refused(struct tf *f, const struct tf_opts *o, const char *reason)
{
	char *err;

	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateInitWait), 0);
	CU_ASSERT_EQUAL(tf_connect(f, o), -ECONNREFUSED);
	CU_ASSERT_EQUAL(tf_be_state(f), XenbusStateClosing);
	err = fix_read(&F, "/local/domain/0/error/backend/vbd/%u/%u/error", f->domid, f->devid);
	CU_ASSERT_PTR_NOT_NULL(err);
	if (err && !strstr(err, reason)) {
		fprintf(stderr, "error node: '%s', expected '%s'\n", err, reason);
		CU_FAIL("error node does not name the reason");
	}
	free(err);
	/* Frontend closes, and starts over. */
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateClosed), 0);
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateClosed), 0);
	tf_rings_down(f);
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateInitialising), 0);
}

static void test_refused_transports(void)
{
	struct tf_opts o32 = { .protocol = "x86_32-abi" };
	struct tf_opts oarm = { .protocol = "arm-abi" };
	struct tf_opts oref = { .ring_ref = "abc" };
	struct tf_opts oref2 = { .ring_ref = "4294967296" };
	struct tf_opts oref3 = { .ring_ref = "16383" }; /* not granted */
	struct tf_opts oord = { .order_str = "5" };
	struct tf_opts oord2 = { .order_str = "-1" };
	struct tf_opts onq = { .queues = 4 };
	struct tf_opts good = { 0 };
	struct tf *f = NULL;

	attach("xv1", "x1", "xvdd");
	CU_ASSERT_EQUAL_FATAL(tf_open(&f, F.hv_dir, "x1", "xvdd"), 0);
	refused(f, &o32, "x86_32-abi");
	refused(f, &oarm, "unknown frontend protocol");
	refused(f, &oref, "ring-ref");
	refused(f, &oref2, "ring-ref");
	refused(f, &oref3, "map");
	refused(f, &oord, "ring-page-order");
	refused(f, &oord2, "ring-page-order");
	/* 4 queues are within multi-queue-max-queues (4): fine. */
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateInitWait), 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &onq), 0);
	io_roundtrip(f, 3, 512, 1, 70);
	CU_ASSERT_EQUAL(tf_close(f), 0);
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateInitialising), 0);
	/* And after all that, a plain frontend still gets its disk. */
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateInitWait), 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &good), 0);
	io_roundtrip(f, 0, 520, 2, 80);
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach("x1", "xvdd");
}

static void test_hostile_ring_disconnects_one_vbd(void)
{
	struct tf_opts o = { 0 };
	struct tf *bad = NULL, *good = NULL;
	blkif_sring_t *s;
	char *err;
	json_object *a;

	attach("xv1", "x1", "xvde");
	attach("xv2", "x2", "xvda");
	CU_ASSERT_EQUAL_FATAL(tf_open(&bad, F.hv_dir, "x1", "xvde"), 0);
	CU_ASSERT_EQUAL_FATAL(tf_open(&good, F.hv_dir, "x2", "xvda"), 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(bad, &o), 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(good, &o), 0);

	/* 40 requests claimed on a 32-slot ring. */
	s = bad->q[0].fr.sring;
	__atomic_store_n(&s->req_prod, s->rsp_prod + 40, __ATOMIC_RELEASE);
	hv_evtchn_notify(bad->q[0].evt, bad->q[0].port);
	CU_ASSERT_EQUAL(tf_wait_be(bad, XenbusStateClosing), 0);
	err = fix_read(&F, "/local/domain/0/error/backend/vbd/%u/%u/error", bad->domid,
		       bad->devid);
	CU_ASSERT(err && strstr(err, "ring protocol"));
	free(err);

	/* The other guest and the daemon carry on. */
	io_roundtrip(good, 0, 0, 5, 90);
	a = fix_ctl(&F, "{\"cmd\":\"ping\"}");
	CU_ASSERT(fix_ok(a));
	json_object_put(a);

	tf_set_state(bad, XenbusStateClosed);
	CU_ASSERT_EQUAL(tf_wait_be(bad, XenbusStateClosed), 0);
	tf_free(bad);
	CU_ASSERT_EQUAL(tf_close(good), 0);
	tf_free(good);
	detach("x1", "xvde");
	detach("x2", "xvda");
}

static void test_destroyed_domain_cleaned_up(void)
{
	struct tf_opts o = { 0 };
	struct tf *f = NULL;
	domid_t d3;
	char *s = NULL;

	CU_ASSERT_EQUAL_FATAL(fix_domain(&F, "x3", &d3), 0);
	attach("xv2", "x3", "xvda");
	CU_ASSERT_EQUAL_FATAL(tf_open(&f, F.hv_dir, "x3", "xvda"), 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	io_roundtrip(f, 0, 8, 1, 100);
	tf_free(f); /* the guest dies without closing */
	CU_ASSERT_EQUAL(fix_destroy(&F, d3), 0);
	/* The backend notices and removes the vbd as a toolstack would (bounded wait). */
	for (int i = 0; i < 5000; i++) {
		struct timespec ts = { 0, 1000000 };

		s = fix_read(&F, "/local/domain/0/backend/vbd/%u/51712", d3);
		if (!s)
			break;
		free(s);
		nanosleep(&ts, NULL);
	}
	CU_ASSERT_PTR_NULL(s);
	free(s);
}

/* Last: SIGTERM gives an orderly exit (status 0) with every vbd detached. */
static void test_daemon_exits_cleanly(void)
{
	CU_ASSERT_EQUAL(fix_stop_bb(&F), 0);
}

static CU_TestInfo tests[] = {
	{ "vdev_numbers", test_vdev_numbers },
	{ "handshake_close_reconnect", test_handshake_close_reconnect },
	{ "skip_states_no_protocol", test_skip_states_no_protocol },
	{ "multi_queue", test_multi_queue },
	{ "refused_transports", test_refused_transports },
	{ "hostile_ring_disconnects_one_vbd", test_hostile_ring_disconnects_one_vbd },
	{ "destroyed_domain_cleaned_up", test_destroyed_domain_cleaned_up },
	{ "daemon_exits_cleanly", test_daemon_exits_cleanly },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("xenbus", suite_init, suite_clean, tests)
