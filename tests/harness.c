/*
 * harness.c - main() for every CUnit test binary: runs the suites registered by the linked test
 * files (all, or those named on the command line) and exits non-zero on any failure.
 */
#include "tests/harness.h"

#include <CUnit/Basic.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HARNESS_MAX_SUITES 128

struct harness_suite {
	const char *name;
	CU_InitializeFunc init;
	CU_CleanupFunc clean;
	CU_TestInfo *tests;
};

static struct harness_suite suites[HARNESS_MAX_SUITES];
static int nr_suites;
static char tmpdir[PATH_MAX];
static char bindir[PATH_MAX];

void harness_add_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc clean,
		       CU_TestInfo *tests)
{
	if (nr_suites == HARNESS_MAX_SUITES) {
		fprintf(stderr, "harness: too many suites\n");
		abort();
	}
	suites[nr_suites++] = (struct harness_suite){ name, init, clean, tests };
}

const char *harness_tmpdir(void)
{
	return tmpdir;
}

const char *harness_bindir(void)
{
	return bindir;
}

static void rm_tmpdir(void)
{
	char cmd[PATH_MAX + 16];

	if (tmpdir[0] && !getenv("SLUICE_KEEP_TMP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "harness: could not remove %s\n", tmpdir);
	}
}

static int wanted(const char *name, int argc, char **argv)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned failed;
	const char *env = getenv("SLUICE_BIN");

	if (env) {
		snprintf(bindir, sizeof(bindir), "%s", env);
	} else {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (n < 0)
			return 2;
		self[n] = '\0';
		/* build/tests/<bin> -> build/bin */
		snprintf(bindir, sizeof(bindir), "%s/../bin", dirname(self));
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s/sluice-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("harness: mkdtemp");
		return 2;
	}
	atexit(rm_tmpdir);

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	for (int i = 0; i < nr_suites; i++) {
		CU_pSuite s;

		if (!wanted(suites[i].name, argc, argv))
			continue;
		s = CU_add_suite(suites[i].name, suites[i].init, suites[i].clean);
		if (!s)
			return 2;
		for (CU_TestInfo *t = suites[i].tests; t->pName; t++)
			if (!CU_add_test(s, t->pName, t->pTestFunc))
				return 2;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
