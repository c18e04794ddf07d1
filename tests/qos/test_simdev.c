/* test_simdev.c - the simulated device: spec parsing, FIFO service timing, latency, speed. */
#include "qos/simdev.h"
#include "tests/harness.h"

#include <errno.h>
#include <string.h>

static uint64_t fake_now;

static uint64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static const struct qos_clock clk = { fake_clock, NULL };

static void test_parse(void)
{
	struct qos_simdev_params p;
	struct qos_io io = { QOS_OP_READ, 0, 4096 };
	char why[160];

	CU_ASSERT_EQUAL(qos_simdev_parse("20000", &p, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(qos_cost_ns(&p.cost, &io, 0), 50000);
	CU_ASSERT_EQUAL(p.lat_ns, QOS_SIMDEV_LAT_DEFAULT_NS);
	CU_ASSERT_EQUAL(qos_simdev_parse("100000:80", &p, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(qos_cost_ns(&p.cost, &io, 0), 10000);
	CU_ASSERT_EQUAL(p.lat_ns, 80000);
	CU_ASSERT_EQUAL(qos_simdev_parse("5000:0", &p, NULL, 0), 0);
	CU_ASSERT_EQUAL(p.lat_ns, 0);

	CU_ASSERT_EQUAL(qos_simdev_parse("", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "IOPS"));
	CU_ASSERT_EQUAL(qos_simdev_parse("0", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_EQUAL(qos_simdev_parse("12k", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_EQUAL(qos_simdev_parse("1000000001", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_EQUAL(qos_simdev_parse("1000:", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "LAT_US"));
	CU_ASSERT_EQUAL(qos_simdev_parse("1000:-5", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_EQUAL(qos_simdev_parse("1000:10000001", &p, why, sizeof(why)), -EINVAL);
	CU_ASSERT_EQUAL(qos_simdev_parse(":100", &p, why, sizeof(why)), -EINVAL);
}

/* One FIFO server, then a fixed latency: service times add up, latency overlaps. */
static void test_fifo_and_latency(void)
{
	struct qos_simdev_params p;
	struct qos_simdev *d;
	struct qos_simdev_stats st;
	struct qos_io io = { QOS_OP_READ, 1 << 30, 4096 };
	struct qos_io big = { QOS_OP_WRITE, 0, 128 << 10 };
	uint64_t svc;

	qos_simdev_params_flash(&p, 10000, 100000); /* 100 us per 4 KiB, then 100 us latency */
	fake_now = 5000000;
	CU_ASSERT_EQUAL_FATAL(qos_simdev_new(&p, &clk, &d), 0);
	CU_ASSERT_EQUAL(qos_simdev_submit(d, &io, &svc), 5000000 + 100000 + 100000);
	CU_ASSERT_EQUAL(svc, 100000);
	io.offset_bytes = 0;
	CU_ASSERT_EQUAL(qos_simdev_submit(d, &io, NULL), 5000000 + 200000 + 100000);
	CU_ASSERT_EQUAL(qos_simdev_submit(d, &big, &svc), 5000000 + 200000 + 875000 + 100000);
	CU_ASSERT_EQUAL(svc, 875000); /* 8.75 4 KiB-equivalents */
	/* After an idle gap, service starts at submission again. */
	fake_now = 10000000;
	CU_ASSERT_EQUAL(qos_simdev_submit(d, &io, NULL), 10000000 + 200000);
	qos_simdev_stats(d, &st);
	CU_ASSERT_EQUAL(st.ops, 4);
	CU_ASSERT_EQUAL(st.bytes, 3 * 4096 + (128 << 10));
	CU_ASSERT_EQUAL(st.busy_ns, 3 * 100000 + 875000);

	/* Half speed: every request takes twice as long. */
	qos_simdev_set_speed(d, 50);
	fake_now = 20000000;
	CU_ASSERT_EQUAL(qos_simdev_submit(d, &io, &svc), 20000000 + 200000 + 100000);
	CU_ASSERT_EQUAL(svc, 200000);
	qos_simdev_set_speed(d, 0); /* clamped to 1% */
	fake_now = 30000000;
	CU_ASSERT_EQUAL(qos_simdev_submit(d, &io, &svc), 30000000 + 10000000 + 100000);
	qos_simdev_free(d);
	qos_simdev_free(NULL);
}

/* Sequential requests (within 16 MiB of the previous end) cost the sequential base. */
static void test_sequential(void)
{
	struct qos_simdev_params p = {
		.cost = { .rd_page_ns = 10000, .rd_seq_base_ns = 1000, .rd_rand_base_ns = 5000000,
			  .wr_page_ns = 10000, .wr_seq_base_ns = 1000, .wr_rand_base_ns = 5000000 },
		.lat_ns = 0,
	};
	struct qos_simdev *d;
	struct qos_io io = { QOS_OP_READ, 0, 4096 };
	uint64_t svc;

	fake_now = 0;
	CU_ASSERT_EQUAL_FATAL(qos_simdev_new(&p, &clk, &d), 0);
	qos_simdev_submit(d, &io, &svc);
	CU_ASSERT_EQUAL(svc, 5010000); /* the first one is random: nothing to follow */
	io.offset_bytes = 4096;
	qos_simdev_submit(d, &io, &svc);
	CU_ASSERT_EQUAL(svc, 11000);
	io.offset_bytes = 4096 + 8192 + (16 << 20); /* just beyond the window */
	qos_simdev_submit(d, &io, &svc);
	CU_ASSERT_EQUAL(svc, 5010000);
	/* A flush moves no data: a random write's base, and it does not move the cursor. */
	io.op = QOS_OP_FLUSH;
	qos_simdev_submit(d, &io, &svc);
	CU_ASSERT_EQUAL(svc, 5000000);
	qos_simdev_free(d);

	memset(&p.cost, 0, sizeof(p.cost));
	CU_ASSERT_EQUAL(qos_simdev_new(&p, &clk, &d), -EINVAL);
}

static CU_TestInfo tests[] = {
	{ "parse", test_parse },
	{ "fifo_and_latency", test_fifo_and_latency },
	{ "sequential", test_sequential },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("simdev", NULL, NULL, tests)
