/*
 * harness.h - CUnit glue: each test file registers its suite from a constructor, so a subsystem's
 * test binary is just its test files linked with harness.c; no shared list to edit.
 *
 *   static CU_TestInfo tests[] = { { "grow", test_grow }, CU_TEST_INFO_NULL };
 *   TEST_SUITE("xs_store", NULL, NULL, tests);
 */
#ifndef SLUICE_TESTS_HARNESS_H
#define SLUICE_TESTS_HARNESS_H

#include <CUnit/CUnit.h>

void harness_add_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc clean,
		       CU_TestInfo *tests);

/** A temp directory made for this test process (removed at exit); valid for the whole run. */
const char *harness_tmpdir(void);

/** Directory of the build tree's binaries (build/bin), from SLUICE_BIN or derived from argv[0]. */
const char *harness_bindir(void);

#define TEST_SUITE(name, init, clean, tests)                                                       \
	static void __attribute__((constructor)) harness_reg_suite(void)                            \
	{                                                                                          \
		harness_add_suite((name), (init), (clean), (tests));                               \
	}

#endif
