/*
 * test_map.c - the radix block map's shape: tree heights, O(1) snapshots (no node is copied
 * until a write, then exactly one path), empty subtrees freed on the way back up, and a
 * deleted snapshot returning exactly the nodes only it used.
 */
#include "tests/dedup/dedup_test.h"
#include "dedup/dedup_internal.h"

#include <errno.h>

/* Entries of a database as committed (stats commits what the writer holds first). */
static uint64_t db_entries(struct dedup_store *s, MDB_dbi dbi)
{
	struct dedup_stats ds;
	MDB_txn *txn;
	MDB_stat st;

	if (dedup_store_stats(s, &ds) || mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))
		return UINT64_MAX;
	mdb_stat(txn, dbi, &st);
	mdb_txn_abort(txn);
	return st.ms_entries;
}

static void test_levels(void)
{
	CU_ASSERT_EQUAL(levels_span(0), 62);
	CU_ASSERT_EQUAL(levels_span(1), 62 * 251);
	CU_ASSERT_EQUAL(levels_span(2), 62ull * 251 * 251);
	CU_ASSERT_EQUAL(levels_for(1), 1);
	CU_ASSERT_EQUAL(levels_for(62), 1);
	CU_ASSERT_EQUAL(levels_for(63), 2);
	CU_ASSERT_EQUAL(levels_for(62 * 251), 2);
	CU_ASSERT_EQUAL(levels_for(62 * 251 + 1), 3);
	/* the deepest tree holds 224 PiB */
	CU_ASSERT_TRUE(levels_span(MAP_MAX_LEVELS - 1) * TB > (224ull << 50));
	/* two records fill one LMDB page */
	CU_ASSERT_EQUAL(sizeof(struct node), 2016);
}

#define SNAP_VOL_BLK (62ull * 251 * 2) /* three levels */

static void test_snapshot_is_o1(void)
{
	struct dedup_store *s = t_store("map-snap", NULL);
	struct dedup_ctx *c;
	struct dedup_vol *v;
	uint64_t nodes, refs;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", SNAP_VOL_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	/* one block in each of 40 leaves spread over both level-1 subtrees (21 + 19 leaves) */
	for (uint64_t i = 0; i < 40; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i * 761, 1 + i), 0);
	nodes = db_entries(s, s->dbi_nodes);
	CU_ASSERT_EQUAL(nodes, 40 + 2 + 1);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_noderef), 0); /* refcount 1 costs nothing */

	CU_ASSERT_EQUAL(dedup_vol_snapshot(s, "v", "snap"), 0);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_nodes), nodes); /* nothing copied */
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_noderef), 1);   /* the root's refcount: 2 */

	/* the first write copies exactly one root-to-leaf path */
	CU_ASSERT_EQUAL(t_write(c, v, 0, 999), 0);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_nodes), nodes + 3);
	/*
	 * Shared now (refcount records): the level-1 node not on the path, and the 21 leaves
	 * under the copied level-1 node but the copied one.
	 */
	refs = db_entries(s, s->dbi_noderef);
	CU_ASSERT_EQUAL(refs, 1 + 21 - 1);
	/* a second write under the copied path copies only the shared leaf below it */
	CU_ASSERT_EQUAL(t_write(c, v, 761, 998), 0);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_nodes), nodes + 4);

	/* dropping the snapshot frees exactly what only it used */
	CU_ASSERT_EQUAL(dedup_vol_delete(s, "snap"), 0);
	CU_ASSERT_EQUAL(dedup_store_reclaim(s), 0);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_nodes), nodes);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_noderef), 0);
	CU_ASSERT_TRUE(t_reads(c, v, 0, 999));
	CU_ASSERT_TRUE(t_reads(c, v, 761, 998));
	CU_ASSERT_TRUE(t_reads(c, v, 1522, 3));
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static void test_empty_subtrees_freed(void)
{
	struct dedup_store *s = t_store("map-collapse", NULL);
	struct dedup_ctx *c;
	struct dedup_vol *v;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "huge", 240ull << 50), -EFBIG);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", SNAP_VOL_BLK * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i * 311, 1 + i), 0);
	CU_ASSERT_TRUE(db_entries(s, s->dbi_nodes) > 100);
	for (uint64_t i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i * 311, 0), 0);
	CU_ASSERT_EQUAL(db_entries(s, s->dbi_nodes), 0);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
	{ "levels", test_levels },
	{ "snapshot_is_o1", test_snapshot_is_o1 },
	{ "empty_subtrees_freed", test_empty_subtrees_freed },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_map", NULL, NULL, tests)
