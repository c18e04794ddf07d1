/*
 * test_vbd.c - vbds served end to end by a real blkbackd (child process) to a raw test
 * frontend: read-only attaches, statistics that match the I/O done, online grow and shrink
 * (sectors and state rewritten, I/O past the end refused, data below kept), a detach while
 * requests are in flight, SIGTERM with a connected frontend and a restart that serves the same
 * data, and two read-only attaches sharing one volume.
 */
#include "blkback/blkback_internal.h"
#include "tests/blkback/test_fixture.h"
#include "tests/blkback/test_front.h"
#include "tests/harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xenstore.h>

#define VOL_BYTES (16ull << 20)

static struct bb_fix F;

static int suite_init(void)
{
	int rc;

	/* This suite's daemon spins briefly before sleeping: the polling path gets exercised. */
	F.poll_us = 50;
	rc = fix_start(&F);

	if (rc < 0) {
		fprintf(stderr, "vbd: cannot start the daemons: %s\n", strerror(-rc));
		return 1;
	}
	if (fix_domain(&F, "v1", NULL) < 0 || fix_domain(&F, "v2", NULL) < 0)
		return 1;
	return 0;
}

static int suite_clean(void)
{
	fix_stop(&F);
	return 0;
}

static json_object *attach(const char *vol, const char *dom, const char *vdev, int ro)
{
	return fix_ctl(&F,
		       "{\"cmd\":\"attach\",\"vol\":\"%s\",\"domain\":\"%s\",\"vdev\":\"%s\","
		       "\"ro\":%s}",
		       vol, dom, vdev, ro ? "true" : "false");
}

static void attach_ok(const char *vol, const char *dom, const char *vdev, int ro)
{
	json_object *a = attach(vol, dom, vdev, ro);

	CU_ASSERT_FATAL(fix_ok(a));
	json_object_put(a);
}

static void detach_ok(const char *dom, const char *vdev)
{
	json_object *a = fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"%s\",\"vdev\":\"%s\"}", dom,
				 vdev);

	CU_ASSERT(fix_ok(a));
	json_object_put(a);
}

static struct tf *connect_front(const char *dom, const char *vdev)
{
	struct tf_opts o = { 0 };
	struct tf *f = NULL;

	int rc = tf_open(&f, F.hv_dir, dom, vdev);

	if (rc < 0)
		fprintf(stderr, "tf_open %s %s: %s\n", dom, vdev, strerror(-rc));
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	return f;
}

static void fill(void *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		((unsigned char *)p)[i] = (unsigned char)(seed * 7 + i * 3 + (i >> 10));
}

static int page_is(struct tf *f, unsigned page, unsigned seed)
{
	unsigned char want[HV_PAGE_SIZE];

	fill(want, sizeof(want), seed);
	return memcmp(tf_page(f, page), want, sizeof(want)) == 0;
}

static int simple_req(struct tf *f, uint8_t op, uint64_t sector, uint64_t nr, uint64_t id)
{
	struct blkif_request *rq = tf_slot(f, 0);
	struct blkif_response rsp;

	if (op == BLKIF_OP_DISCARD) {
		struct blkif_request_discard d = {
			.operation = op, .id = id, .sector_number = sector, .nr_sectors = nr,
		};

		memcpy(rq, &d, sizeof(d));
	} else {
		rq->operation = op;
		rq->id = id;
	}
	tf_queue_req(f, 0);
	tf_push(f, 0);
	if (tf_wait_rsp(f, 0, &rsp) < 0 || rsp.id != id)
		return 99;
	return rsp.status;
}

static void test_read_only_attach(void)
{
	struct tf *f;
	json_object *st;

	CU_ASSERT_EQUAL_FATAL(fix_vol(&F, "ro1", VOL_BYTES), 0);
	attach_ok("ro1", "v1", "xvda", 1);
	f = connect_front("v1", "xvda");
	CU_ASSERT(f->info & VDISK_READONLY);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 0, 0, 2, 1), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 0, 0, 2, 2), BLKIF_RSP_ERROR);
	/* No discard on a read-only disk: not even offered. */
	CU_ASSERT_EQUAL(simple_req(f, BLKIF_OP_DISCARD, 0, 8, 3), BLKIF_RSP_EOPNOTSUPP);
	CU_ASSERT_EQUAL(simple_req(f, BLKIF_OP_FLUSH_DISKCACHE, 0, 0, 4), BLKIF_RSP_OKAY);
	st = fix_stats(&F, "v1", "xvda");
	CU_ASSERT(json_object_get_boolean(json_object_object_get(st, "ro")));
	CU_ASSERT_EQUAL(fix_int(st, "errors"), 2);
	CU_ASSERT_EQUAL(fix_int(st, "rd_req"), 1);
	CU_ASSERT_EQUAL(fix_int(st, "wr_req"), 1);
	json_object_put(st);
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach_ok("v1", "xvda");
}

static void test_stats_match_io(void)
{
	struct tf *f;
	json_object *st;
	int discard;
	char *s;

	CU_ASSERT_EQUAL_FATAL(fix_vol(&F, "st1", VOL_BYTES), 0);
	attach_ok("st1", "v1", "xvdb", 0);
	f = connect_front("v1", "xvdb");
	s = fix_read(&F, "%s/feature-discard", f->be);
	discard = s && strcmp(s, "1") == 0;
	free(s);
	for (unsigned i = 0; i < 3; i++) {
		fill(tf_page(f, i), HV_PAGE_SIZE, i);
		CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, i * 8, i, 1, 10 + i), BLKIF_RSP_OKAY);
	}
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 0, 20, 3, 20), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 8, 30, 1, 21), BLKIF_RSP_OKAY);
	CU_ASSERT(page_is(f, 20, 0) && page_is(f, 21, 1) && page_is(f, 22, 2));
	CU_ASSERT(page_is(f, 30, 1));
	CU_ASSERT_EQUAL(simple_req(f, BLKIF_OP_FLUSH_DISKCACHE, 0, 0, 30), BLKIF_RSP_OKAY);
	if (discard)
		CU_ASSERT_EQUAL(simple_req(f, BLKIF_OP_DISCARD, 64, 8, 31), BLKIF_RSP_OKAY);

	st = fix_stats(&F, "v1", "xvdb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	CU_ASSERT_EQUAL(fix_int(st, "wr_req"), 3);
	CU_ASSERT_EQUAL(fix_int(st, "rd_req"), 2);
	CU_ASSERT_EQUAL(fix_int(st, "f_req"), 1);
	CU_ASSERT_EQUAL(fix_int(st, "ds_req"), discard ? 1 : 0);
	CU_ASSERT_EQUAL(fix_int(st, "wr_sect"), 24);
	CU_ASSERT_EQUAL(fix_int(st, "rd_sect"), 32);
	CU_ASSERT_EQUAL(fix_int(st, "errors"), 0);
	CU_ASSERT_EQUAL(fix_int(st, "inflight"), 0);
	CU_ASSERT_EQUAL(fix_int(st, "oo_req"), 0);
	CU_ASSERT(json_object_get_double(json_object_object_get(st, "rd_lat_p50_us")) > 0);
	CU_ASSERT(json_object_get_double(json_object_object_get(st, "wr_lat_p99_us")) > 0);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(st, "state")),
			       "Connected");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(st, "vol")), "st1");
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(st, "domain")), "v1");
	json_object_put(st);

	/* Counters survive a reconnect (rings are torn down, the vbd is not). */
	CU_ASSERT_EQUAL(tf_close(f), 0);
	st = fix_stats(&F, "v1", "xvdb");
	CU_ASSERT_EQUAL(fix_int(st, "wr_req"), 3);
	json_object_put(st);
	tf_free(f);
	detach_ok("v1", "xvdb");
}

/* Drain pending watch events of @f; returns how many named the backend's state. */
static unsigned state_events(struct tf *f, int wait_ms)
{
	char path[192];
	unsigned n = 0;
	char **vec;

	snprintf(path, sizeof(path), "%s/state", f->be);
	if (wait_ms) {
		struct pollfd p = { .fd = xs_fileno(f->xs), .events = POLLIN };

		poll(&p, 1, wait_ms);
	}
	while ((vec = xs_check_watch(f->xs))) {
		n += strcmp(vec[XS_WATCH_PATH], path) == 0;
		free(vec);
	}
	return n;
}

static uint64_t be_sectors(struct tf *f)
{
	char *s = fix_read(&F, "%s/sectors", f->be);
	uint64_t v = s ? strtoull(s, NULL, 10) : 0;

	free(s);
	return v;
}

static void test_online_resize(void)
{
	struct pool_vol pv;
	struct tf *f;
	json_object *a;
	char path[256];
	struct stat sb;

	CU_ASSERT_EQUAL_FATAL(fix_vol(&F, "rs1", VOL_BYTES), 0);
	attach_ok("rs1", "v1", "xvdc", 0);
	f = connect_front("v1", "xvdc");
	fill(tf_page(f, 0), HV_PAGE_SIZE, 5);
	fill(tf_page(f, 1), HV_PAGE_SIZE, 6);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 0, 0, 1, 1), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 32768 - 8, 1, 1, 2), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 32768, 1, 1, 3), BLKIF_RSP_ERROR);

	/* Grow: sectors and state rewritten together; the frontend's state watch fires. */
	state_events(f, 0);
	a = fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"rs1\",\"size\":%llu}",
		    (unsigned long long)(2 * VOL_BYTES));
	CU_ASSERT(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "old_size"), (int64_t)VOL_BYTES);
	CU_ASSERT_EQUAL(fix_int(a, "size"), (int64_t)(2 * VOL_BYTES));
	json_object_put(a);
	CU_ASSERT_EQUAL(be_sectors(f), 65536);
	CU_ASSERT(state_events(f, 2000) >= 1);
	CU_ASSERT_EQUAL(tf_be_state(f), XenbusStateConnected);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 32768, 1, 1, 4), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 32768, 10, 1, 5), BLKIF_RSP_OKAY);
	CU_ASSERT(page_is(f, 10, 6));
	CU_ASSERT_EQUAL(pool_vol_get(F.pool, "rs1", &pv), 0);
	CU_ASSERT_EQUAL(pv.size_bytes, 2 * VOL_BYTES);

	/* A shrink must be asked for. */
	a = fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"rs1\",\"size\":%llu}",
		    (unsigned long long)(VOL_BYTES / 2));
	CU_ASSERT_FALSE(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "errno"), EPERM);
	json_object_put(a);
	CU_ASSERT_EQUAL(be_sectors(f), 65536);

	a = fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"rs1\",\"size\":%llu,\"shrink\":true}",
		    (unsigned long long)(VOL_BYTES / 2));
	CU_ASSERT(fix_ok(a));
	json_object_put(a);
	CU_ASSERT_EQUAL(be_sectors(f), 16384);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 16384, 10, 1, 6), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 16380, 1, 1, 7), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 0, 11, 1, 8), BLKIF_RSP_OKAY);
	CU_ASSERT(page_is(f, 11, 5)); /* data below the new end is untouched */
	snprintf(path, sizeof(path), "%s/vols/rs1.img", F.pool);
	CU_ASSERT_EQUAL(stat(path, &sb), 0);
	CU_ASSERT_EQUAL((uint64_t)sb.st_size, VOL_BYTES / 2);
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach_ok("v1", "xvdc");
}

static void test_detach_during_io(void)
{
	struct blkif_response rsp;
	struct tf *f;
	json_object *a;
	unsigned got = 0;
	int answered[16] = { 0 };
	int fd;
	char *s;

	CU_ASSERT_EQUAL_FATAL(fix_vol(&F, "dt1", VOL_BYTES), 0);
	attach_ok("dt1", "v1", "xvdd", 0);
	f = connect_front("v1", "xvdd");
	for (unsigned i = 0; i < 16; i++) {
		struct blkif_request *rq = tf_slot(f, 0);

		fill(tf_page(f, i), HV_PAGE_SIZE, 40 + i);
		rq->operation = BLKIF_OP_WRITE;
		rq->nr_segments = 1;
		rq->id = 100 + i;
		rq->sector_number = (uint64_t)i * 8;
		rq->seg[0].gref = tf_gref(f, i);
		rq->seg[0].last_sect = 7;
		tf_queue_req(f, 0);
	}
	tf_push(f, 0);
	fd = fix_ctl_send(&F, "{\"cmd\":\"detach\",\"domain\":\"v1\",\"vdev\":\"xvdd\"}");
	CU_ASSERT_FATAL(fd >= 0);
	/* The backend answers what it took before it says Closing. */
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateClosing), 0);
	while (f->q[0].fr.rsp_cons != f->q[0].fr.sring->rsp_prod && got < 16) {
		CU_ASSERT_EQUAL(tf_wait_rsp(f, 0, &rsp), 0);
		CU_ASSERT_EQUAL(rsp.status, BLKIF_RSP_OKAY);
		CU_ASSERT_FATAL(rsp.id >= 100 && rsp.id < 116);
		answered[rsp.id - 100] = 1;
		got++;
	}
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateClosed), 0);
	a = fix_ctl_recv(fd);
	CU_ASSERT(fix_ok(a));
	json_object_put(a);
	s = fix_read(&F, "%s", f->be);
	CU_ASSERT_PTR_NULL(s);
	free(s);
	s = fix_read(&F, "%s", f->fe);
	CU_ASSERT_PTR_NULL(s);
	free(s);
	tf_free(f);

	/* Reattach works, and the answered writes are there. */
	attach_ok("dt1", "v1", "xvdd", 0);
	f = connect_front("v1", "xvdd");
	for (unsigned i = 0; i < 16; i++) {
		if (!answered[i])
			continue; /* never taken off the ring: a frontend re-issues it */
		CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, (uint64_t)i * 8, 32, 1, 200 + i),
				BLKIF_RSP_OKAY);
		CU_ASSERT(page_is(f, 32, 40 + i));
	}
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach_ok("v1", "xvdd");
}

static void test_sigterm_then_restart(void)
{
	struct tf *f;
	char *s;

	CU_ASSERT_EQUAL_FATAL(fix_vol(&F, "tm1", VOL_BYTES), 0);
	attach_ok("tm1", "v1", "xvde", 0);
	f = connect_front("v1", "xvde");
	for (unsigned i = 0; i < 4; i++)
		fill(tf_page(f, i), HV_PAGE_SIZE, 70 + i);
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_WRITE, 800, 0, 4, 1), BLKIF_RSP_OKAY);

	/* SIGTERM: the daemon closes the frontend with the handshake, then exits 0. */
	CU_ASSERT_EQUAL(kill(F.bb_pid, SIGTERM), 0);
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateClosing), 0);
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateClosed), 0);
	CU_ASSERT_EQUAL(tf_wait_be(f, XenbusStateClosed), 0);
	CU_ASSERT_EQUAL(fix_stop_bb(&F), 0);
	s = fix_read(&F, "%s/params", f->be); /* the toolstack's nodes stay */
	CU_ASSERT(s && strcmp(s, "tm1") == 0);
	free(s);
	tf_rings_down(f);

	/* A new daemon serves the same vbd; the frontend reconnects and finds its data. */
	CU_ASSERT_EQUAL_FATAL(fix_start_bb(&F), 0);
	CU_ASSERT_EQUAL(tf_set_state(f, XenbusStateInitialising), 0);
	{
		struct tf_opts o = { 0 };

		CU_ASSERT_EQUAL_FATAL(tf_connect(f, &o), 0);
	}
	CU_ASSERT_EQUAL(tf_rw(f, 0, BLKIF_OP_READ, 800, 10, 4, 2), BLKIF_RSP_OKAY);
	for (unsigned i = 0; i < 4; i++)
		CU_ASSERT(page_is(f, 10 + i, 70 + i));
	CU_ASSERT_EQUAL(tf_close(f), 0);
	tf_free(f);
	detach_ok("v1", "xvde");
}

static void test_shared_read_only_volume(void)
{
	struct tf *f1, *f2;
	json_object *a;
	const char *err;

	CU_ASSERT_EQUAL_FATAL(fix_vol(&F, "sh1", VOL_BYTES), 0);
	attach_ok("sh1", "v1", "xvdf", 1);
	attach_ok("sh1", "v2", "xvda", 1);
	a = attach("sh1", "v2", "xvdb", 0);
	CU_ASSERT_FALSE(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "errno"), EBUSY);
	err = json_object_get_string(json_object_object_get(a, "error"));
	CU_ASSERT(err && strstr(err, "sh1") && !strchr(err, '\n'));
	json_object_put(a);
	f1 = connect_front("v1", "xvdf");
	f2 = connect_front("v2", "xvda");
	CU_ASSERT_EQUAL(tf_rw(f1, 0, BLKIF_OP_READ, 0, 0, 4, 1), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_rw(f2, 0, BLKIF_OP_READ, 0, 0, 4, 1), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_close(f1), 0);
	tf_free(f1);
	detach_ok("v1", "xvdf");
	/* The other reader still has its disk. */
	CU_ASSERT_EQUAL(tf_rw(f2, 0, BLKIF_OP_READ, 8, 4, 4, 2), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(tf_close(f2), 0);
	tf_free(f2);
	detach_ok("v2", "xvda");
}

static CU_TestInfo tests[] = {
	{ "read_only_attach", test_read_only_attach },
	{ "stats_match_io", test_stats_match_io },
	{ "online_resize", test_online_resize },
	{ "detach_during_io", test_detach_during_io },
	{ "sigterm_then_restart", test_sigterm_then_restart },
	{ "shared_read_only_volume", test_shared_read_only_volume },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("vbd", suite_init, suite_clean, tests)
