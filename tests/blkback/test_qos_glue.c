#include "blkback/qos_glue.h"
#include "tests/harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/qos_glue.XXXXXX";

static int suite_init(void)
{
	return mkdtemp(dir) ? 0 : -1;
}

static int suite_clean(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) ? -1 : 0;
}

static void test_from_json_overlays(void)
{
	struct qos_vbd_settings s;
	struct json_object *o = json_tokener_parse("{\"weight\":512,\"cap_iops\":1000,"
						   "\"cmd\":\"set\"}");
	char why[128];

	qos_vbd_settings_default(&s);
	CU_ASSERT_EQUAL_FATAL(qos_glue_settings_from_json(o, &s, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(s.weight, 512);
	CU_ASSERT_EQUAL(s.cap_iops, 1000);
	CU_ASSERT_EQUAL(s.cap_bps, 0);
	CU_ASSERT_EQUAL(s.reserve_iops, 0);
	json_object_put(o);
}

static void test_from_json_refusals(void)
{
	static const char *bad[] = {
		"{\"weight\":-1}", "{\"weight\":4294967296}", "{\"cap_iops\":\"10\"}",
		"{\"burst_seconds\":1.5}", "[1]",
	};
	struct qos_vbd_settings s, before;
	char why[128];
	size_t i;

	qos_vbd_settings_default(&s);
	before = s;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct json_object *o = json_tokener_parse(bad[i]);

		CU_ASSERT_PTR_NOT_NULL_FATAL(o);
		why[0] = 0;
		CU_ASSERT_EQUAL(qos_glue_settings_from_json(o, &s, why, sizeof(why)), -EINVAL);
		CU_ASSERT(why[0] && !strchr(why, '\n'));
		CU_ASSERT_EQUAL(memcmp(&s, &before, sizeof(s)), 0);
		json_object_put(o);
	}
}

static void test_path_names(void)
{
	char p[64];

	CU_ASSERT_EQUAL(qos_glue_settings_path(p, sizeof(p), "/pool", "web", "xvda"), 0);
	CU_ASSERT_STRING_EQUAL(p, "/pool/qos/web-xvda.json");
	CU_ASSERT_EQUAL(qos_glue_settings_path(p, sizeof(p), "/pool", "a/b", "xvda"), -EINVAL);
	CU_ASSERT_EQUAL(qos_glue_settings_path(p, sizeof(p), "/pool", ".x", "xvda"), -EINVAL);
	CU_ASSERT_EQUAL(qos_glue_settings_path(p, sizeof(p), "/pool", "web", ""), -EINVAL);
	CU_ASSERT_EQUAL(qos_glue_settings_path(p, 8, "/pool", "web", "xvda"), -ENAMETOOLONG);
}

static void test_save_load_roundtrip(void)
{
	struct qos_vbd_settings s, l;
	char path[256];
	FILE *f;

	CU_ASSERT_EQUAL(qos_glue_settings_load(dir, "web", "xvda", &l), -ENOENT);
	CU_ASSERT_EQUAL(l.weight, 256);
	qos_vbd_settings_default(&s);
	s.weight = 7;
	s.cap_bps = 1ULL << 40;
	s.reserve_iops = 100;
	s.burst_iops = 900;
	s.burst_seconds = 30;
	CU_ASSERT_EQUAL_FATAL(qos_glue_settings_save(dir, "web", "xvda", &s), 0);
	CU_ASSERT_EQUAL_FATAL(qos_glue_settings_load(dir, "web", "xvda", &l), 0);
	CU_ASSERT_EQUAL(memcmp(&s, &l, sizeof(s)), 0);

	/* A corrupt file is refused, not half applied. */
	qos_glue_settings_path(path, sizeof(path), dir, "bad", "xvdb");
	f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs("{\"weight\":", f);
	fclose(f);
	CU_ASSERT_EQUAL(qos_glue_settings_load(dir, "bad", "xvdb", &l), -EINVAL);
}

static CU_TestInfo tests[] = {
	{ "from_json_overlays", test_from_json_overlays },
	{ "from_json_refusals", test_from_json_refusals },
	{ "path_names", test_path_names },
	{ "save_load_roundtrip", test_save_load_roundtrip },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("qos_glue", suite_init, suite_clean, tests)
