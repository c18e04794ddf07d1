/* test_cost.c - the linear cost model and its calibration from probe throughputs. */
#include "qos/qos.h"
#include "tests/harness.h"

#include <errno.h>
#include <string.h>

static void test_flash_model(void)
{
	struct qos_cost_model m;
	struct qos_io r4 = { QOS_OP_READ, 0, 4096 }, w4 = { QOS_OP_WRITE, 0, 4096 };
	struct qos_io r128 = { QOS_OP_READ, 0, 128 << 10 };

	qos_cost_model_flash(&m, 10000);
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &r4, 0), 100000);
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &w4, 1), 100000);
	/* 3/4 base + 32 pages of 1/4: a 128 KiB request is 8.75 4 KiB-equivalents */
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &r128, 0), 75000 + 32 * 25000);
}

static void test_linear_terms(void)
{
	struct qos_cost_model m = { .rd_page_ns = 1000, .rd_seq_base_ns = 2000,
				    .rd_rand_base_ns = 50000, .wr_page_ns = 3000,
				    .wr_seq_base_ns = 4000, .wr_rand_base_ns = 70000 };
	struct qos_io io = { QOS_OP_READ, 0, 8192 };

	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 1), 2000 + 2 * 1000);
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 0), 50000 + 2 * 1000);
	io.op = QOS_OP_WRITE;
	io.len_bytes = 6144; /* 1.5 pages: the per-byte part is not rounded to pages */
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 1), 4000 + 4500);
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 0), 70000 + 4500);
	/* Flush and discard move no data: a random write's base, whatever the length. */
	io.op = QOS_OP_FLUSH;
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 0), 70000);
	io.op = QOS_OP_DISCARD;
	io.len_bytes = 1ull << 40;
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 1), 70000);
	/* An absurd length is clamped, not overflowed. */
	io.op = QOS_OP_READ;
	io.len_bytes = UINT64_MAX;
	CU_ASSERT_EQUAL(qos_cost_ns(&m, &io, 0), 50000 + (1ull << 40) / 4096 * 1000);
}

/* What the six probes measure on a device that follows @m exactly. */
static void probe(const struct qos_cost_model *m, uint32_t big, struct qos_calib *c)
{
	struct qos_io io = { QOS_OP_READ, 0, 4096 };

	memset(c, 0, sizeof(*c));
	c->big_bytes = big;
	c->rd_rand_ns = qos_cost_ns(m, &io, 0);
	c->rd_seq_ns = qos_cost_ns(m, &io, 1);
	io.len_bytes = big;
	c->rd_big_ns = qos_cost_ns(m, &io, 1);
	io.op = QOS_OP_WRITE;
	c->wr_big_ns = qos_cost_ns(m, &io, 1);
	io.len_bytes = 4096;
	c->wr_rand_ns = qos_cost_ns(m, &io, 0);
	c->wr_seq_ns = qos_cost_ns(m, &io, 1);
}

static void test_calib_roundtrip(void)
{
	/* An HDD-like device: random requests cost a seek, sequential ones almost nothing. */
	struct qos_cost_model hdd = { .rd_page_ns = 27000, .rd_seq_base_ns = 20000,
				      .rd_rand_base_ns = 8000000, .wr_page_ns = 30000,
				      .wr_seq_base_ns = 25000, .wr_rand_base_ns = 9000000 };
	struct qos_cost_model got;
	struct qos_calib c;
	char why[128];

	probe(&hdd, QOS_CALIB_BIG_BYTES, &c);
	CU_ASSERT_EQUAL(qos_cost_model_from_calib(&c, &got, why, sizeof(why)), 0);
	/* The model is linear, so solving it at the probes gives it back exactly. */
	CU_ASSERT_EQUAL(memcmp(&got, &hdd, sizeof(got)), 0);

	/* The flash model calibrates back to itself (with a 256 KiB big probe). */
	qos_cost_model_flash(&hdd, 20000);
	probe(&hdd, 256 << 10, &c);
	CU_ASSERT_EQUAL(qos_cost_model_from_calib(&c, &got, NULL, 0), 0);
	CU_ASSERT_EQUAL(memcmp(&got, &hdd, sizeof(got)), 0);
	CU_ASSERT_EQUAL(got.rd_page_ns, 12500);
	CU_ASSERT_EQUAL(got.rd_rand_base_ns, 37500);
}

static void test_calib_noise_and_errors(void)
{
	struct qos_calib c = { .big_bytes = 1 << 20,
			       .rd_rand_ns = 1000000,
			       .rd_seq_ns = 1000000,
			       .rd_big_ns = 500000, /* noise: the big request was faster */
			       .wr_rand_ns = 1000000,
			       .wr_seq_ns = 1000000,
			       .wr_big_ns = 10000000 };
	struct qos_cost_model m;
	char why[128] = "";

	/* Negative terms become 0 instead of wrapping. */
	CU_ASSERT_EQUAL(qos_cost_model_from_calib(&c, &m, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(m.rd_page_ns, 0);
	CU_ASSERT_EQUAL(m.rd_seq_base_ns, 1000000);

	c.wr_seq_ns = 0;
	CU_ASSERT_EQUAL(qos_cost_model_from_calib(&c, &m, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "write sequential"));
	c.wr_seq_ns = 1000000;
	c.big_bytes = 4096;
	CU_ASSERT_EQUAL(qos_cost_model_from_calib(&c, &m, why, sizeof(why)), -EINVAL);
	c.big_bytes = 10000;
	CU_ASSERT_EQUAL(qos_cost_model_from_calib(&c, &m, why, sizeof(why)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "4 KiB"));
}

static void test_defaults_and_names(void)
{
	struct qos_params p;
	struct qos_vbd_settings s;

	qos_params_default(&p);
	CU_ASSERT_EQUAL(p.period_ns, 30000000);
	CU_ASSERT_EQUAL(p.qdelay_pct, QOS_QDELAY_DEFAULT_PCT);
	qos_vbd_settings_default(&s);
	CU_ASSERT_EQUAL(s.weight, 256);
	CU_ASSERT_EQUAL(s.cap_iops + s.cap_bps + s.reserve_iops + s.burst_iops, 0);
	CU_ASSERT_STRING_EQUAL(qos_state_name(QOS_STATE_PARKED), "parked");
	CU_ASSERT_STRING_EQUAL(qos_state_name(QOS_STATE_BOOST), "boost");
	CU_ASSERT(qos_clock_monotonic()->now_ns(NULL) > 0);
}

static CU_TestInfo tests[] = {
	{ "flash_model", test_flash_model },
	{ "linear_terms", test_linear_terms },
	{ "calib_roundtrip", test_calib_roundtrip },
	{ "calib_noise_and_errors", test_calib_noise_and_errors },
	{ "defaults_and_names", test_defaults_and_names },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("cost", NULL, NULL, tests)
