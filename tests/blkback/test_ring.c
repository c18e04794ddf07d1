/*
 * test_ring.c - the ring's request path on a ring in plain memory: a test frontend fills the
 * shared page, the grant seam maps "grant refs" to pages of a local buffer, and the real raw
 * target serves a file in the test's temp dir. Covers data integrity, every kind of bad request
 * answered while the ring carries on, notification suppression, a hostile req_prod,
 * backpressure from a small target queue, flush/barrier/discard, and a shrink seen per request;
 * and the QoS gate: requests the scheduler holds back wait on the ring and go when it lets them,
 * responses held until a simulated device completes them.
 */
#include "blkback/blkback_internal.h"
#include "qos/simdev.h"
#include "tests/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T_DISK_SECT 2048u     /* 1 MiB */
#define T_GUEST_PAGES 64u
#define T_RO_BASE 1000u       /* grefs T_RO_BASE + i: page i granted read-only */

struct t_env {
	char path[256];
	void *guest;                /* T_GUEST_PAGES pages the "grants" point at */
	void *ring_page;
	blkif_front_ring_t fr;
	struct bb_vbd vbd;
	struct bb_ring r;
	struct target *t;
	unsigned maps, unmaps, notifies;
};

static struct t_env *E;

/* Responses taken off the ring, looked up by id (see reap()). */
#define T_MAX_RSP 64
static struct {
	uint64_t id;
	int16_t status;
	int taken;
} rsps[T_MAX_RSP];
static unsigned nr_rsps;

static int t_map(struct bb_ring *r, uint32_t count, const grant_ref_t *refs, unsigned prot,
		 void **addrs, int *status)
{
	int failed = 0;

	(void)r;
	for (uint32_t i = 0; i < count; i++) {
		grant_ref_t ref = refs[i];
		int ro = ref >= T_RO_BASE;

		if (ro)
			ref -= T_RO_BASE;
		if (ref >= T_GUEST_PAGES) {
			status[i] = -EPERM; /* not granted */
		} else if (ro && (prot & HV_PROT_WRITE)) {
			status[i] = -EROFS;
		} else {
			status[i] = 0;
			addrs[i] = (char *)E->guest + (size_t)ref * HV_PAGE_SIZE;
			E->maps++;
			continue;
		}
		addrs[i] = NULL;
		failed++;
	}
	return failed;
}

static void t_unmap(struct bb_ring *r, uint32_t count, const grant_ref_t *refs, unsigned prot,
		    void *const *addrs)
{
	(void)r;
	(void)refs;
	(void)prot;
	(void)addrs;
	E->unmaps += count;
}

static void t_notify(struct bb_ring *r)
{
	(void)r;
	E->notifies++;
}

static const struct bb_ring_ops t_ops = { t_map, t_unmap, t_notify };

/*
 * Fresh ring, vbd, file and target; @queue_depth 0 means one per ring slot. @max_segs > 11
 * serves INDIRECT; @persistent keeps up to @pg_max grants mapped.
 */
static void env_setup_ex(uint32_t queue_depth, uint32_t max_segs, int persistent,
			 uint32_t pg_max)
{
	struct target_open_opts o = { .engine = TARGET_ENGINE_IO_URING, .no_direct = 1 };
	struct target_info info;
	int fd;

	E = calloc(1, sizeof(*E));
	CU_ASSERT_PTR_NOT_NULL_FATAL(E);
	snprintf(E->path, sizeof(E->path), "%s/ring-vol.img", harness_tmpdir());
	fd = open(E->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(ftruncate(fd, (off_t)T_DISK_SECT * 512) == 0);
	close(fd);
	CU_ASSERT_EQUAL_FATAL(posix_memalign(&E->guest, 4096, T_GUEST_PAGES * HV_PAGE_SIZE), 0);
	CU_ASSERT_EQUAL_FATAL(posix_memalign(&E->ring_page, 4096, HV_PAGE_SIZE), 0);
	memset(E->guest, 0, T_GUEST_PAGES * HV_PAGE_SIZE);
	SHARED_RING_INIT((blkif_sring_t *)E->ring_page);
	FRONT_RING_INIT(&E->fr, (blkif_sring_t *)E->ring_page, HV_PAGE_SIZE);

	CU_ASSERT_EQUAL_FATAL(target_raw_open(E->path, &o, &E->t), 0);
	CU_ASSERT_EQUAL_FATAL(target_info(E->t, &info), 0);
	E->vbd.size_sect = T_DISK_SECT;
	E->vbd.logical_block = 512;
	E->vbd.feat_discard = info.discard_granularity ? 1 : 0;
	E->vbd.feat_barrier = 1;
	snprintf(E->vbd.name, sizeof(E->vbd.name), "d1/xvda");

	E->r.vbd = &E->vbd;
	E->r.domid = 1;
	E->r.sring = E->ring_page;
	E->r.nr_pages = 1;
	E->r.ops = &t_ops;
	E->r.target = E->t;
	E->r.max_segs = max_segs;
	E->r.persistent = persistent;
	E->r.pg_max = pg_max;
	snprintf(E->r.name, sizeof(E->r.name), "d1/xvda");
	CU_ASSERT_EQUAL_FATAL(bb_ring_init(&E->r), 0);
	CU_ASSERT_EQUAL(E->r.nr_reqs, 32);
	CU_ASSERT_EQUAL_FATAL(
		target_queue_open(E->t, queue_depth ? queue_depth : E->r.nr_reqs, &E->r.tq), 0);
}

static void env_setup(uint32_t queue_depth)
{
	env_setup_ex(queue_depth, 0, 0, 0);
}

static void env_teardown(void)
{
	CU_ASSERT_EQUAL(nr_rsps, 0); /* every response was looked at */
	nr_rsps = 0;
	/* Without persistent grants every page was unmapped when its request was answered. */
	if (!E->r.persistent)
		CU_ASSERT_EQUAL(E->maps, E->unmaps);
	CU_ASSERT_EQUAL(E->r.inflight, 0);
	target_queue_close(E->r.tq);
	bb_ring_fini(&E->r);
	/* Kept grants are unmapped at teardown too: nothing stays mapped. */
	CU_ASSERT_EQUAL(E->maps, E->unmaps);
	target_close(E->t);
	unlink(E->path);
	free(E->guest);
	free(E->ring_page);
	free(E);
	E = NULL;
}

static void *gpage(unsigned i)
{
	return (char *)E->guest + (size_t)i * HV_PAGE_SIZE;
}

/* Queue a READ/WRITE/FLUSH/BARRIER of pages [first, first+n) at @sector. */
static void push_rw(uint8_t op, uint64_t id, uint64_t sector, unsigned first_gref, unsigned n)
{
	struct blkif_request *rq = RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt);

	memset(rq, 0, sizeof(*rq));
	rq->operation = op;
	rq->nr_segments = (uint8_t)n;
	rq->handle = 51712;
	rq->id = id;
	rq->sector_number = sector;
	for (unsigned i = 0; i < n && i < BB_DIRECT_SEGS; i++) {
		rq->seg[i].gref = first_gref + i;
		rq->seg[i].first_sect = 0;
		rq->seg[i].last_sect = 7;
	}
	E->fr.req_prod_pvt++;
}

static void push_discard(uint64_t id, uint64_t sector, uint64_t nr)
{
	struct blkif_request_discard d = {
		.operation = BLKIF_OP_DISCARD, .id = id, .sector_number = sector, .nr_sectors = nr,
	};

	memcpy(RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt), &d, sizeof(d));
	E->fr.req_prod_pvt++;
}

static int publish(void)
{
	int notify;

	RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&E->fr, notify);
	return notify;
}

/* Run passes until nothing is in flight and the ring is idle (bounded). */
static void run(void)
{
	for (int i = 0; i < 10000; i++) {
		int more = bb_ring_pass(&E->r);

		if (more < 0)
			break;
		if (E->r.inflight)
			target_queue_poll(E->r.tq, 1);
		else if (!more)
			break;
	}
}

/*
 * Responses come in completion order, not request order: take every published response into
 * a table and look them up by id.
 */

static void collect(void)
{
	while (E->fr.rsp_cons != E->fr.sring->rsp_prod && nr_rsps < T_MAX_RSP) {
		struct blkif_response rsp;

		RING_COPY_RESPONSE(&E->fr, E->fr.rsp_cons, &rsp);
		E->fr.rsp_cons++;
		rsps[nr_rsps].id = rsp.id;
		rsps[nr_rsps].status = rsp.status;
		rsps[nr_rsps].taken = 0;
		nr_rsps++;
	}
}

/* The status of the response for @id (each answered exactly once), or 99 when none came. */
static int16_t reap(uint64_t id)
{
	int16_t st = 99;
	unsigned found = 0;

	collect();
	for (unsigned i = 0; i < nr_rsps; i++) {
		if (rsps[i].id == id && !rsps[i].taken) {
			if (!found)
				st = rsps[i].status;
			rsps[i].taken = 1;
			found++;
		}
	}
	CU_ASSERT_EQUAL(found, 1);
	/* Drop the table once everything in it was looked at. */
	for (unsigned i = 0; i < nr_rsps; i++)
		if (!rsps[i].taken)
			return st;
	nr_rsps = 0;
	return st;
}

static void fill(void *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		((unsigned char *)p)[i] = (unsigned char)(seed * 31 + i * 7 + (i >> 9));
}

static void test_write_read_back(void)
{
	unsigned char *file = malloc(16 * 512);
	struct bb_stats st;
	int fd;

	env_setup(0);
	fill(gpage(0), 2 * HV_PAGE_SIZE, 1);
	push_rw(BLKIF_OP_WRITE, 10, 8, 0, 2);
	CU_ASSERT_EQUAL(publish(), 1); /* req_event starts at 1: the first request notifies */
	run();
	CU_ASSERT_EQUAL(reap(10), BLKIF_RSP_OKAY);

	/* The data went to the file in place. */
	fd = open(E->path, O_RDONLY);
	CU_ASSERT_EQUAL(pread(fd, file, 16 * 512, 8 * 512), 16 * 512);
	close(fd);
	CU_ASSERT_EQUAL(memcmp(file, gpage(0), 16 * 512), 0);

	/* Read it back into other pages, one segment landing mid-page. */
	push_rw(BLKIF_OP_READ, 11, 8, 4, 2);
	RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt - 1)->seg[1].first_sect = 2;
	RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt - 1)->seg[1].last_sect = 3;
	publish();
	run();
	CU_ASSERT_EQUAL(reap(11), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(memcmp(gpage(4), file, 4096), 0);
	CU_ASSERT_EQUAL(memcmp((char *)gpage(5) + 1024, file + 4096, 1024), 0);

	memset(&st, 0, sizeof(st));
	bb_stats_add(&st, &E->r.st);
	CU_ASSERT_EQUAL(st.wr_req, 1);
	CU_ASSERT_EQUAL(st.rd_req, 1);
	CU_ASSERT_EQUAL(st.wr_sect, 16);
	CU_ASSERT_EQUAL(st.rd_sect, 10);
	CU_ASSERT_EQUAL(st.errors, 0);
	CU_ASSERT_EQUAL(st.inflight, 0);
	CU_ASSERT(bb_hist_percentile(&st.rd_lat, 50) > 0);
	CU_ASSERT(bb_hist_percentile(&st.wr_lat, 99) > 0);
	free(file);
	env_teardown();
}

static void test_bad_requests_answered(void)
{
	struct blkif_request *rq;

	env_setup(0);
	push_rw(77, 1, 0, 0, 1);                         /* unknown opcode */
	push_rw(BLKIF_OP_READ, 2, 0, 0, 0);              /* no segments */
	push_rw(BLKIF_OP_WRITE, 3, 0, 0, 1);
	RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt - 1)->nr_segments = 200;
	push_rw(BLKIF_OP_READ, 4, 0, 0, 1);
	RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt - 1)->seg[0].last_sect = 9;
	push_rw(BLKIF_OP_READ, 5, T_DISK_SECT - 4, 0, 1); /* past the end */
	push_rw(BLKIF_OP_READ, 6, 0, 9999, 1);           /* not granted */
	push_rw(BLKIF_OP_READ, 7, 0, 0, 3);
	rq = RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt - 1);
	rq->seg[1].gref = T_RO_BASE + 1;                 /* read into a read-only grant */
	push_rw(BLKIF_OP_WRITE, 8, 0, T_RO_BASE + 2, 1); /* write from a read-only grant: fine */
	push_rw(BLKIF_OP_READ, 9, 16, 3, 1);             /* and the ring carries on */
	publish();
	run();
	CU_ASSERT_EQUAL(reap(1), BLKIF_RSP_EOPNOTSUPP);
	CU_ASSERT_EQUAL(reap(2), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(3), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(4), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(5), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(6), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(7), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(8), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(reap(9), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(E->r.st.errors, 7);
	CU_ASSERT_EQUAL(E->r.st.rd_req, 6);
	CU_ASSERT_EQUAL(E->r.st.wr_req, 2);
	CU_ASSERT_FALSE(E->r.dead);
	env_teardown();
}

static void test_notification_suppression(void)
{
	blkif_sring_t *s;
	unsigned before;

	env_setup(0);
	s = E->fr.sring;
	push_rw(BLKIF_OP_WRITE, 1, 0, 0, 1);
	publish();
	run();
	/* The frontend's rsp_event (1) was inside the batch: one notify. */
	CU_ASSERT_EQUAL(E->notifies, 1);
	/* Idle: req_event re-armed so the next request wakes the backend. */
	CU_ASSERT_EQUAL(s->req_event, E->r.br.req_cons + 1);
	CU_ASSERT_EQUAL(reap(1), BLKIF_RSP_OKAY);

	/* The frontend does not re-arm rsp_event (it is polling): no notify for the next ones. */
	before = E->notifies;
	push_rw(BLKIF_OP_WRITE, 2, 8, 0, 1);
	push_rw(BLKIF_OP_WRITE, 3, 16, 0, 1);
	CU_ASSERT_EQUAL(publish(), 1);
	run();
	CU_ASSERT_EQUAL(E->notifies, before);
	CU_ASSERT_EQUAL(reap(2), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(reap(3), BLKIF_RSP_OKAY);

	/* Re-armed (RING_FINAL_CHECK_FOR_RESPONSES): notified again. */
	s->rsp_event = E->fr.rsp_cons + 1;
	push_rw(BLKIF_OP_READ, 4, 0, 1, 1);
	publish();
	run();
	CU_ASSERT_EQUAL(E->notifies, before + 1);
	CU_ASSERT_EQUAL(reap(4), BLKIF_RSP_OKAY);

	/* A request published while the backend is idle and armed asks for a notify. */
	push_rw(BLKIF_OP_READ, 5, 0, 1, 1);
	CU_ASSERT_EQUAL(publish(), 1);
	run();
	CU_ASSERT_EQUAL(reap(5), BLKIF_RSP_OKAY);
	env_teardown();
}

static void test_hostile_req_prod(void)
{
	env_setup(0);
	push_rw(BLKIF_OP_READ, 1, 0, 0, 1);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(1), BLKIF_RSP_OKAY);
	/* Claim 33 requests on a 32-slot ring. */
	E->fr.sring->req_prod = E->r.br.rsp_prod_pvt + 33;
	bb_ring_pass(&E->r);
	CU_ASSERT_TRUE(E->r.dead);
	CU_ASSERT_EQUAL(E->vbd.need_disconnect, 1);
	CU_ASSERT_EQUAL(E->fr.sring->rsp_prod, E->fr.rsp_cons); /* nothing answered */
	CU_ASSERT_EQUAL(bb_ring_pass(&E->r), 0);                /* and nothing consumed again */
	env_teardown();
}

static void test_backpressure(void)
{
	unsigned n = 32;

	env_setup(4); /* the target takes only 4 at a time */
	for (unsigned i = 0; i < n; i++) {
		fill(gpage(i), HV_PAGE_SIZE, 100 + i);
		push_rw(BLKIF_OP_WRITE, 1000 + i, (uint64_t)i * 8, i, 1);
	}
	publish();
	run();
	for (unsigned i = 0; i < n; i++)
		CU_ASSERT_EQUAL(reap(1000 + i), BLKIF_RSP_OKAY);
	CU_ASSERT(E->r.st.oo_req > 0);
	CU_ASSERT_EQUAL(E->r.st.wr_req, n);

	/* Everything landed where it should. */
	memset(gpage(40), 0, 8 * HV_PAGE_SIZE);
	for (unsigned i = 0; i < 8; i++)
		push_rw(BLKIF_OP_READ, 2000 + i, (uint64_t)i * 32, 40 + i, 1);
	publish();
	run();
	for (unsigned i = 0; i < 8; i++) {
		unsigned char want[HV_PAGE_SIZE];

		CU_ASSERT_EQUAL(reap(2000 + i), BLKIF_RSP_OKAY);
		fill(want, sizeof(want), 100 + i * 4);
		CU_ASSERT_EQUAL(memcmp(gpage(40 + i), want, sizeof(want)), 0);
	}
	env_teardown();
}

static void test_flush_barrier_discard(void)
{
	env_setup(0);
	fill(gpage(0), 4 * HV_PAGE_SIZE, 7);
	push_rw(BLKIF_OP_WRITE, 1, 0, 0, 1);
	push_rw(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, 0, 0);
	push_rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 8, 1, 1); /* a FUA-style write: pre/post flush */
	push_rw(BLKIF_OP_WRITE, 4, 16, 2, 1);
	push_rw(BLKIF_OP_WRITE_BARRIER, 5, 24, 3, 1); /* waits for 4 to complete */
	push_rw(BLKIF_OP_READ, 6, 0, 10, 4);          /* after the barrier */
	publish();
	run();
	for (uint64_t id = 1; id <= 6; id++)
		CU_ASSERT_EQUAL(reap(id), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(memcmp(gpage(10), gpage(0), 4 * HV_PAGE_SIZE), 0);
	CU_ASSERT_EQUAL(E->r.st.f_req, 3);
	CU_ASSERT_EQUAL(E->r.st.wr_sect, 32);
	CU_ASSERT_FALSE(E->r.barrier_active);

	if (E->vbd.feat_discard) {
		push_discard(7, 8, 16);
		push_discard(8, 0, 0);
		publish();
		run();
		CU_ASSERT_EQUAL(reap(7), BLKIF_RSP_OKAY);
		CU_ASSERT_EQUAL(reap(8), BLKIF_RSP_OKAY);
		/* blkif orders nothing between requests: read only once the discard completed. */
		push_rw(BLKIF_OP_READ, 9, 0, 20, 4);
		publish();
		run();
		CU_ASSERT_EQUAL(reap(9), BLKIF_RSP_OKAY);
		CU_ASSERT_EQUAL(memcmp(gpage(20), gpage(0), HV_PAGE_SIZE), 0);
		CU_ASSERT_EQUAL(memcmp(gpage(23), gpage(3), HV_PAGE_SIZE), 0);
		for (unsigned i = 0; i < 2 * HV_PAGE_SIZE; i++)
			if (((unsigned char *)gpage(21))[i] != 0) {
				CU_FAIL("discarded range reads back non-zero");
				break;
			}
		CU_ASSERT_EQUAL(E->r.st.ds_req, 2);
	}
	/* Without the feature, discard is "not supported". */
	E->vbd.feat_discard = 0;
	push_discard(10, 0, 8);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(10), BLKIF_RSP_EOPNOTSUPP);
	env_teardown();
}

static void test_size_and_read_only(void)
{
	env_setup(0);
	/* A shrink is seen by the next request; a grow as well. */
	__atomic_store_n(&E->vbd.size_sect, 64, __ATOMIC_RELEASE);
	push_rw(BLKIF_OP_READ, 1, 56, 0, 1);
	push_rw(BLKIF_OP_READ, 2, 64, 0, 1);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(1), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(reap(2), BLKIF_RSP_ERROR);
	__atomic_store_n(&E->vbd.size_sect, T_DISK_SECT, __ATOMIC_RELEASE);
	push_rw(BLKIF_OP_READ, 3, 64, 0, 1);
	E->vbd.ro = 1;
	push_rw(BLKIF_OP_WRITE, 4, 0, 0, 1);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(3), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(reap(4), BLKIF_RSP_ERROR);
	env_teardown();
}

static void test_wraparound(void)
{
	env_setup(0);
	/* 5 laps of the 32-slot ring in batches of 20: indices wrap, every id comes back. */
	for (unsigned lap = 0; lap < 8; lap++) {
		for (unsigned i = 0; i < 20; i++)
			push_rw(i & 1 ? BLKIF_OP_READ : BLKIF_OP_WRITE, lap * 100 + i,
				(uint64_t)i * 8, i, 1);
		publish();
		run();
		for (unsigned i = 0; i < 20; i++)
			CU_ASSERT_EQUAL(reap(lap * 100 + i), BLKIF_RSP_OKAY);
	}
	CU_ASSERT_EQUAL(E->r.br.req_cons, 160);
	env_teardown();
}

/* Queue an INDIRECT request of @n full pages (data grefs first..) described on page @ipage. */
static void push_indirect(uint8_t iop, uint64_t id, uint64_t sector, unsigned first, unsigned n,
			  unsigned ipage, grant_ref_t iref)
{
	struct blkif_request_indirect ind = {
		.operation = BLKIF_OP_INDIRECT, .indirect_op = iop, .nr_segments = (uint16_t)n,
		.id = id, .sector_number = sector, .handle = 51712,
	};
	struct blkif_request_segment *segs = gpage(ipage);

	for (unsigned i = 0; i < n && i < HV_PAGE_SIZE / sizeof(*segs); i++)
		segs[i] = (struct blkif_request_segment){ .gref = first + i, .first_sect = 0,
							  .last_sect = 7 };
	ind.indirect_grefs[0] = iref;
	memcpy(RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt), &ind, sizeof(ind));
	E->fr.req_prod_pvt++;
}

static void test_indirect(void)
{
	unsigned char *want = malloc(40 * HV_PAGE_SIZE);
	struct blkif_request_segment *segs;
	int fd;

	env_setup_ex(0, 256, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(want);
	fill(gpage(0), 40 * HV_PAGE_SIZE, 9);
	memcpy(want, gpage(0), 40 * HV_PAGE_SIZE);
	push_indirect(BLKIF_OP_WRITE, 1, 64, 0, 40, 60, 60);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(1), BLKIF_RSP_OKAY);
	fd = open(E->path, O_RDONLY);
	{
		unsigned char *file = malloc(40 * HV_PAGE_SIZE);

		CU_ASSERT_EQUAL(pread(fd, file, 40 * HV_PAGE_SIZE, 64 * 512), 40 * HV_PAGE_SIZE);
		CU_ASSERT_EQUAL(memcmp(file, want, 40 * HV_PAGE_SIZE), 0);
		free(file);
	}
	close(fd);
	memset(gpage(0), 0, 40 * HV_PAGE_SIZE);
	push_indirect(BLKIF_OP_READ, 2, 64, 0, 40, 61, 61);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(2), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(memcmp(gpage(0), want, 40 * HV_PAGE_SIZE), 0);
	CU_ASSERT_EQUAL(E->r.st.wr_req, 1);
	CU_ASSERT_EQUAL(E->r.st.rd_req, 1);
	CU_ASSERT_EQUAL(E->r.st.wr_sect, 320);

	/* Hostile indirect requests. */
	push_indirect(BLKIF_OP_DISCARD, 3, 0, 0, 4, 60, 60);     /* not read or write */
	push_indirect(BLKIF_OP_READ, 4, 0, 0, 0, 60, 60);        /* no segments */
	push_indirect(BLKIF_OP_READ, 5, 0, 0, 4, 60, 9999);      /* indirect page not granted */
	push_indirect(BLKIF_OP_READ, 6, 0, 0, 4, 60, T_RO_BASE + 60); /* fine: only read */
	push_indirect(BLKIF_OP_READ, 7, T_DISK_SECT - 8, 0, 2, 60, 60); /* past the end */
	publish();
	run();
	CU_ASSERT_EQUAL(reap(3), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(4), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(5), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(reap(6), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(reap(7), BLKIF_RSP_ERROR);
	{
		struct blkif_request_indirect *ind;

		push_indirect(BLKIF_OP_READ, 8, 0, 0, 4, 60, 60);
		ind = (void *)RING_GET_REQUEST(&E->fr, E->fr.req_prod_pvt - 1);
		ind->nr_segments = 257; /* more than offered */
	}
	publish();
	run();
	CU_ASSERT_EQUAL(reap(8), BLKIF_RSP_ERROR);
	segs = gpage(60);
	push_indirect(BLKIF_OP_READ, 9, 0, 0, 4, 60, 60);
	segs[2].last_sect = 9; /* a bad segment inside the indirect page */
	publish();
	run();
	CU_ASSERT_EQUAL(reap(9), BLKIF_RSP_ERROR);
	CU_ASSERT_EQUAL(E->r.st.errors, 6);
	free(want);
	env_teardown();

	/* Not offered: "not supported". */
	env_setup(0);
	push_indirect(BLKIF_OP_READ, 10, 0, 0, 4, 60, 60);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(10), BLKIF_RSP_EOPNOTSUPP);
	env_teardown();
}

static void test_persistent_grants(void)
{
	struct bb_pgnt *e;

	env_setup_ex(0, 0, 1, 4);
	fill(gpage(0), 4 * HV_PAGE_SIZE, 3);
	for (unsigned round = 0; round < 10; round++) {
		push_rw(BLKIF_OP_WRITE, round, round * 32, 0, 4);
		publish();
		run();
		CU_ASSERT_EQUAL(reap(round), BLKIF_RSP_OKAY);
	}
	/* Mapped once, kept: ten requests on the same four grants. */
	CU_ASSERT_EQUAL(E->maps, 4);
	CU_ASSERT_EQUAL(E->unmaps, 0);
	CU_ASSERT_EQUAL(E->r.pg_count, 4);

	/* Four new grants take the places of the least recently used unused ones. */
	push_rw(BLKIF_OP_READ, 100, 0, 4, 4);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(100), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(memcmp(gpage(4), gpage(0), 4 * HV_PAGE_SIZE), 0);
	CU_ASSERT_EQUAL(E->maps, 8);
	CU_ASSERT_EQUAL(E->unmaps, 4);
	CU_ASSERT_EQUAL(E->r.pg_count, 4);

	/* Six grants, two kept (4, 5): 0..3 are new; two evict 6 and 7, two stay private. */
	push_rw(BLKIF_OP_WRITE, 101, 512, 0, 6);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(101), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(E->maps, 12);
	CU_ASSERT_EQUAL(E->unmaps, 8);
	CU_ASSERT_EQUAL(E->r.pg_count, 4);

	/* Kept mappings are read-write: a read-only grant is refused, as Linux does. */
	push_rw(BLKIF_OP_WRITE, 102, 0, T_RO_BASE + 20, 1);
	publish();
	run();
	CU_ASSERT_EQUAL(reap(102), BLKIF_RSP_ERROR);

	/* Grants unused for a minute are given back. */
	for (e = E->r.lru_head; e; e = e->next)
		e->last_ns = 0;
	E->r.pg_next_purge_ns = 0;
	bb_ring_pass(&E->r);
	CU_ASSERT_EQUAL(E->r.pg_count, 0);
	CU_ASSERT_EQUAL(E->maps, E->unmaps);
	env_teardown();
}

/* Passes until the ring is idle or only the scheduler holds it back (never blocks on it). */
static void run_sched(void)
{
	for (int i = 0; i < 1000; i++) {
		int more = bb_ring_pass(&E->r);

		if (target_queue_inflight(E->r.tq) > 0)
			target_queue_poll(E->r.tq, 1);
		else if (more <= 0)
			break;
	}
}

static uint64_t q_now;

static uint64_t q_clock(void *ctx)
{
	(void)ctx;
	return q_now;
}

/*
 * A capped vbd: the scheduler parks it, the ring keeps the next request at the head of its
 * deferred list (not counted as target backpressure), consumes nothing after it, arms its
 * timer for the exact retry time, and sends it once the scheduler's clock gets there.
 */
static void test_qos_holds_and_releases(void)
{
	static const struct qos_clock clk = { q_clock, NULL };
	struct qos_vbd_settings set;
	struct qos_sched *s = NULL;
	struct qos_vbd_stats vs;
	struct qos_vbd *qv = NULL;
	uint64_t t0;

	q_now = 1000000000ull;
	CU_ASSERT_EQUAL_FATAL(qos_sched_new(NULL, &clk, &s, NULL, 0), 0);
	qos_vbd_settings_default(&set);
	set.cap_iops = 10; /* one request per 100 ms */
	CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, NULL, NULL, &qv, NULL, 0), 0);
	env_setup(0);
	E->vbd.qos = qv;
	for (unsigned i = 0; i < 3; i++)
		push_rw(BLKIF_OP_READ, 300 + i, (uint64_t)i * 8, i, 1);
	publish();
	run_sched();
	CU_ASSERT_EQUAL(reap(300), BLKIF_RSP_OKAY);
	collect();
	CU_ASSERT_EQUAL(nr_rsps, 0); /* 301 and 302 wait */
	CU_ASSERT(E->r.qos_held);
	CU_ASSERT_PTR_NOT_NULL(E->r.defer_head);
	CU_ASSERT_EQUAL(E->r.inflight, 1);    /* 301 taken and held... */
	CU_ASSERT_EQUAL(E->r.br.req_cons, 2); /* ...and 302 still on the ring */
	t0 = E->r.timer_ns;
	CU_ASSERT(t0 > q_now && t0 <= q_now + 100000000ull);

	/* Not yet: still held. */
	q_now = t0 - 1;
	run_sched();
	collect();
	CU_ASSERT_EQUAL(nr_rsps, 0);
	/* The retry time: one more goes. */
	q_now = t0;
	run_sched();
	CU_ASSERT_EQUAL(reap(301), BLKIF_RSP_OKAY);
	q_now += 100000000ull;
	run_sched();
	CU_ASSERT_EQUAL(reap(302), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(E->r.st.oo_req, 0);
	CU_ASSERT_EQUAL(E->r.st.rd_req, 3);
	qos_vbd_stats(qv, &vs);
	CU_ASSERT_EQUAL(vs.ops, 3);
	CU_ASSERT_EQUAL(vs.inflight, 0);
	CU_ASSERT(vs.parked_ns > 0);
	env_teardown();
	qos_vbd_remove(qv);
	qos_sched_free(s);
}

/*
 * A simulated device of 20 IOPS: the file answers at once, but each response waits for the
 * device (50 ms of service each, after 10 ms of latency) and nothing is answered early.
 */
static void test_sim_device_holds_responses(void)
{
	struct qos_simdev_params sp;
	struct blkback *bb = calloc(1, sizeof(*bb));
	uint64_t t0, t1;

	CU_ASSERT_FATAL(bb != NULL);
	CU_ASSERT_EQUAL_FATAL(qos_simdev_parse("20:10000", &sp, NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(qos_simdev_new(&sp, NULL, &bb->simdev), 0);
	env_setup(0);
	E->vbd.bb = bb;
	push_rw(BLKIF_OP_READ, 400, 0, 0, 1);
	push_rw(BLKIF_OP_READ, 401, 8, 1, 1);
	publish();
	t0 = util_now_ns();
	bb_ring_pass(&E->r);
	while (target_queue_inflight(E->r.tq) > 0)
		target_queue_poll(E->r.tq, 1);
	bb_ring_pass(&E->r);
	collect();
	if (util_now_ns() - t0 < 50000000ull) {
		/* The file is done; the device is not. */
		CU_ASSERT_EQUAL(nr_rsps, 0);
		CU_ASSERT_PTR_NOT_NULL(E->r.sim_head);
		CU_ASSERT(E->r.timer_ns > 0);
	}
	while (E->r.inflight && util_now_ns() - t0 < 5000000000ull) {
		struct pollfd p = { .fd = E->r.timer_fd, .events = POLLIN };

		poll(&p, 1, 100); /* the ring thread sleeps on this timer */
		bb_ring_pass(&E->r);
	}
	t1 = util_now_ns();
	CU_ASSERT_EQUAL(reap(400), BLKIF_RSP_OKAY);
	CU_ASSERT_EQUAL(reap(401), BLKIF_RSP_OKAY);
	/* Two requests of 50 ms on one server, then 10 ms: never sooner than 110 ms. */
	CU_ASSERT(t1 - t0 >= 110000000ull);
	env_teardown();
	qos_simdev_free(bb->simdev);
	free(bb);
}

static CU_TestInfo tests[] = {
	{ "write_read_back", test_write_read_back },
	{ "bad_requests_answered", test_bad_requests_answered },
	{ "notification_suppression", test_notification_suppression },
	{ "hostile_req_prod", test_hostile_req_prod },
	{ "backpressure", test_backpressure },
	{ "flush_barrier_discard", test_flush_barrier_discard },
	{ "size_and_read_only", test_size_and_read_only },
	{ "wraparound", test_wraparound },
	{ "indirect", test_indirect },
	{ "persistent_grants", test_persistent_grants },
	{ "qos_holds_and_releases", test_qos_holds_and_releases },
	{ "sim_device_holds_responses", test_sim_device_holds_responses },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("ring", NULL, NULL, tests)
