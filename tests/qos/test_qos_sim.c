/*
 * test_qos_sim.c - the simulation driver, and the scheduler's promises measured through it in
 * virtual time: weighted shares, work conservation, caps and bursts, reservations, a light
 * tenant beside a noisy one, BOOST on wake, weight changes, the cost model, a slowing device,
 * a wrong model, calibration. Runs are deterministic, so the bounds are tight.
 */
#include "qos/qos_sim.h"
#include "tests/harness.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define MS 1000000ull
#define SEC 1000000000ull

/* The default test device: 20000 4 KiB IOPS (50 us each) and 100 us of latency. */
static void cfg_init(struct qos_sim_cfg *c, uint64_t iops, uint64_t lat_ns)
{
	memset(c, 0, sizeof(*c));
	qos_simdev_params_flash(&c->dev, iops, lat_ns);
	qos_params_default(&c->sched);
	qos_cost_model_flash(&c->sched.cost, iops); /* as configured from the device's spec */
	c->measure_from_ns = 1 * SEC;
	c->seed = 42;
}

static void vbd(struct qos_sim_cfg *c, unsigned i, uint32_t weight, uint32_t qd, uint32_t bs)
{
	memset(&c->vbd[i], 0, sizeof(c->vbd[i]));
	c->vbd[i].set.weight = weight;
	c->vbd[i].wl.op = QOS_OP_READ;
	c->vbd[i].wl.bs_bytes = bs;
	c->vbd[i].wl.qd = qd;
	if (i + 1 > c->nvbd)
		c->nvbd = i + 1;
}

static struct qos_sim *run(const struct qos_sim_cfg *c, uint64_t until)
{
	struct qos_sim *sim = NULL;
	char why[200] = "";

	CU_ASSERT_EQUAL_FATAL(qos_sim_new(c, &sim, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL_FATAL(qos_sim_run(sim, until), 0);
	return sim;
}

static struct qos_sim_result res(struct qos_sim *sim, unsigned i)
{
	struct qos_sim_result r;

	qos_sim_result(sim, i, &r);
	return r;
}

/* Share of the device's time vbd @i got among the first @n. */
static double dev_share(struct qos_sim *sim, unsigned i, unsigned n)
{
	double tot = 0;

	for (unsigned k = 0; k < n; k++)
		tot += (double)res(sim, k).dev_ns;
	return tot > 0 ? (double)res(sim, i).dev_ns / tot : 0;
}

static double dev_util(struct qos_sim *sim, unsigned n)
{
	double tot = 0;

	for (unsigned k = 0; k < n; k++)
		tot += (double)res(sim, k).dev_ns;
	return tot / (double)res(sim, 0).span_ns;
}

#define WITHIN(x, want, rel) CU_ASSERT(fabs((x) / (want)-1.0) <= (rel))

/*
 * ---- the driver ----
 */

static void test_driver_baseline(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim, *again;
	struct qos_sim_result r, r2;
	const uint64_t *se;
	unsigned n;
	uint64_t sum = 0;
	char why[200];

	cfg_init(&c, 20000, 100000);
	c.no_qos = 1;
	c.series_ns = 100 * MS;
	vbd(&c, 0, 256, 32, 4096);
	sim = run(&c, 3 * SEC);
	r = res(sim, 0);
	CU_ASSERT_PTR_NULL(qos_sim_sched(sim));
	CU_ASSERT_PTR_NULL(qos_sim_vbd(sim, 0));
	WITHIN(r.iops, 20000, 0.001);
	CU_ASSERT_EQUAL(r.span_ns, 2 * SEC);
	/* QD32 on a device that overlaps 3: the queue is 29 deep, 32 x 50 us. */
	WITHIN((double)r.lat_mean_ns, 1600000, 0.01);
	se = qos_sim_series(sim, 0, &n);
	CU_ASSERT_EQUAL(n, 30);
	for (unsigned i = 0; i < n; i++)
		sum += se[i];
	CU_ASSERT(sum >= 59990 && sum <= 60000);

	/* Same config, same seed: the same run. */
	again = run(&c, 3 * SEC);
	r2 = res(again, 0);
	CU_ASSERT_EQUAL(r.ops, r2.ops);
	CU_ASSERT_EQUAL(r.lat_p99_ns, r2.lat_p99_ns);
	qos_sim_free(again);
	qos_sim_free(sim);

	/* A lone QD1 request sees exactly service + latency. */
	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 1, 4096);
	sim = run(&c, 2 * SEC);
	r = res(sim, 0);
	CU_ASSERT_EQUAL(r.lat_p50_ns, 150000);
	CU_ASSERT_EQUAL(r.lat_p99_ns, 150000);
	CU_ASSERT_EQUAL(r.lat_max_ns, 150000);
	CU_ASSERT_EQUAL(r.max_stall_ns, 150000);
	/* Changing the workload mid-run: from now on QD4 with 1 ms of think time. */
	c.vbd[0].wl.qd = 4;
	c.vbd[0].wl.think_ns = 1 * MS;
	qos_sim_set_workload(sim, 0, &c.vbd[0].wl);
	qos_sim_measure_restart(sim);
	CU_ASSERT_EQUAL(qos_sim_run(sim, 3 * SEC), 0);
	r = res(sim, 0);
	WITHIN(r.iops, 4.0 / 0.00115, 0.01);
	qos_sim_free(sim);

	c.nvbd = 0;
	CU_ASSERT_EQUAL(qos_sim_new(&c, &sim, why, sizeof(why)), -EINVAL);
	vbd(&c, 0, 256, 0, 4096);
	CU_ASSERT_EQUAL(qos_sim_new(&c, &sim, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "qd"));
	vbd(&c, 0, 0x10000, 1, 4096);
	CU_ASSERT_EQUAL(qos_sim_new(&c, &sim, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "weight"));
}

static void test_jain_index(void)
{
	double t[3] = { 1, 2, 4 }, w[3] = { 1, 2, 4 }, bad[3] = { 4, 2, 1 };

	CU_ASSERT_DOUBLE_EQUAL(qos_jain_weighted(t, w, 3), 1.0, 1e-12);
	/* x = 4, 1, 0.25: (5.25)^2 / (3 * 17.0625) */
	CU_ASSERT_DOUBLE_EQUAL(qos_jain_weighted(bad, w, 3), 27.5625 / 51.1875, 1e-12);
}

/*
 * ---- weights ----
 */

/* Three saturating vbds with weights 1:2:4 split the device 1:2:4 and keep it busy. */
static void test_weights_1_2_4(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim, *base;
	double t[3], w[3] = { 1, 2, 4 }, agg = 0, agg_base = 0;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 100, 32, 4096);
	vbd(&c, 1, 200, 32, 4096);
	vbd(&c, 2, 400, 32, 4096);
	sim = run(&c, 6 * SEC);
	c.no_qos = 1;
	base = run(&c, 6 * SEC);
	for (unsigned i = 0; i < 3; i++) {
		t[i] = res(sim, i).iops;
		agg += t[i];
		agg_base += res(base, i).iops;
		WITHIN(dev_share(sim, i, 3), w[i] / 7, 0.05);
	}
	CU_ASSERT(qos_jain_weighted(t, w, 3) >= 0.99);
	CU_ASSERT(agg >= 0.95 * agg_base);
	CU_ASSERT(agg >= 0.95 * 20000);
	qos_sim_free(base);
	qos_sim_free(sim);
}

/* Unreachable caps cost (virtually) no throughput. */
static void test_unreachable_limits_keep_throughput(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim, *base;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 32, 4096);
	vbd(&c, 1, 256, 32, 16384);
	c.vbd[0].set.cap_iops = 1000000;
	c.vbd[1].set.cap_bps = 10ull << 30;
	sim = run(&c, 5 * SEC);
	c.no_qos = 1;
	base = run(&c, 5 * SEC);
	CU_ASSERT(dev_util(sim, 2) >= 0.97 * dev_util(base, 2));
	qos_sim_free(base);
	qos_sim_free(sim);
}

/* An idle vbd's share goes to the busy ones. */
static void test_idle_share_redistributed(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 32, 4096);
	vbd(&c, 1, 256, 32, 4096);
	vbd(&c, 2, 256, 32, 4096);
	c.vbd[2].wl.stop_ns = 1 * SEC;
	c.measure_from_ns = 2 * SEC;
	sim = run(&c, 5 * SEC);
	CU_ASSERT_EQUAL(res(sim, 2).ops, 0);
	WITHIN(res(sim, 0).iops, 10000, 0.05);
	WITHIN(res(sim, 1).iops, 10000, 0.05);
	CU_ASSERT(dev_util(sim, 3) >= 0.95);
	qos_sim_free(sim);
}

struct wchange {
	unsigned vbd;
	uint32_t weight;
};

static void set_weight(struct qos_sim *sim, void *arg)
{
	struct wchange *wc = arg;
	struct qos_vbd_settings s;

	qos_vbd_settings_default(&s);
	s.weight = wc->weight;
	CU_ASSERT_EQUAL(qos_vbd_set(qos_sim_vbd(sim, wc->vbd), &s, NULL, 0), 0);
}

/* A weight change shows in the shares within 3 periods (here: from the first whole one). */
static void test_weight_change_within_3_periods(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim = NULL;
	struct wchange wc = { 0, 768 };
	const uint64_t *a, *b;
	unsigned na, nb, change = 67; /* the 30 ms bucket the change falls in */

	cfg_init(&c, 20000, 100000);
	c.series_ns = 30 * MS;
	vbd(&c, 0, 256, 32, 4096);
	vbd(&c, 1, 256, 32, 4096);
	CU_ASSERT_EQUAL_FATAL(qos_sim_new(&c, &sim, NULL, 0), 0);
	CU_ASSERT_EQUAL(qos_sim_at(sim, change * 30 * MS + 5 * MS, set_weight, &wc), 0);
	CU_ASSERT_EQUAL_FATAL(qos_sim_run(sim, 4 * SEC), 0);
	a = qos_sim_series(sim, 0, &na);
	b = qos_sim_series(sim, 1, &nb);
	CU_ASSERT_EQUAL_FATAL(na, nb);
	for (unsigned i = 10; i < na; i++) {
		double share = (double)a[i] / (double)(a[i] + b[i]);

		if (i < change) {
			WITHIN(share, 0.5, 0.05);
		} else if (i >= change + 3) {
			WITHIN(share, 0.75, 0.05);
		}
	}
	qos_sim_free(sim);
}

/*
 * ---- caps, bursts, reservations ----
 */

static void test_cap_iops_and_bps(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;
	struct qos_sim_result r;
	struct qos_vbd_stats st;

	/* IOPS cap beside a saturating neighbour: the cap holds, the neighbour gets the rest. */
	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 8, 4096);
	vbd(&c, 1, 256, 32, 4096);
	c.vbd[0].set.cap_iops = 1000;
	sim = run(&c, 11 * SEC);
	r = res(sim, 0);
	WITHIN(r.iops, 1000, 0.05);
	CU_ASSERT(r.max_stall_ns <= 30 * MS);
	CU_ASSERT(res(sim, 1).iops >= 0.95 * 19000);
	qos_vbd_stats(qos_sim_vbd(sim, 0), &st);
	CU_ASSERT(st.parked_ns > 9 * SEC);
	qos_sim_free(sim);

	/* A bytes/s cap holds for big requests, and is not work-conserving: alone it still holds. */
	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 8, 65536);
	c.vbd[0].set.cap_bps = 10 << 20;
	sim = run(&c, 11 * SEC);
	r = res(sim, 0);
	WITHIN(r.bps, 10 << 20, 0.05);
	CU_ASSERT(r.max_stall_ns <= 30 * MS);
	qos_sim_free(sim);

	/* A small cap's stalls are its request spacing, not the period. */
	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 1, 4096);
	c.vbd[0].set.cap_iops = 50;
	sim = run(&c, 11 * SEC);
	r = res(sim, 0);
	WITHIN(r.iops, 50, 0.05);
	CU_ASSERT(r.max_stall_ns <= 20 * MS + 150000);
	qos_sim_free(sim);
}

/* A burst runs at burst_iops for burst_seconds after a quiet spell, then at the cap. */
static void test_burst(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;
	const uint64_t *se;
	unsigned n;

	cfg_init(&c, 20000, 100000);
	c.series_ns = 250 * MS;
	vbd(&c, 0, 256, 8, 4096);
	c.vbd[0].set.cap_iops = 1000;
	c.vbd[0].set.burst_iops = 4000;
	c.vbd[0].set.burst_seconds = 2;
	sim = run(&c, 6 * SEC);
	se = qos_sim_series(sim, 0, &n);
	CU_ASSERT_EQUAL_FATAL(n, 24);
	for (unsigned i = 1; i < 7; i++) /* 0.25..1.75 s: at the burst rate */
		WITHIN((double)se[i] * 4, 4000, 0.05);
	for (unsigned i = 10; i < n; i++) /* 2.5 s on: at the cap */
		WITHIN((double)se[i] * 4, 1000, 0.05);
	qos_sim_free(sim);
}

/* A reserved vbd of weight 1 gets its reservation beside two saturating vbds of weight 1000. */
static void test_reservation_honoured(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 1, 32, 4096);
	vbd(&c, 1, 1000, 32, 4096);
	vbd(&c, 2, 1000, 32, 4096);
	c.vbd[0].set.reserve_iops = 5000;
	sim = run(&c, 6 * SEC);
	CU_ASSERT(res(sim, 0).iops >= 0.95 * 5000);
	CU_ASSERT(res(sim, 0).iops <= 1.05 * 5000);
	WITHIN(res(sim, 1).iops, 7500, 0.05);
	WITHIN(res(sim, 2).iops, 7500, 0.05);
	qos_sim_free(sim);

	/* Without it, weight 1 gets next to nothing: the reservation is what did it. */
	c.vbd[0].set.reserve_iops = 0;
	sim = run(&c, 6 * SEC);
	CU_ASSERT(res(sim, 0).iops < 100);
	qos_sim_free(sim);

	/* A light reserved vbd (QD1) too. */
	vbd(&c, 0, 1, 1, 4096);
	c.vbd[0].set.reserve_iops = 3000;
	sim = run(&c, 6 * SEC);
	CU_ASSERT(res(sim, 0).iops >= 0.95 * 3000);
	qos_sim_free(sim);
}

/*
 * ---- latency ----
 */

/*
 * A QD1 vbd beside a QD64 vbd of equal weight keeps p99 within 2x of its p99 alone. @think_ns:
 * the light vbd's mean pause between requests, random (0 = back to back).
 */
static void noisy_neighbour(uint64_t iops, uint64_t lat_ns, uint64_t think_ns)
{
	struct qos_sim_cfg c;
	struct qos_sim *solo, *both, *noqos;
	uint64_t p99_solo;

	cfg_init(&c, iops, lat_ns);
	vbd(&c, 0, 256, 1, 4096);
	c.vbd[0].wl.think_ns = think_ns;
	c.vbd[0].wl.think_random = 1;
	solo = run(&c, 4 * SEC);
	p99_solo = res(solo, 0).lat_p99_ns;
	vbd(&c, 1, 256, 64, 4096);
	both = run(&c, 4 * SEC);
	CU_ASSERT(res(both, 0).lat_p99_ns <= 2 * p99_solo);
	CU_ASSERT(dev_util(both, 2) >= 0.95); /* and the device stays busy */
	/* Without QoS the light vbd queues behind the 64 (the test would notice). */
	c.no_qos = 1;
	noqos = run(&c, 4 * SEC);
	CU_ASSERT(res(noqos, 0).lat_p99_ns > 4 * p99_solo);
	qos_sim_free(noqos);
	qos_sim_free(both);
	qos_sim_free(solo);
}

static void test_noisy_neighbour(void)
{
	noisy_neighbour(20000, 100000, 0); /* 50 us service, 100 us latency */
	noisy_neighbour(20000, 100000, 200000);
	noisy_neighbour(100000, 80000, 0); /* NVMe-like: 10 us service, 80 us latency */
	noisy_neighbour(100000, 80000, 100000);
}

/* A vbd waking from idle is served at once (BOOST) while two others saturate the device. */
static void test_boost_on_wake(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *solo, *sim;
	struct qos_sim_result r;
	struct qos_vbd_stats st;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 1, 4096);
	c.vbd[0].wl.think_ns = 50 * MS;
	solo = run(&c, 4 * SEC);
	vbd(&c, 1, 256, 32, 4096);
	vbd(&c, 2, 256, 32, 4096);
	c.vbd[0].wl.start_ns = 2 * SEC;
	c.measure_from_ns = 2 * SEC;
	sim = run(&c, 4 * SEC);
	r = res(sim, 0);
	CU_ASSERT(r.ops >= 35);
	CU_ASSERT(r.lat_max_ns <= 2 * res(solo, 0).lat_p99_ns);
	qos_vbd_stats(qos_sim_vbd(sim, 0), &st);
	CU_ASSERT(st.boosts >= r.ops);
	qos_vbd_stats(qos_sim_vbd(sim, 1), &st);
	CU_ASSERT(st.boosts <= 1); /* a saturating vbd is never idle: at most its first request */
	qos_sim_free(sim);
	qos_sim_free(solo);
}

/* Banked credit and debt are bounded: a newcomer gets its share within a period or so. */
static void test_newcomer_after_a_long_solo(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;
	const uint64_t *a, *b;
	unsigned na, nb;

	cfg_init(&c, 20000, 100000);
	c.series_ns = 30 * MS;
	vbd(&c, 0, 256, 32, 4096);
	vbd(&c, 1, 256, 32, 4096);
	c.vbd[1].wl.start_ns = 2 * SEC + 15 * MS; /* bucket 67 */
	sim = run(&c, 3 * SEC);
	a = qos_sim_series(sim, 0, &na);
	b = qos_sim_series(sim, 1, &nb);
	for (unsigned i = 68; i < na; i++)
		WITHIN((double)b[i] / (double)(a[i] + b[i]), 0.5, 0.05);
	/* The device never went idle through the change. */
	for (unsigned i = 1; i < na; i++)
		CU_ASSERT(a[i] + b[i] >= 0.95 * 600);
	qos_sim_free(sim);
}

/*
 * ---- cost model and capacity ----
 */

/* 128 KiB and 4 KiB requests of equal weight get equal device time, not equal counts. */
static void test_cost_model_equal_device_time(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;
	struct qos_io big = { QOS_OP_READ, 0, 128 << 10 }, small = { QOS_OP_READ, 0, 4096 };
	double ratio;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 256, 8, 128 << 10);
	vbd(&c, 1, 256, 32, 4096);
	sim = run(&c, 6 * SEC);
	WITHIN(dev_share(sim, 0, 2), 0.5, 0.05);
	ratio = (double)qos_cost_ns(&c.dev.cost, &big, 0) / (double)qos_cost_ns(&c.dev.cost, &small, 0);
	WITHIN((double)res(sim, 1).ops / (double)res(sim, 0).ops, ratio, 0.05);
	CU_ASSERT(dev_util(sim, 2) >= 0.95);
	qos_sim_free(sim);
}

static void set_speed(struct qos_sim *sim, void *arg)
{
	qos_simdev_set_speed(qos_sim_dev(sim), *(uint32_t *)arg);
}

static void restart(struct qos_sim *sim, void *arg)
{
	(void)arg;
	qos_sim_measure_restart(sim);
}

/* The device slows to half its speed: vrate follows and the weights still hold. */
static void test_device_slows_down(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim = NULL;
	struct qos_sched_stats ss;
	uint32_t half = 50;

	cfg_init(&c, 20000, 100000);
	vbd(&c, 0, 100, 32, 4096);
	vbd(&c, 1, 300, 32, 4096);
	CU_ASSERT_EQUAL_FATAL(qos_sim_new(&c, &sim, NULL, 0), 0);
	qos_sim_at(sim, 2 * SEC, set_speed, &half);
	qos_sim_at(sim, 3 * SEC, restart, NULL);
	CU_ASSERT_EQUAL_FATAL(qos_sim_run(sim, 6 * SEC), 0);
	WITHIN(dev_share(sim, 0, 2), 0.25, 0.05);
	WITHIN(res(sim, 0).iops + res(sim, 1).iops, 10000, 0.05);
	qos_sched_stats(qos_sim_sched(sim), &ss);
	WITHIN((double)ss.vrate_ppm, 500000, 0.1);
	qos_sim_free(sim);
}

/* A cost model 4x off either way: vrate absorbs it, shares and throughput hold. */
static void test_wrong_model(void)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;
	struct qos_sched_stats ss;
	const uint64_t model[2] = { 80000, 5000 };

	for (int k = 0; k < 2; k++) {
		cfg_init(&c, 20000, 100000);
		qos_cost_model_flash(&c.sched.cost, model[k]);
		c.measure_from_ns = 2 * SEC;
		vbd(&c, 0, 100, 32, 4096);
		vbd(&c, 1, 300, 32, 4096);
		sim = run(&c, 6 * SEC);
		WITHIN(dev_share(sim, 0, 2), 0.25, 0.05);
		CU_ASSERT(dev_util(sim, 2) >= 0.95);
		qos_sched_stats(qos_sim_sched(sim), &ss);
		WITHIN((double)ss.vrate_ppm, 1e6 * 20000 / (double)model[k], 0.1);
		qos_sim_free(sim);
	}
}

/* The calibration probes, run against simulated devices, give back their cost models. */
static uint64_t probe_ns(const struct qos_simdev_params *dev, enum qos_op op, uint32_t bs, int seq)
{
	struct qos_sim_cfg c;
	struct qos_sim *sim;
	struct qos_sim_result r;

	memset(&c, 0, sizeof(c));
	c.dev = *dev;
	c.no_qos = 1;
	c.measure_from_ns = 100 * MS;
	vbd(&c, 0, 256, QOS_CALIB_PROBE_QD, bs);
	c.vbd[0].wl.op = op;
	c.vbd[0].wl.seq = seq;
	c.vbd[0].wl.vol_bytes = 64ull << 30;
	sim = run(&c, 1100 * MS);
	r = res(sim, 0);
	qos_sim_free(sim);
	return r.ops ? r.span_ns / r.ops : 0;
}

static void test_calibration_on_simdev(void)
{
	struct qos_simdev_params devs[2];
	struct qos_cost_model got;
	char why[160];

	qos_simdev_params_flash(&devs[0], 20000, 100000);
	devs[1].cost = (struct qos_cost_model){ .rd_page_ns = 30000, .rd_seq_base_ns = 40000,
						.rd_rand_base_ns = 7000000, .wr_page_ns = 35000,
						.wr_seq_base_ns = 60000, .wr_rand_base_ns = 8000000 };
	devs[1].lat_ns = 0;
	for (int k = 0; k < 2; k++) {
		const struct qos_cost_model *m = &devs[k].cost;
		struct qos_calib cal = { .big_bytes = QOS_CALIB_BIG_BYTES };

		cal.rd_rand_ns = probe_ns(&devs[k], QOS_OP_READ, 4096, 0);
		cal.rd_seq_ns = probe_ns(&devs[k], QOS_OP_READ, 4096, 1);
		cal.rd_big_ns = probe_ns(&devs[k], QOS_OP_READ, QOS_CALIB_BIG_BYTES, 1);
		cal.wr_rand_ns = probe_ns(&devs[k], QOS_OP_WRITE, 4096, 0);
		cal.wr_seq_ns = probe_ns(&devs[k], QOS_OP_WRITE, 4096, 1);
		cal.wr_big_ns = probe_ns(&devs[k], QOS_OP_WRITE, QOS_CALIB_BIG_BYTES, 1);
		CU_ASSERT_EQUAL_FATAL(qos_cost_model_from_calib(&cal, &got, why, sizeof(why)), 0);
		WITHIN((double)got.rd_page_ns, (double)m->rd_page_ns, 0.01);
		WITHIN((double)got.wr_page_ns, (double)m->wr_page_ns, 0.01);
		WITHIN((double)got.rd_rand_base_ns, (double)m->rd_rand_base_ns, 0.01);
		WITHIN((double)got.wr_rand_base_ns, (double)m->wr_rand_base_ns, 0.01);
		WITHIN((double)got.rd_seq_base_ns, (double)m->rd_seq_base_ns, 0.02);
		WITHIN((double)got.wr_seq_base_ns, (double)m->wr_seq_base_ns, 0.02);
	}
}

static CU_TestInfo tests[] = {
	{ "driver_baseline", test_driver_baseline },
	{ "jain_index", test_jain_index },
	{ "weights_1_2_4", test_weights_1_2_4 },
	{ "unreachable_limits_keep_throughput", test_unreachable_limits_keep_throughput },
	{ "idle_share_redistributed", test_idle_share_redistributed },
	{ "weight_change_within_3_periods", test_weight_change_within_3_periods },
	{ "cap_iops_and_bps", test_cap_iops_and_bps },
	{ "burst", test_burst },
	{ "reservation_honoured", test_reservation_honoured },
	{ "noisy_neighbour", test_noisy_neighbour },
	{ "boost_on_wake", test_boost_on_wake },
	{ "newcomer_after_a_long_solo", test_newcomer_after_a_long_solo },
	{ "cost_model_equal_device_time", test_cost_model_equal_device_time },
	{ "device_slows_down", test_device_slows_down },
	{ "wrong_model", test_wrong_model },
	{ "calibration_on_simdev", test_calibration_on_simdev },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("qos_sim", NULL, NULL, tests)
