/*
 * test_ctl.c - the control socket (ctl.h) against a real blkbackd: every command's answer and
 * refusal (one sentence, a positive errno), malformed input (not JSON, not an object, wrong
 * field types, too long, NUL bytes: an answer, then the connection closes), pipelined requests,
 * and a second daemon on the same pool refused.
 */
#include "blkback/blkback.h"
#include "blkback/blkback_internal.h"
#include "blkback/ctl.h"
#include "tests/blkback/test_fixture.h"
#include "tests/harness.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static struct bb_fix F;
static domid_t D1;

static int suite_init(void)
{
	int rc = fix_start(&F);

	if (rc < 0) {
		fprintf(stderr, "ctl: cannot start the daemons: %s\n", strerror(-rc));
		return 1;
	}
	if (fix_domain(&F, "c1", &D1) < 0 || fix_vol(&F, "cv1", 8 << 20) < 0 ||
	    fix_vol(&F, "cv2", 8 << 20) < 0)
		return 1;
	return 0;
}

static int suite_clean(void)
{
	fix_stop(&F);
	return 0;
}

/* A refusal: ok false, a one-line sentence, the expected errno. The answer is released. */
static void refused(json_object *a, int err, const char *words)
{
	const char *msg = json_object_get_string(json_object_object_get(a, "error"));

	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_FALSE(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "errno"), err);
	CU_ASSERT(msg && msg[0] && !strchr(msg, '\n'));
	if (msg && words && !strstr(msg, words)) {
		fprintf(stderr, "answer '%s' does not say '%s'\n", msg, words);
		CU_FAIL("refusal does not say why");
	}
	json_object_put(a);
}

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/blkbackd.sock", F.pool);
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Read until @nlines answers arrived or EOF; returns bytes read (buf NUL-terminated). */
static size_t read_lines(int fd, char *buf, size_t cap, unsigned nlines, int *eof)
{
	size_t got = 0;
	unsigned seen = 0;

	*eof = 0;
	while (got < cap - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (seen >= nlines) {
			/* Anything more, or the close, arrives promptly. */
			if (poll(&p, 1, 200) != 1)
				break;
		} else if (poll(&p, 1, 5000) != 1) {
			break;
		}
		r = read(fd, buf + got, cap - 1 - got);
		if (r <= 0) {
			*eof = 1;
			break;
		}
		for (ssize_t i = 0; i < r; i++)
			seen += buf[got + (size_t)i] == '\n';
		got += (size_t)r;
	}
	buf[got] = '\0';
	return got;
}

static void test_ping(void)
{
	json_object *a = fix_ctl(&F, "{\"cmd\":\"ping\"}");

	CU_ASSERT(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "pid"), F.bb_pid);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(a, "hv_dir")),
			       F.hv_dir);
	json_object_put(a);
}

/* Send @data raw; expect one refusal answer saying @words, then the connection closed. */
static void malformed(const void *data, size_t len, int err, const char *words)
{
	char buf[8192];
	int fd = raw_connect(), eof;
	json_object *a;

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, data, len), (ssize_t)len);
	read_lines(fd, buf, sizeof(buf), 1, &eof);
	CU_ASSERT(eof);
	a = json_tokener_parse(buf);
	refused(a, err, words);
	close(fd);
}

static void test_malformed_input(void)
{
	static const char nul[] = "{\"cmd\":\"ping\"}\0xx\n";
	char *big = malloc(CTL_MAX_LINE + 100);

	malformed("not json\n", 9, EINVAL, "JSON");
	malformed("[1,2]\n", 6, EINVAL, "JSON object");
	malformed(nul, sizeof(nul) - 1, EINVAL, "NUL");
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	memset(big, 'x', CTL_MAX_LINE + 100);
	malformed(big, CTL_MAX_LINE + 100, E2BIG, "longer than");
	free(big);

	/* Well-formed JSON with bad fields: answered, the connection stays. */
	refused(fix_ctl(&F, "{}"), EINVAL, "\"cmd\"");
	refused(fix_ctl(&F, "{\"cmd\":5}"), EINVAL, "string");
	refused(fix_ctl(&F, "{\"cmd\":\"frobnicate\"}"), EINVAL, "unknown command");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":1,\"domain\":\"c1\",\"vdev\":\"xvda\"}"),
		EINVAL, "\"vol\"");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":\"c1\","
			    "\"vdev\":\"xvda\",\"ro\":\"yes\"}"),
		EINVAL, "\"ro\"");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":[],\"vdev\":\"xvda\"}"),
		EINVAL, "domain");
	refused(fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"cv1\",\"size\":\"1G\"}"), EINVAL,
		"\"size\"");
	refused(fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"cv1\",\"size\":-5}"), EINVAL,
		"\"size\"");
}

static void test_pipelined(void)
{
	static const char reqs[] = "{\"cmd\":\"ping\"}\n{\"cmd\":\"stats\"}\n"
				   "{\"cmd\":\"frobnicate\"}\n{\"cmd\":\"ping\"}\n";
	char buf[16384], *line, *save = NULL;
	int fd = raw_connect(), eof;
	unsigned n = 0;

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, reqs, sizeof(reqs) - 1), (ssize_t)sizeof(reqs) - 1);
	read_lines(fd, buf, sizeof(buf), 4, &eof);
	CU_ASSERT_FALSE(eof);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_object *a = json_tokener_parse(line);

		CU_ASSERT_PTR_NOT_NULL(a);
		/* In order: ok, ok (vbds), refused, ok. */
		CU_ASSERT_EQUAL(fix_ok(a), n != 2);
		if (n == 1)
			CU_ASSERT(json_object_object_get(a, "vbds") != NULL);
		json_object_put(a);
		n++;
	}
	CU_ASSERT_EQUAL(n, 4);
	close(fd);
}

static void test_attach_refusals(void)
{
	json_object *a;

	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"nope\",\"domain\":\"c1\","
			    "\"vdev\":\"xvda\"}"),
		ENOENT, "no volume named 'nope'");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":\"ghost\","
			    "\"vdev\":\"xvda\"}"),
		ENOENT, "no domain named 'ghost'");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":\"77\","
			    "\"vdev\":\"xvda\"}"),
		ENOENT, "no domain");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":\"c1\","
			    "\"vdev\":\"hda\"}"),
		EINVAL, "not a Xen virtual disk name");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"../etc\",\"domain\":\"c1\","
			    "\"vdev\":\"xvda\"}"),
		EINVAL, "not a volume name");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":0,\"vdev\":\"xvda\"}"),
		EINVAL, "backend domain");

	/* By domid, as a number. */
	a = fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":%u,\"vdev\":\"xvda\"}", D1);
	CU_ASSERT(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "domid"), D1);
	CU_ASSERT_EQUAL(fix_int(a, "devid"), 51712);
	json_object_put(a);
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv2\",\"domain\":\"c1\","
			    "\"vdev\":\"xvda\"}"),
		EEXIST, "already has a disk xvda");
	refused(fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv1\",\"domain\":\"c1\","
			    "\"vdev\":\"xvdb\",\"ro\":true}"),
		EBUSY, "already attached writable");

	/* attached lists it; detach needs the right names. */
	a = fix_ctl(&F, "{\"cmd\":\"attached\",\"vol\":\"cv1\"}");
	CU_ASSERT(fix_ok(a));
	{
		json_object *vbds = json_object_object_get(a, "vbds");

		CU_ASSERT_EQUAL_FATAL(json_object_array_length(vbds), 1);
		CU_ASSERT_EQUAL(fix_int(json_object_array_get_idx(vbds, 0), "domid"), D1);
		CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(
					       json_object_array_get_idx(vbds, 0), "vdev")),
				       "xvda");
	}
	json_object_put(a);
	a = fix_ctl(&F, "{\"cmd\":\"attached\",\"vol\":\"cv2\"}");
	CU_ASSERT(fix_ok(a));
	CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(a, "vbds")), 0);
	json_object_put(a);

	refused(fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"c1\",\"vdev\":\"xvdz\"}"), ENOENT,
		"has no disk xvdz");
	refused(fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"c1\",\"vdev\":\"sda\"}"), EINVAL,
		"not a Xen virtual disk name");
	refused(fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"ghost\",\"vdev\":\"xvda\"}"), ENOENT,
		"no domain named");
	/* No frontend ever connected: the detach completes at once. */
	a = fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"c1\",\"vdev\":\"xvda\"}");
	CU_ASSERT(fix_ok(a));
	json_object_put(a);
	a = fix_ctl(&F, "{\"cmd\":\"attached\",\"vol\":\"cv1\"}");
	CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(a, "vbds")), 0);
	json_object_put(a);
}

static void test_resize_and_stats_refusals(void)
{
	json_object *a;

	refused(fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"nope\",\"size\":1048576}"), ENOENT,
		"no volume named");
	refused(fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"cv2\",\"size\":1000}"), EINVAL,
		"multiple of");
	refused(fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"cv2\",\"size\":1048576}"), EPERM,
		"shrink");
	/* A volume nobody uses is resized offline. */
	a = fix_ctl(&F, "{\"cmd\":\"resize\",\"vol\":\"cv2\",\"size\":%d}", 12 << 20);
	CU_ASSERT(fix_ok(a));
	CU_ASSERT_EQUAL(fix_int(a, "old_size"), 8 << 20);
	CU_ASSERT_EQUAL(fix_int(a, "size"), 12 << 20);
	json_object_put(a);

	refused(fix_ctl(&F, "{\"cmd\":\"stats\",\"domain\":\"c1\"}"), EINVAL, "both");
	refused(fix_ctl(&F, "{\"cmd\":\"stats\",\"domain\":\"c1\",\"vdev\":\"xvdq\"}"), ENOENT,
		"has no disk");

	/* Every field ctl.h promises. */
	a = fix_ctl(&F, "{\"cmd\":\"attach\",\"vol\":\"cv2\",\"domain\":\"c1\",\"vdev\":\"xvdc\"}");
	CU_ASSERT(fix_ok(a));
	json_object_put(a);
	{
		static const char *const keys[] = {
			"domid",   "domain", "vdev",     "devid",	  "vol",	   "state",
			"ro",	   "rd_req", "wr_req",	 "f_req",	  "ds_req",	   "oo_req",
			"rd_sect", "wr_sect", "errors",	 "inflight",	  "rd_lat_p50_us",
			"rd_lat_p99_us", "wr_lat_p50_us", "wr_lat_p99_us",
		};
		json_object *st = fix_stats(&F, "c1", "xvdc");

		CU_ASSERT_PTR_NOT_NULL_FATAL(st);
		for (unsigned i = 0; i < ARRAY_SIZE(keys); i++)
			CU_ASSERT(json_object_object_get_ex(st, keys[i], NULL));
		CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(st, "state")),
				       "InitWait");
		json_object_put(st);
	}
	a = fix_ctl(&F, "{\"cmd\":\"detach\",\"domain\":\"c1\",\"vdev\":\"xvdc\"}");
	CU_ASSERT(fix_ok(a));
	json_object_put(a);
}

static void test_second_daemon_refused(void)
{
	struct blkback_opts o;
	struct blkback *bb = NULL;
	int lvl = log_level_cur;

	blkback_opts_default(&o);
	o.hv_dir = F.hv_dir;
	o.pool = F.pool;
	log_level_cur = -1; /* its refusal line is expected */
	CU_ASSERT_EQUAL(blkback_new(&bb, &o), -EBUSY);
	log_level_cur = lvl;
	CU_ASSERT_PTR_NULL(bb);
	/* And the running one is unharmed. */
	test_ping();
}

static CU_TestInfo tests[] = {
	{ "ping", test_ping },
	{ "malformed_input", test_malformed_input },
	{ "pipelined", test_pipelined },
	{ "attach_refusals", test_attach_refusals },
	{ "resize_and_stats_refusals", test_resize_and_stats_refusals },
	{ "second_daemon_refused", test_second_daemon_refused },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("ctl", suite_init, suite_clean, tests)
