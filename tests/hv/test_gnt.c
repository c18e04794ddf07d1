/*
 * test_gnt.c - hvsim_gnt.c, the grant map/unmap protocol on shared memory: every refusal, the
 * GTF_reading / GTF_writing bookkeeping, end access against mappers, and the race between a
 * guest ending access and a mapper mapping.
 */
#include "hv/hvsim_gnt.h"
#include "tests/harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NR     64
#define FRAMES 16
#define DOM0   0
#define GUEST  7

static struct {
	grant_entry_v1_t table[NR];
	union {
		struct hvsim_gnt_active_hdr hdr;
		uint8_t raw[HVSIM_GNT_ACTIVE_OFF + NR * sizeof(uint32_t)];
	} act;
	struct hvsim_gnt_view v;
} g;

static void setup(void)
{
	memset(&g, 0, sizeof(g));
	g.act.hdr.magic = HVSIM_GNT_MAGIC;
	g.act.hdr.domid = GUEST;
	g.act.hdr.nr_entries = NR;
	g.act.hdr.mem_frames = FRAMES;
	g.act.hdr.alive = 1;
	g.v.table = g.table;
	g.v.hdr = &g.act.hdr;
	g.v.active = (uint32_t *)(g.act.raw + HVSIM_GNT_ACTIVE_OFF);
	g.v.nr_entries = NR;
	g.v.mem_frames = FRAMES;
}

static void test_refusals(void)
{
	uint32_t frame = 12345;

	setup();
	/* Bad ref. */
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, NR, DOM0, 0, &frame), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, UINT32_MAX, DOM0, 0, &frame), -EINVAL);
	/* Not granted. */
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 3, DOM0, 0, &frame), -EPERM);
	/* Granted, but as a transfer (wrong type). */
	g.table[4].flags = GTF_accept_transfer;
	g.table[4].domid = DOM0;
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 4, DOM0, 0, &frame), -EPERM);
	/* Granted to another domain. */
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 5, 9, 1, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 5, DOM0, 0, &frame), -EACCES);
	/* Read-only grant mapped writable; readable is fine. */
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 6, DOM0, 2, 1), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 6, DOM0, 1, &frame), -EROFS);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 6, DOM0, 0, &frame), 0);
	CU_ASSERT_EQUAL(frame, 2);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 6, 0), 0);
	/* Frame outside guest memory: refused, and no flag left behind. */
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 8, DOM0, FRAMES, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 8, DOM0, 1, &frame), -EFAULT);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 8), GTF_permit_access);
	CU_ASSERT_EQUAL(hvsim_gnt_end_access(g.table, NR, 8), 0);
	/* Dead domain. */
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 9, DOM0, 1, 0), 0);
	g.act.hdr.alive = 0;
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 9, DOM0, 0, &frame), -ESRCH);
	/* No refusal left a pin behind. */
	for (uint32_t r = 0; r < NR; r++)
		CU_ASSERT_EQUAL(g.v.active[r], 0);
}

static void test_flags_follow_pins(void)
{
	uint32_t frame;

	setup();
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 10, DOM0, 3, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10), GTF_permit_access);

	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 10, DOM0, 0, &frame), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10), GTF_permit_access | GTF_reading);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 10, DOM0, 1, &frame), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10),
			GTF_permit_access | GTF_reading | GTF_writing);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 10, DOM0, 1, &frame), 0);

	/* End access is refused while anything is mapped, and the entry stays as it was. */
	CU_ASSERT_EQUAL(hvsim_gnt_end_access(g.table, NR, 10), -EBUSY);
	CU_ASSERT_EQUAL(g.table[10].frame, 3);

	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 10, 1), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10),
			GTF_permit_access | GTF_reading | GTF_writing);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 10, 1), 0);
	/* Last writer gone: GTF_writing clears, GTF_reading stays for the reader. */
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10), GTF_permit_access | GTF_reading);
	CU_ASSERT_EQUAL(hvsim_gnt_end_access(g.table, NR, 10), -EBUSY);
	/* No such pin. */
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 10, 1), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 10, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10), GTF_permit_access);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 10, 0), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, NR, 0), -EINVAL);

	CU_ASSERT_EQUAL(hvsim_gnt_end_access(g.table, NR, 10), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 10), 0);
	/* After end access the entry maps no more. */
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 10, DOM0, 0, &frame), -EPERM);
	CU_ASSERT_EQUAL(hvsim_gnt_end_access(g.table, NR, NR), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, NR, DOM0, 0, 0), -EINVAL);
}

static void test_unmap_after_death(void)
{
	uint32_t frame;

	setup();
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 11, DOM0, 4, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 11, DOM0, 1, &frame), 0);
	g.act.hdr.alive = 0;
	/* Existing mappings outlive the domain and unmap normally. */
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 11, 1), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 11), GTF_permit_access);
}

static void test_pin_overflow(void)
{
	uint32_t frame;

	setup();
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 12, DOM0, 5, 0), 0);
	g.v.active[12] = HVSIM_ACT_RD_MASK << HVSIM_ACT_RD_SHIFT;
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 12, DOM0, 0, &frame), -EOVERFLOW);
	/* Writers count separately. */
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 12, DOM0, 1, &frame), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 12, 1), 0);
}

/* A guest that rewrites a mapped entry cannot push a mapper outside its memory. */
static void test_guest_scribbles(void)
{
	uint32_t frame;

	setup();
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 13, DOM0, 1, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 13, DOM0, 0, &frame), 0);
	g.table[13].frame = 0xffffffff;
	g.table[13].flags = GTF_permit_access;
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 13, DOM0, 0, &frame), -EFAULT);
	/* The guest cleared GTF_reading itself; our pin stays and unmap still works. */
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 13, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 13, 0), -EINVAL);
}

/* A dead mapper's ledger: hvsimd drops exactly its pins, and skips a wedged entry. */
static void test_release_ledger(void)
{
	uint32_t ledger[NR] = {0}, frame;

	setup();
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 30, DOM0, 1, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 31, DOM0, 2, 0), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_grant(g.table, NR, 32, DOM0, 3, 0), 0);
	/* The dead mapper: a writable and two read-only pins of 30, one read-only pin of 31. */
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 30, DOM0, i == 0, &frame), 0);
	ledger[30] = HVSIM_LEDGER_WR + 2 * HVSIM_LEDGER_RD;
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 31, DOM0, 0, &frame), 0);
	ledger[31] = HVSIM_LEDGER_RD;
	/* A live mapper also holds 31. */
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 31, DOM0, 1, &frame), 0);

	CU_ASSERT_EQUAL(hvsim_gnt_release_ledger(&g.v, ledger), 4);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 30), GTF_permit_access);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 31),
			GTF_permit_access | GTF_reading | GTF_writing);
	CU_ASSERT_EQUAL(ledger[30], 0);
	CU_ASSERT_EQUAL(ledger[31], 0);
	CU_ASSERT_EQUAL(hvsim_gnt_unmap(&g.v, 31, 1), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 31), GTF_permit_access);

	/* An entry whose lock a dead process held is skipped, not waited on forever. */
	CU_ASSERT_EQUAL(hvsim_gnt_map(&g.v, 32, DOM0, 0, &frame), 0);
	ledger[32] = HVSIM_LEDGER_RD;
	g.v.active[32] |= HVSIM_ACT_LOCK;
	CU_ASSERT_EQUAL(hvsim_gnt_release_ledger(&g.v, ledger), -EDEADLK);
	CU_ASSERT_EQUAL(ledger[32], HVSIM_LEDGER_RD);
}

/*
 * The guest ends access while a mapper maps and unmaps the same entry: whenever end access
 * succeeds, the mapper must not be inside a mapping.
 */
#define RACE_ROUNDS 20000

static volatile int in_use;
static volatile int race_done;
static int race_violations;

static void *race_mapper(void *arg)
{
	int maps = 0;

	(void)arg;
	while (!__atomic_load_n(&race_done, __ATOMIC_ACQUIRE)) {
		uint32_t frame;

		if (hvsim_gnt_map(&g.v, 20, DOM0, 1, &frame))
			continue;
		__atomic_store_n(&in_use, 1, __ATOMIC_SEQ_CST);
		if (!(hvsim_gnt_flags(g.table, 20) & GTF_writing))
			__atomic_fetch_add(&race_violations, 1, __ATOMIC_RELAXED);
		__atomic_store_n(&in_use, 0, __ATOMIC_SEQ_CST);
		hvsim_gnt_unmap(&g.v, 20, 1);
		maps++;
	}
	return (void *)(intptr_t)maps;
}

static void test_end_access_race(void)
{
	pthread_t t;
	void *maps;
	int busy = 0;

	setup();
	race_done = 0;
	race_violations = 0;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, race_mapper, NULL), 0);
	for (int i = 0; i < RACE_ROUNDS; i++) {
		int rc;

		hvsim_gnt_grant(g.table, NR, 20, DOM0, 6, 0);
		while ((rc = hvsim_gnt_end_access(g.table, NR, 20)) == -EBUSY)
			busy++;
		CU_ASSERT_EQUAL(rc, 0);
		if (__atomic_load_n(&in_use, __ATOMIC_SEQ_CST))
			race_violations++;
	}
	__atomic_store_n(&race_done, 1, __ATOMIC_RELEASE);
	pthread_join(t, &maps);
	CU_ASSERT_EQUAL(race_violations, 0);
	CU_ASSERT_EQUAL(g.v.active[20], 0);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(g.table, 20), 0);
}

static CU_TestInfo tests[] = {
    {"refusals", test_refusals},
    {"flags_follow_pins", test_flags_follow_pins},
    {"unmap_after_death", test_unmap_after_death},
    {"pin_overflow", test_pin_overflow},
    {"guest_scribbles", test_guest_scribbles},
    {"release_ledger", test_release_ledger},
    {"end_access_race", test_end_access_race},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("gnt", NULL, NULL, tests)
