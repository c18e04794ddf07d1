/*
 * test_qos_model.c - the pool's device model file: round trip, a hand-written file, refusals.
 */
#include "blkback/qos_model.h"
#include "tests/harness.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char pool[512];

static int suite_init(void)
{
	snprintf(pool, sizeof(pool), "%s/qos_model", harness_tmpdir());
	return mkdir(pool, 0755) ? -1 : 0;
}

/* Write @text as the pool's device.json (making POOL/qos). */
static void write_model(const char *text)
{
	char path[1024], dir[1024];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/qos", pool);
	mkdir(dir, 0755);
	CU_ASSERT_EQUAL_FATAL(qos_model_path(path, sizeof(path), pool), 0);
	f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(text, f);
	CU_ASSERT_EQUAL_FATAL(fclose(f), 0);
}

static void remove_model(void)
{
	char path[1024];

	qos_model_path(path, sizeof(path), pool);
	unlink(path);
}

static void test_path(void)
{
	char buf[1024], small[8];

	CU_ASSERT_EQUAL(qos_model_path(buf, sizeof(buf), "/p"), 0);
	CU_ASSERT_STRING_EQUAL(buf, "/p/qos/device.json");
	CU_ASSERT_EQUAL(qos_model_path(small, sizeof(small), "/p"), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(qos_model_path(buf, sizeof(buf), NULL), -EINVAL);
}

static void test_missing_is_enoent(void)
{
	struct qos_cost_model m = { 1, 2, 3, 4, 5, 6 }, before = m;
	char why[256] = "";

	remove_model();
	CU_ASSERT_EQUAL(qos_model_load(pool, &m, why, sizeof(why)), -ENOENT);
	CU_ASSERT_EQUAL(memcmp(&m, &before, sizeof(m)), 0);
	/* A pool without a qos directory at all is the same: the caller's default. */
	CU_ASSERT_EQUAL(qos_model_load("/nonexistent/pool", &m, why, sizeof(why)), -ENOENT);
}

/* Save with probe results, load it back, and check what the file says for the record. */
static void test_roundtrip(void)
{
	struct qos_calib c = { QOS_CALIB_BIG_BYTES, 9000, 7000, 300000, 12000, 8000, 700000 };
	struct qos_cost_model m, l;
	struct json_object *o, *v, *k;
	char why[256] = "", path[1024];
	time_t before = time(NULL);
	struct stat st;

	remove_model();
	CU_ASSERT_EQUAL_FATAL(qos_cost_model_from_calib(&c, &m, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL_FATAL(qos_model_save(pool, &m, &c, "calibrate vm1"), 0);
	CU_ASSERT_EQUAL_FATAL(qos_model_load(pool, &l, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(memcmp(&m, &l, sizeof(m)), 0);

	qos_model_path(path, sizeof(path), pool);
	CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0644);
	o = json_object_from_file(path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	CU_ASSERT_FATAL(json_object_object_get_ex(o, "source", &v));
	CU_ASSERT_STRING_EQUAL(json_object_get_string(v), "calibrate vm1");
	CU_ASSERT_FATAL(json_object_object_get_ex(o, "saved", &v));
	CU_ASSERT(json_object_get_int64(v) >= (int64_t)before);
	CU_ASSERT(json_object_get_int64(v) <= (int64_t)time(NULL));
	CU_ASSERT_FATAL(json_object_object_get_ex(o, "calib", &k));
	CU_ASSERT_FATAL(json_object_object_get_ex(k, "big_bytes", &v));
	CU_ASSERT_EQUAL(json_object_get_int64(v), QOS_CALIB_BIG_BYTES);
	CU_ASSERT_FATAL(json_object_object_get_ex(k, "wr_big_ns", &v));
	CU_ASSERT_EQUAL(json_object_get_int64(v), 700000);
	json_object_put(o);

	/* Without probe results there is no "calib"; a second save replaces the first. */
	m.rd_page_ns = 1234;
	CU_ASSERT_EQUAL_FATAL(qos_model_save(pool, &m, NULL, "config"), 0);
	CU_ASSERT_EQUAL_FATAL(qos_model_load(pool, &l, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(l.rd_page_ns, 1234);
	o = json_object_from_file(path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	CU_ASSERT_FALSE(json_object_object_get_ex(o, "calib", &k));
	json_object_put(o);
}

/* Save makes POOL/qos when a fresh pool has none, and leaves no temporary file behind. */
static void test_save_makes_dir(void)
{
	struct qos_cost_model m = { 10, 0, 90, 20, 0, 180 }, l;
	char fresh[1024], cmd[1200], why[256];
	FILE *p;
	int n;

	snprintf(fresh, sizeof(fresh), "%s/fresh", harness_tmpdir());
	CU_ASSERT_EQUAL_FATAL(mkdir(fresh, 0755), 0);
	CU_ASSERT_EQUAL_FATAL(qos_model_save(fresh, &m, NULL, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(qos_model_load(fresh, &l, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(memcmp(&m, &l, sizeof(m)), 0);
	snprintf(cmd, sizeof(cmd), "ls -A '%s/qos' | wc -l", fresh);
	p = popen(cmd, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_EQUAL(fscanf(p, "%d", &n), 1);
	pclose(p);
	CU_ASSERT_EQUAL(n, 1);
	/* A pool path that is a file cannot hold the directory. */
	CU_ASSERT_EQUAL(qos_model_save("/dev/null", &m, NULL, NULL), -ENOTDIR);
}

/* "Given in the pool's config": just the six coefficients, by hand, loads; extras ignored. */
static void test_hand_written(void)
{
	struct qos_cost_model m;
	char why[256] = "";

	write_model("{ \"rd_page_ns\": 5000, \"rd_seq_base_ns\": 20000,\n"
		    "  \"rd_rand_base_ns\": 8000000, \"wr_page_ns\": 6000,\n"
		    "  \"wr_seq_base_ns\": 30000, \"wr_rand_base_ns\": 9000000,\n"
		    "  \"comment\": \"7200 rpm disk, from its data sheet\" }\n");
	CU_ASSERT_EQUAL_FATAL(qos_model_load(pool, &m, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(m.rd_page_ns, 5000);
	CU_ASSERT_EQUAL(m.rd_seq_base_ns, 20000);
	CU_ASSERT_EQUAL(m.rd_rand_base_ns, 8000000);
	CU_ASSERT_EQUAL(m.wr_page_ns, 6000);
	CU_ASSERT_EQUAL(m.wr_seq_base_ns, 30000);
	CU_ASSERT_EQUAL(m.wr_rand_base_ns, 9000000);

	/* Zero bases are a valid model as long as a page costs something (and 1 s is allowed). */
	write_model("{\"rd_page_ns\":1,\"rd_seq_base_ns\":0,\"rd_rand_base_ns\":0,"
		    "\"wr_page_ns\":1000000000,\"wr_seq_base_ns\":0,\"wr_rand_base_ns\":0}");
	CU_ASSERT_EQUAL(qos_model_load(pool, &m, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(m.wr_page_ns, 1000000000);
}

/* Each refusal: -EINVAL, one sentence naming the file and the field, @m untouched. */
static void test_refusals(void)
{
	static const struct {
		const char *text;
		const char *word; /**< must appear in the sentence */
	} bad[] = {
		{ "", "not a JSON object" },
		{ "{\"rd_page_ns\": 5", "not a JSON object" },
		{ "[1,2,3]", "not a JSON object" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1,\"wr_page_ns\":1,"
		  "\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1} trailing", "not a JSON object" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1,\"wr_page_ns\":1,"
		  "\"wr_seq_base_ns\":1}", "wr_rand_base_ns" },
		{ "{\"rd_page_ns\":\"5000\",\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1,"
		  "\"wr_page_ns\":1,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1}",
		  "rd_page_ns" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1.5,\"rd_rand_base_ns\":1,"
		  "\"wr_page_ns\":1,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1}",
		  "rd_seq_base_ns" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1,"
		  "\"wr_page_ns\":-1,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1}", "wr_page_ns" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":null,"
		  "\"wr_page_ns\":1,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1}",
		  "rd_rand_base_ns" },
		/* Absurd: above 1 s, and beyond what int64 holds. */
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1000000001,"
		  "\"wr_page_ns\":1,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1}",
		  "rd_rand_base_ns" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1,"
		  "\"wr_page_ns\":1,\"wr_seq_base_ns\":99999999999999999999,\"wr_rand_base_ns\":1}",
		  "wr_seq_base_ns" },
		/* A 4 KiB random read or write that costs nothing. */
		{ "{\"rd_page_ns\":0,\"rd_seq_base_ns\":5,\"rd_rand_base_ns\":0,"
		  "\"wr_page_ns\":1,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":1}", "random read" },
		{ "{\"rd_page_ns\":1,\"rd_seq_base_ns\":1,\"rd_rand_base_ns\":1,"
		  "\"wr_page_ns\":0,\"wr_seq_base_ns\":1,\"wr_rand_base_ns\":0}", "random write" },
	};
	struct qos_cost_model m = { 1, 2, 3, 4, 5, 6 }, before = m;
	char why[256], path[1024];
	size_t i;

	qos_model_path(path, sizeof(path), pool);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_model(bad[i].text);
		why[0] = '\0';
		CU_ASSERT_EQUAL(qos_model_load(pool, &m, why, sizeof(why)), -EINVAL);
		CU_ASSERT(strstr(why, bad[i].word) != NULL);
		CU_ASSERT(strstr(why, path) != NULL);
		CU_ASSERT(why[0] && !strchr(why, '\n'));
		CU_ASSERT_EQUAL(memcmp(&m, &before, sizeof(m)), 0);
		if (!strstr(why, bad[i].word))
			fprintf(stderr, "case %zu: %s\n", i, why);
	}
	/* @why may be NULL. */
	CU_ASSERT_EQUAL(qos_model_load(pool, &m, NULL, 0), -EINVAL);
	remove_model();
}

static CU_TestInfo tests[] = {
	{ "path", test_path },
	{ "missing_is_enoent", test_missing_is_enoent },
	{ "roundtrip", test_roundtrip },
	{ "save_makes_dir", test_save_makes_dir },
	{ "hand_written", test_hand_written },
	{ "refusals", test_refusals },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("qos_model", suite_init, NULL, tests)
