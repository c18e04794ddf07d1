/*
 * test_sched.c - the scheduler's mechanics with a hand-driven clock: validation, admission,
 * waiting and grants, caps, cancel, BOOST, credit bounds, removal, statistics, and threads.
 * (Shares, latency and throughput over time are in test_qos_sim.c.)
 */
#include "qos/qos.h"
#include "tests/harness.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#define MS 1000000ull
#define COST4K 100000ull /* qos_cost_model_flash(10000): a 4 KiB request is 100 us */

static uint64_t fake_now;

static uint64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static const struct qos_clock clk = { fake_clock, NULL };

static struct qos_sched *new_sched(uint64_t window_ns, int fixed_vrate)
{
	struct qos_params p;
	struct qos_sched *s = NULL;
	char why[160];

	qos_params_default(&p);
	qos_cost_model_flash(&p.cost, 10000);
	p.window_init_ns = window_ns;
	if (fixed_vrate)
		p.vrate_min_pct = p.vrate_max_pct = 100;
	fake_now = 1000 * MS;
	CU_ASSERT_EQUAL_FATAL(qos_sched_new(&p, &clk, &s, why, sizeof(why)), 0);
	return s;
}

static struct qos_vbd *new_vbd(struct qos_sched *s, uint32_t weight, qos_wake_fn wake, void *arg)
{
	struct qos_vbd_settings set;
	struct qos_vbd *v = NULL;

	qos_vbd_settings_default(&set);
	set.weight = weight;
	CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, wake, arg, &v, NULL, 0), 0);
	return v;
}

static void count_wake(void *arg)
{
	(*(int *)arg)++;
}

static const struct qos_io rd4k = { QOS_OP_READ, 0, 4096 };

static struct qos_io rd_at(uint64_t off)
{
	return (struct qos_io){ QOS_OP_READ, off, 4096 };
}

static void test_params_validation(void)
{
	struct qos_params p;
	struct qos_sched *s = NULL;
	char why[160];

	CU_ASSERT_EQUAL(qos_sched_new(NULL, NULL, &s, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(qos_sched_capacity_iops(s), 50000);
	qos_sched_free(s);

	qos_params_default(&p);
	p.period_ns = 0;
	CU_ASSERT_EQUAL(qos_sched_new(&p, &clk, &s, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "period"));
	qos_params_default(&p);
	memset(&p.cost, 0, sizeof(p.cost));
	CU_ASSERT_EQUAL(qos_sched_new(&p, &clk, &s, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "cost model"));
	qos_params_default(&p);
	p.vrate_min_pct = 0;
	CU_ASSERT_EQUAL(qos_sched_new(&p, &clk, &s, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "vrate"));
	qos_params_default(&p);
	p.qdelay_pct = 0;
	CU_ASSERT_EQUAL(qos_sched_new(&p, &clk, &s, NULL, 0), -EINVAL);
}

/* Each invalid setting is refused with one sentence naming the problem. */
static void expect_refused(struct qos_sched *s, const struct qos_vbd_settings *set,
			   const char *needle)
{
	char why[200] = "";
	struct qos_vbd *v = NULL;

	CU_ASSERT_EQUAL(qos_settings_check(s, NULL, set, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, needle));
	CU_ASSERT_PTR_NULL(strchr(why, '\n'));
	CU_ASSERT_EQUAL(qos_vbd_add(s, set, NULL, NULL, &v, NULL, 0), -EINVAL);
	CU_ASSERT_PTR_NULL(v);
}

static void test_settings_validation(void)
{
	struct qos_sched *s = new_sched(0, 0);
	struct qos_vbd_settings set, d;
	struct qos_vbd *a, *b;
	struct qos_vbd_stats st;
	char why[200];

	qos_vbd_settings_default(&d);
	set = d, set.weight = 0;
	expect_refused(s, &set, "weight 0");
	set = d, set.weight = 65536;
	expect_refused(s, &set, "weight 65536");
	set = d, set.cap_iops = 100, set.reserve_iops = 200;
	expect_refused(s, &set, "above the cap");
	set = d, set.burst_iops = 500;
	expect_refused(s, &set, "needs an IOPS cap");
	set = d, set.cap_iops = 500, set.burst_iops = 500, set.burst_seconds = 1;
	expect_refused(s, &set, "needs an IOPS cap below it");
	set = d, set.cap_bps = 1 << 20, set.burst_bps = 1 << 19, set.burst_seconds = 1;
	expect_refused(s, &set, "bytes/s cap below it");
	set = d, set.cap_iops = 100, set.burst_iops = 500;
	expect_refused(s, &set, "burst length 0");
	set = d, set.cap_iops = 100, set.burst_iops = 500, set.burst_seconds = 3601;
	expect_refused(s, &set, "3601");
	set = d, set.burst_seconds = 5;
	expect_refused(s, &set, "without a burst rate");
	set = d, set.cap_bps = QOS_RATE_MAX + 1;
	expect_refused(s, &set, "largest supported");
	set = d, set.reserve_iops = 10001;
	expect_refused(s, &set, "more than the device's 10000 IOPS");

	/* Reservations add up across vbds; a vbd's own old reservation does not count. */
	set = d, set.reserve_iops = 6000;
	CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, NULL, NULL, &a, NULL, 0), 0);
	set.reserve_iops = 5000;
	expect_refused(s, &set, "add up to 11000 IOPS");
	set.reserve_iops = 4000;
	CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, NULL, NULL, &b, NULL, 0), 0);
	set.reserve_iops = 6001;
	CU_ASSERT_EQUAL(qos_vbd_set(a, &set, why, sizeof(why)), -EINVAL);
	set.reserve_iops = 5000;
	set.weight = 1000;
	CU_ASSERT_EQUAL(qos_vbd_set(b, &set, why, sizeof(why)), -EINVAL);
	/* A refused change changes nothing. */
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.set.weight, 256);
	CU_ASSERT_EQUAL(st.set.reserve_iops, 4000);
	set.reserve_iops = 3000;
	CU_ASSERT_EQUAL(qos_vbd_set(b, &set, why, sizeof(why)), 0);
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.set.weight, 1000);
	/* A valid burst. */
	set = d, set.cap_iops = 100, set.burst_iops = 500, set.burst_seconds = 10;
	CU_ASSERT_EQUAL(qos_vbd_set(a, &set, why, sizeof(why)), 0);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

static void test_admit_complete_and_seq(void)
{
	struct qos_params p;
	struct qos_sched *s;
	struct qos_vbd *v;
	struct qos_ticket t1, t2, t3;
	struct qos_vbd_stats st;
	uint64_t retry;
	struct qos_io io = rd_at(1 << 30);

	/* An HDD-like model: sequential requests are 100x cheaper than random ones. */
	qos_params_default(&p);
	p.cost = (struct qos_cost_model){ .rd_page_ns = 20000, .rd_seq_base_ns = 50000,
					  .rd_rand_base_ns = 8000000, .wr_page_ns = 20000,
					  .wr_seq_base_ns = 50000, .wr_rand_base_ns = 8000000 };
	fake_now = 1000 * MS;
	CU_ASSERT_EQUAL_FATAL(qos_sched_new(&p, &clk, &s, NULL, 0), 0);
	v = new_vbd(s, 256, NULL, NULL);

	CU_ASSERT_EQUAL(qos_vbd_admit(v, &io, &t1, &retry), 0);
	CU_ASSERT_EQUAL(t1.cost_ns, 8000000 + 20000);
	CU_ASSERT_EQUAL(t1.len_bytes, 4096);
	CU_ASSERT_EQUAL(t1.dispatch_ns, fake_now);
	CU_ASSERT(t1.flags & QOS_TICKET_LONE);
	io.offset_bytes += 4096; /* right after: sequential */
	CU_ASSERT_EQUAL(qos_vbd_admit(v, &io, &t2, &retry), 0);
	CU_ASSERT_EQUAL(t2.cost_ns, 50000 + 20000);
	CU_ASSERT_FALSE(t2.flags & QOS_TICKET_LONE);
	io.offset_bytes += 64ull << 20; /* far away: random again */
	CU_ASSERT_EQUAL(qos_vbd_admit(v, &io, &t3, &retry), 0);
	CU_ASSERT_EQUAL(t3.cost_ns, 8000000 + 20000);

	qos_vbd_stats(v, &st);
	CU_ASSERT_EQUAL(st.inflight, 3);
	/* Credit is earned at the end of a period and spent up front: a new vbd starts in debt. */
	CU_ASSERT_EQUAL(st.state, QOS_STATE_OVER);
	fake_now += 10 * MS;
	qos_vbd_complete(v, &t1);
	qos_vbd_complete(v, &t2);
	qos_vbd_complete(v, &t3);
	qos_vbd_stats(v, &st);
	CU_ASSERT_EQUAL(st.inflight, 0);
	CU_ASSERT_EQUAL(st.ops, 3);
	CU_ASSERT_EQUAL(st.bytes, 3 * 4096);
	CU_ASSERT_EQUAL(st.dev_ns, 2 * 8020000 + 70000);

	io.op = QOS_OP_COUNT;
	CU_ASSERT_EQUAL(qos_vbd_admit(v, &io, &t1, &retry), -EINVAL);
	qos_vbd_remove(v);
	qos_sched_free(s);
}

/* A full device makes a vbd wait; a completion grants it the room and wakes it. */
static void test_wait_and_grant(void)
{
	struct qos_sched *s = new_sched(2 * COST4K, 0);
	int wa = 0, wb = 0;
	struct qos_vbd *a = new_vbd(s, 256, count_wake, &wa);
	struct qos_vbd *b = new_vbd(s, 256, count_wake, &wb);
	struct qos_ticket ta[3], tb, tb2;
	struct qos_sched_stats ss;
	uint64_t retry = 0;

	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta[0], &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta[1], &retry), 0);
	/* b has nothing in flight and credit: BOOST gets it in past the full window once. */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0);
	CU_ASSERT(tb.flags & QOS_TICKET_BOOST);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb2, &retry), -EAGAIN);
	CU_ASSERT_EQUAL(retry, fake_now + 30 * MS); /* a backstop: the wake comes first */
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta[2], &retry), -EAGAIN);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.nwaiting, 2);
	CU_ASSERT_EQUAL(ss.inflight_ns, 3 * COST4K);

	fake_now += 200000;
	qos_vbd_complete(a, &ta[0]);
	qos_vbd_complete(b, &tb);
	/* Room for one: b (waiting longer, equal credit per weight) got it and was woken. */
	CU_ASSERT_EQUAL(wb, 1);
	CU_ASSERT_EQUAL(wa, 0);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, 2 * COST4K); /* the granted room is held for b */
	CU_ASSERT_EQUAL(ss.nwaiting, 1);
	/* While b has not claimed, a may not take the room left over for b's next requests. */
	fake_now += 1000;
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb2, &retry), 0);
	CU_ASSERT_EQUAL(tb2.dispatch_ns, fake_now);
	CU_ASSERT_FALSE(tb2.flags & QOS_TICKET_BOOST);

	qos_vbd_complete(a, &ta[1]);
	CU_ASSERT_EQUAL(wa, 1);
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta[2], &retry), 0);
	qos_vbd_complete(a, &ta[2]);
	qos_vbd_complete(b, &tb2);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, 0);
	CU_ASSERT_EQUAL(ss.nwaiting, 0);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

/* A grant is for the request that waited; another request starts over; unclaimed grants expire. */
static void test_grant_other_io_and_expiry(void)
{
	struct qos_sched *s = new_sched(COST4K, 0);
	int wb = 0;
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *b = new_vbd(s, 256, count_wake, &wb);
	struct qos_ticket ta, tb, tbig;
	struct qos_sched_stats ss;
	struct qos_io big = { QOS_OP_READ, 0, 65536 };
	uint64_t retry;

	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta, &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0); /* BOOST */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tbig, &retry), -EAGAIN);
	qos_vbd_complete(a, &ta);
	qos_vbd_complete(b, &tb);
	CU_ASSERT_EQUAL(wb, 1);
	/* b comes back with a different request: charged for that one, not the 4 KiB. */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &big, &tbig, &retry), 0);
	CU_ASSERT_EQUAL(tbig.cost_ns, 75000 + 16 * 25000);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, tbig.cost_ns);

	/* Now a waits for room, is granted it, and never comes back. Without a wake callback it
	 * is told to poll at the pace of completions. */
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta, &retry), -EAGAIN);
	CU_ASSERT_EQUAL(retry, fake_now + COST4K);
	qos_vbd_complete(b, &tbig);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, COST4K);
	fake_now += 31 * MS;
	qos_sched_tick(s);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, 0); /* the room went back to the device */
	/* a's late call is simply a new request. */
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta, &retry), 0);
	qos_vbd_complete(a, &ta);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

/* With the device full, a vbd with credit per weight to spare goes before one in debt. */
static void test_under_before_over(void)
{
	struct qos_sched *s = new_sched(COST4K, 1);
	int wa = 0, wb = 0;
	struct qos_vbd *a = new_vbd(s, 256, count_wake, &wa);
	struct qos_vbd *b = new_vbd(s, 256, count_wake, &wb);
	struct qos_ticket ta[16], tb[2];
	struct qos_vbd_stats st;
	unsigned n;
	uint64_t retry;

	/* Period 1: a runs alone and spends far beyond its share. */
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta[0], &retry), 0);
		qos_vbd_complete(a, &ta[0]);
	}
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb[0], &retry), 0);
	qos_vbd_complete(b, &tb[0]);
	fake_now += 30 * MS;
	qos_sched_tick(s);
	qos_vbd_stats(a, &st);
	CU_ASSERT_EQUAL(st.credit_ns, -400000 + 15 * (int64_t)MS); /* 15 ms = half the budget */
	CU_ASSERT_EQUAL(st.state, QOS_STATE_UNDER);

	/* Fill the device with a's requests (the window has adapted); then both wait, a first. */
	n = 0;
	while (n < 16 && qos_vbd_admit(a, &rd4k, &ta[n], &retry) == 0)
		n++;
	CU_ASSERT_FATAL(n >= 1 && n < 16);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb[0], &retry), 0); /* BOOST past the window */
	CU_ASSERT(tb[0].flags & QOS_TICKET_BOOST);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb[1], &retry), -EAGAIN);
	qos_vbd_complete(b, &tb[0]);
	for (unsigned i = 0; i < n && !wb; i++)
		qos_vbd_complete(a, &ta[i]);
	CU_ASSERT_EQUAL(wb, 1); /* b has more credit left: it goes first */
	CU_ASSERT_EQUAL(wa, 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb[1], &retry), 0);
	qos_vbd_complete(b, &tb[1]);
	CU_ASSERT_EQUAL(wa, 1);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

static void test_cap_parks_until_exact_time(void)
{
	struct qos_sched *s = new_sched(1000 * MS, 0);
	struct qos_vbd_settings set;
	struct qos_vbd *v;
	struct qos_vbd_stats st;
	struct qos_ticket t;
	uint64_t retry = 0, start = 0, n = 0, end;

	qos_vbd_settings_default(&set);
	set.cap_iops = 100; /* one request per 10 ms, tolerating one period (30 ms) ahead */
	CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, NULL, NULL, &v, NULL, 0), 0);
	start = fake_now;
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(qos_vbd_admit(v, &rd4k, &t, &retry), 0);
		qos_vbd_complete(v, &t);
	}
	CU_ASSERT_EQUAL(qos_vbd_admit(v, &rd4k, &t, &retry), -EAGAIN);
	CU_ASSERT_EQUAL(retry, start + 10 * MS);
	qos_vbd_stats(v, &st);
	CU_ASSERT_EQUAL(st.state, QOS_STATE_PARKED);
	/* One ns early is still too early; at the time given it passes. */
	fake_now = retry - 1;
	CU_ASSERT_EQUAL(qos_vbd_admit(v, &rd4k, &t, &retry), -EAGAIN);
	CU_ASSERT_EQUAL(retry, fake_now + 1);
	fake_now = retry;
	CU_ASSERT_EQUAL(qos_vbd_admit(v, &rd4k, &t, &retry), 0);
	qos_vbd_complete(v, &t);

	/* Driven by its retry times for 10 s, the vbd gets the cap plus the initial tolerance. */
	end = start + 10000 * MS;
	n = 5;
	while (fake_now < end) {
		if (qos_vbd_admit(v, &rd4k, &t, &retry) == 0) {
			qos_vbd_complete(v, &t);
			n++;
			continue;
		}
		CU_ASSERT_FATAL(retry > fake_now && retry <= fake_now + 10 * MS);
		fake_now = retry;
	}
	CU_ASSERT(n >= 1003 && n <= 1004);
	qos_vbd_stats(v, &st);
	CU_ASSERT(st.parked_ns > 9000 * MS);
	CU_ASSERT_EQUAL(st.parked_ns, st.throttled_ns);
	qos_vbd_remove(v);
	qos_sched_free(s);
}

static void test_cancel_gives_everything_back(void)
{
	struct qos_sched *s = new_sched(1000 * MS, 0);
	struct qos_vbd_settings set;
	struct qos_vbd *v, *a, *b;
	struct qos_vbd_stats st0, st;
	struct qos_sched_stats ss;
	struct qos_ticket t[5];
	int wb = 0;
	uint64_t retry;

	/* Cap allowance, reservation token and credit come back. */
	qos_vbd_settings_default(&set);
	set.cap_iops = 100; /* 4 at once: one per 10 ms, 30 ms ahead tolerated */
	set.reserve_iops = 50;
	CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, NULL, NULL, &v, NULL, 0), 0);
	qos_vbd_stats(v, &st0);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 4; i++) {
			CU_ASSERT_EQUAL(qos_vbd_admit(v, &rd4k, &t[i], &retry), 0);
			CU_ASSERT(t[i].flags & QOS_TICKET_CAP);
			/* 50/s with one period of catch-up: 1.5 tokens due */
			CU_ASSERT_EQUAL(!!(t[i].flags & QOS_TICKET_RESV), i < 2);
		}
		CU_ASSERT_EQUAL(qos_vbd_admit(v, &rd4k, &t[4], &retry), -EAGAIN);
		CU_ASSERT(retry > fake_now);
		for (int i = 0; i < 4; i++)
			qos_vbd_cancel(v, &t[i]);
		qos_vbd_stats(v, &st);
		CU_ASSERT_EQUAL(st.credit_ns, st0.credit_ns);
		CU_ASSERT_EQUAL(st.inflight, 0);
		CU_ASSERT_EQUAL(st.ops, 0);
	}
	qos_vbd_remove(v);
	qos_sched_free(s);

	/* Device room comes back and goes to the waiting vbd. */
	s = new_sched(2 * COST4K, 0);
	a = new_vbd(s, 256, NULL, NULL);
	b = new_vbd(s, 256, count_wake, &wb);
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t[0], &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t[1], &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &t[2], &retry), 0); /* BOOST */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &t[3], &retry), -EAGAIN);
	qos_vbd_cancel(a, &t[0]);
	CU_ASSERT_EQUAL(wb, 0); /* still 2 in flight: full */
	qos_vbd_cancel(a, &t[1]);
	CU_ASSERT_EQUAL(wb, 1);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, 2 * COST4K); /* b's boosted request and its grant */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &t[3], &retry), 0);
	qos_vbd_complete(b, &t[2]);
	qos_vbd_complete(b, &t[3]);
	qos_vbd_stats(a, &st);
	CU_ASSERT_EQUAL(st.credit_ns, 0);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

static void test_boost_only_with_credit_and_nothing_in_flight(void)
{
	struct qos_sched *s = new_sched(COST4K, 1);
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *b = new_vbd(s, 256, NULL, NULL);
	struct qos_ticket ta, tb, tb2;
	struct qos_vbd_stats st;
	uint64_t retry;

	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta, &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0);
	CU_ASSERT(tb.flags & QOS_TICKET_BOOST);
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.state, QOS_STATE_BOOST);
	CU_ASSERT_EQUAL(st.boosts, 1);
	/* Something in flight: no second BOOST. */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb2, &retry), -EAGAIN);
	qos_vbd_complete(b, &tb);
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.state, QOS_STATE_OVER); /* it spent credit it had not earned yet */
	qos_vbd_remove(b);
	/* In debt: nothing in flight is not enough. */
	b = new_vbd(s, 256, NULL, NULL);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0);
	CU_ASSERT(tb.flags & QOS_TICKET_BOOST);
	qos_vbd_complete(b, &tb);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), -EAGAIN);
	qos_vbd_complete(a, &ta);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

/* Credit and debt stay within one period's share; idle credit decays; a newcomer cuts banks. */
static void test_credit_and_debt_bounded(void)
{
	struct qos_sched *s = new_sched(1000 * MS, 1); /* vrate fixed: budget 30 ms per period */
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *b = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *c;
	struct qos_vbd_stats st;
	struct qos_ticket t;
	uint64_t retry;

	for (int i = 0; i < 1000; i++) { /* 100 ms of device time in one period */
		CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t, &retry), 0);
		qos_vbd_complete(a, &t);
	}
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &t, &retry), 0);
	qos_vbd_complete(b, &t);
	fake_now += 30 * MS;
	qos_sched_tick(s);
	qos_vbd_stats(a, &st);
	CU_ASSERT_EQUAL(st.credit_ns, -15 * (int64_t)MS); /* debt floor: one period's share */
	CU_ASSERT_EQUAL(st.state, QOS_STATE_OVER);
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.credit_ns, 15 * (int64_t)MS - (int64_t)COST4K);
	CU_ASSERT_EQUAL(st.share_ppm, 500000);

	/* b alone for a while: its bank stops at one period of its (now whole) share. */
	for (int p = 0; p < 5; p++) {
		CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &t, &retry), 0);
		qos_vbd_complete(b, &t);
		fake_now += 30 * MS;
		qos_sched_tick(s);
	}
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.credit_ns, 30 * (int64_t)MS);
	CU_ASSERT_EQUAL(st.share_ppm, 1000000);
	/* a was idle all that time: its debt halved each period, towards 0. */
	qos_vbd_stats(a, &st);
	CU_ASSERT_EQUAL(st.state, QOS_STATE_IDLE);
	CU_ASSERT(st.credit_ns < 0 && st.credit_ns >= -15 * (int64_t)MS / 16);

	/* A newcomer shrinks b's share to a half at once, and b's bank with it. */
	c = new_vbd(s, 256, NULL, NULL);
	CU_ASSERT_EQUAL(qos_vbd_admit(c, &rd4k, &t, &retry), 0);
	qos_vbd_complete(c, &t);
	qos_vbd_stats(b, &st);
	CU_ASSERT_EQUAL(st.credit_ns, 15 * (int64_t)MS);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_vbd_remove(c);
	qos_sched_free(s);
}

static void test_remove_returns_room(void)
{
	struct qos_sched *s = new_sched(2 * COST4K, 0);
	int wb = 0;
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *b = new_vbd(s, 256, count_wake, &wb);
	struct qos_ticket t, tb;
	struct qos_sched_stats ss;
	uint64_t retry;

	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t, &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t, &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0); /* BOOST */
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &t, &retry), -EAGAIN);
	qos_vbd_remove(a); /* its two requests in flight are forgotten */
	CU_ASSERT_EQUAL(wb, 1);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.nvbd, 1);
	CU_ASSERT_EQUAL(ss.inflight_ns, 2 * COST4K);
	/* Removing a vbd holding a grant gives the granted room back too. */
	qos_vbd_remove(b);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, 0);
	CU_ASSERT_EQUAL(ss.nvbd, 0);
	CU_ASSERT_EQUAL(ss.weight_active, 0);
	qos_vbd_remove(NULL);
	qos_sched_free(s);
	qos_sched_free(NULL);
}

static void test_stats_rates(void)
{
	struct qos_sched *s = new_sched(1000 * MS, 0);
	struct qos_vbd *v = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd_stats st;
	struct qos_sched_stats ss;
	struct qos_ticket t;
	struct qos_io io = { QOS_OP_WRITE, 0, 8192 };
	uint64_t retry;

	/* 60 requests of 8 KiB per 30 ms period: 2000 IOPS, 16384000 bytes/s. */
	for (int p = 0; p < 40; p++) {
		for (int i = 0; i < 60; i++) {
			CU_ASSERT_EQUAL(qos_vbd_admit(v, &io, &t, &retry), 0);
			qos_vbd_complete(v, &t);
		}
		fake_now += 30 * MS;
		qos_sched_tick(s);
	}
	qos_vbd_stats(v, &st);
	CU_ASSERT_EQUAL(st.iops, 2000);
	CU_ASSERT_EQUAL(st.bps, 2000 * 8192);
	CU_ASSERT_EQUAL(st.ops, 2400);
	CU_ASSERT_EQUAL(st.state, QOS_STATE_UNDER);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.periods, 40);
	CU_ASSERT_EQUAL(ss.nactive, 1);
	CU_ASSERT_EQUAL(ss.period_ns, 30 * MS);
	/* A long silence runs the accounting once, lazily, and the vbd is idle after it. */
	fake_now += 10000 * MS;
	qos_vbd_stats(v, &st);
	CU_ASSERT_EQUAL(st.state, QOS_STATE_IDLE);
	CU_ASSERT_EQUAL(st.iops, 0);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.periods, 41);
	qos_vbd_remove(v);
	qos_sched_free(s);
}

/*
 * Several threads on one scheduler with the real clock: each plays a ring thread, admitting
 * requests and completing them itself, waiting for its wake flag or retry time when refused.
 * Everything must be accounted exactly once and the device end empty.
 */
#define THR_N 4
#define THR_REQS 20000

struct thr {
	struct qos_sched *s;
	struct qos_vbd *v;
	atomic_int woken;
	int done;
};

static void thr_wake(void *arg)
{
	atomic_store(&((struct thr *)arg)->woken, 1);
}

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	const struct qos_clock *mono = qos_clock_monotonic();
	struct qos_ticket tk[8];
	unsigned n = 0;
	uint64_t retry;

	while (t->done < THR_REQS) {
		if (n < 8 && t->done + (int)n < THR_REQS &&
		    qos_vbd_admit(t->v, &rd4k, &tk[n], &retry) == 0) {
			n++;
			continue;
		}
		if (n) {
			qos_vbd_complete(t->v, &tk[--n]);
			t->done++;
			continue;
		}
		/* Refused with nothing in flight: wait for the wake or the retry time. */
		while (!atomic_exchange(&t->woken, 0) && mono->now_ns(NULL) < retry)
			sched_yield();
	}
	return NULL;
}

static void test_threads(void)
{
	struct qos_params p;
	struct qos_sched *s;
	struct thr t[THR_N];
	pthread_t th[THR_N];
	struct qos_sched_stats ss;
	struct qos_vbd_stats st;

	qos_params_default(&p);
	qos_cost_model_flash(&p.cost, 1000000);
	p.period_ns = 1 * MS;
	CU_ASSERT_EQUAL_FATAL(qos_sched_new(&p, NULL, &s, NULL, 0), 0);
	for (int i = 0; i < THR_N; i++) {
		struct qos_vbd_settings set;

		memset(&t[i], 0, sizeof(t[i]));
		t[i].s = s;
		qos_vbd_settings_default(&set);
		set.weight = 100 * (i + 1);
		CU_ASSERT_EQUAL_FATAL(qos_vbd_add(s, &set, thr_wake, &t[i], &t[i].v, NULL, 0), 0);
	}
	for (int i = 0; i < THR_N; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	for (int i = 0; i < THR_N; i++)
		pthread_join(th[i], NULL);
	qos_sched_stats(s, &ss);
	CU_ASSERT_EQUAL(ss.inflight_ns, 0);
	CU_ASSERT_EQUAL(ss.nwaiting, 0);
	for (int i = 0; i < THR_N; i++) {
		qos_vbd_stats(t[i].v, &st);
		CU_ASSERT_EQUAL(st.ops, THR_REQS);
		CU_ASSERT_EQUAL(st.inflight, 0);
		qos_vbd_remove(t[i].v);
	}
	qos_sched_free(s);
}

/*
 * A vbd alone on the device is not held by the window (it has nobody to share with): every
 * request goes, without BOOST. Once a second vbd is active the window binds again.
 */
static void test_lone_vbd_not_windowed(void)
{
	struct qos_sched *s = new_sched(COST4K, 1); /* room for one 4 KiB read */
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *b;
	struct qos_ticket ta[16], tb, tx;
	uint64_t retry;

	for (int i = 0; i < 16; i++) {
		CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta[i], &retry), 0);
		CU_ASSERT_FALSE(ta[i].flags & QOS_TICKET_BOOST);
	}
	b = new_vbd(s, 256, NULL, NULL);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0);
	CU_ASSERT(tb.flags & QOS_TICKET_BOOST); /* the newcomer gets in at once */
	/* Two active vbds and a full window: a waits now. */
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &tx, &retry), -EAGAIN);
	for (int i = 0; i < 16; i++)
		qos_vbd_complete(a, &ta[i]);
	qos_vbd_complete(b, &tb);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

/*
 * qos_vbd_complete_at(): the latency the window is steered by ends at the device's completion
 * the caller reports, not when the caller got round to it.
 */
static void test_complete_at_measures_the_device(void)
{
	struct qos_sched *s = new_sched(COST4K, 1);
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_sched_stats st;
	struct qos_ticket t;
	uint64_t retry, t0;

	for (int i = 0; i < 4; i++) {
		t0 = fake_now;
		CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t, &retry), 0);
		CU_ASSERT(t.flags & QOS_TICKET_LONE);
		/* Done after its 100 us of service plus 50 us; reported 20 ms later. */
		fake_now = t0 + 20 * MS;
		qos_vbd_complete_at(a, &t, t0 + COST4K + 50000);
		fake_now = t0 + 31 * MS; /* the next period starts: accounting runs */
		qos_sched_tick(s);
	}
	qos_sched_stats(s, &st);
	CU_ASSERT(st.lat_base_ns >= 40000 && st.lat_base_ns <= 60000);
	/* 0: now. */
	t0 = fake_now;
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &t, &retry), 0);
	fake_now = t0 + 5 * MS;
	qos_vbd_complete_at(a, &t, 0);
	fake_now = t0 + 31 * MS;
	qos_sched_tick(s);
	qos_sched_stats(s, &st);
	CU_ASSERT(st.lat_base_ns > 60000); /* the 5 ms sample counts */
	qos_vbd_remove(a);
	qos_sched_free(s);
}

/*
 * A window nobody was refused against falls halfway towards what was in flight each period
 * (congestion window validation), so a once-high floor cannot keep it high.
 */
static void test_unused_window_falls(void)
{
	struct qos_sched *s = new_sched(100 * MS, 1); /* far more than is ever used */
	struct qos_vbd *a = new_vbd(s, 256, NULL, NULL);
	struct qos_vbd *b = new_vbd(s, 256, NULL, NULL);
	struct qos_sched_stats st;
	struct qos_ticket ta, tb;
	uint64_t retry, last = 100 * MS;

	for (int i = 0; i < 6; i++) {
		CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta, &retry), 0);
		CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0);
		fake_now += 2 * COST4K;
		qos_vbd_complete(a, &ta);
		qos_vbd_complete(b, &tb);
		fake_now += 30 * MS;
		qos_sched_tick(s);
		qos_sched_stats(s, &st);
		CU_ASSERT(st.window_ns < last); /* falls every period... */
		CU_ASSERT(st.window_ns >= 2 * COST4K); /* ...not below what was used */
		last = st.window_ns;
	}
	CU_ASSERT(last < 4 * MS); /* 100 ms halved six times towards 0.2 ms */
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
}

/*
 * One period of contention where granted room waits @delay_ns for its vbd to come and take it;
 * returns the window after the period's accounting.
 */
static uint64_t grant_delay_measured(uint64_t delay_ns, uint64_t *window_ns)
{
	struct qos_sched *s = new_sched(2 * COST4K, 1);
	int wa = 0, wb = 0;
	struct qos_vbd *a = new_vbd(s, 256, count_wake, &wa);
	struct qos_vbd *b = new_vbd(s, 256, count_wake, &wb);
	struct qos_sched_stats ss;
	struct qos_ticket ta, tb, tb2;
	uint64_t retry;

	/* a keeps one request in flight all along (so b is not alone); b fills the rest. */
	CU_ASSERT_EQUAL(qos_vbd_admit(a, &rd4k, &ta, &retry), 0);
	CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb, &retry), 0);
	for (int i = 0; i < 8; i++) {
		CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb2, &retry), -EAGAIN); /* full */
		fake_now += COST4K;
		qos_vbd_complete(b, &tb); /* the room is granted to b, which is woken... */
		fake_now += delay_ns;     /* ...and its thread comes this much later */
		CU_ASSERT_EQUAL(qos_vbd_admit(b, &rd4k, &tb2, &retry), 0);
		tb = tb2;
	}
	fake_now += COST4K;
	qos_vbd_complete(b, &tb);
	qos_vbd_complete(a, &ta);
	fake_now += 30 * MS;
	qos_sched_tick(s);
	qos_sched_stats(s, &ss);
	qos_vbd_remove(a);
	qos_vbd_remove(b);
	qos_sched_free(s);
	*window_ns = ss.window_ns;
	return ss.grant_delay_ns;
}

/*
 * Granted room that waits for its vbd's thread is counted in the window but not on the device:
 * the scheduler measures that wait (smoothed: a quarter of it after one period) and the
 * window's floor covers it.
 */
static void test_window_covers_grant_delay(void)
{
	uint64_t w0, w1;

	CU_ASSERT_EQUAL(grant_delay_measured(0, &w0), 0);
	CU_ASSERT_EQUAL(grant_delay_measured(800000, &w1), 800000 / 4);
	CU_ASSERT(w1 >= 800000 / 4 + 2 * COST4K);
}

static CU_TestInfo tests[] = {
	{ "params_validation", test_params_validation },
	{ "settings_validation", test_settings_validation },
	{ "admit_complete_and_seq", test_admit_complete_and_seq },
	{ "wait_and_grant", test_wait_and_grant },
	{ "grant_other_io_and_expiry", test_grant_other_io_and_expiry },
	{ "under_before_over", test_under_before_over },
	{ "cap_parks_until_exact_time", test_cap_parks_until_exact_time },
	{ "cancel_gives_everything_back", test_cancel_gives_everything_back },
	{ "boost_only_with_credit_and_nothing_in_flight",
	  test_boost_only_with_credit_and_nothing_in_flight },
	{ "credit_and_debt_bounded", test_credit_and_debt_bounded },
	{ "remove_returns_room", test_remove_returns_room },
	{ "stats_rates", test_stats_rates },
	{ "threads", test_threads },
	{ "lone_vbd_not_windowed", test_lone_vbd_not_windowed },
	{ "complete_at_measures_the_device", test_complete_at_measures_the_device },
	{ "unused_window_falls", test_unused_window_falls },
	{ "window_covers_grant_delay", test_window_covers_grant_delay },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("sched", NULL, NULL, tests)
