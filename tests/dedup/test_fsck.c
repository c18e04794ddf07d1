/*
 * test_fsck.c - fsck finds what is injected behind the store's back (a refcount too high, a
 * leaked block, a refcount too low, a node no volume reaches, a wrong volume count, a wrong
 * container count, a stray container file, a corrupt block), repairs what can be repaired, is
 * clean afterwards, and the repaired store gives all its space back.
 */
#include "tests/dedup/dedup_test.h"
#include "dedup/dedup_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* Find the index entry of pattern @seed. */
static int entry_of(struct dedup_store *s, uint64_t seed, uint8_t h[HASH_BYTES],
		    struct content_val *v)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint64_t blk[TB / 8];
	struct dedup_stats st;
	MDB_txn *txn;
	int rc;

	/* committed state: stats makes the writer checkpoint first */
	if (dedup_store_stats(s, &st))
		return -1;
	t_fill(blk, seed);
	dedup_sha256(md, s->sha256, blk, h);
	EVP_MD_CTX_free(md);
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))
		return -1;
	rc = content_get(txn, s, h, v);
	mdb_txn_abort(txn);
	return rc;
}

/* Behind the writer's back (it is idle): one write transaction of the test's own. */
static int poke(struct dedup_store *s, MDB_dbi dbi, const void *key, size_t klen,
		const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, d = { vlen, (void *)val };
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->env, NULL, 0, &txn);

	if (rc)
		return rc;
	rc = mdb_put(txn, dbi, &k, &d, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

static void test_fsck_repairs_injected_damage(void)
{
	struct dedup_store *s = t_store("fsck-repair", NULL);
	struct dedup_fsck_report r;
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	struct content_val cv;
	struct vol_rec vr;
	struct ctr_rec cr;
	struct node n;
	uint8_t h[HASH_BYTES];
	uint64_t id = 1ull << 40, cid;
	char path[PATH_MAX];
	MDB_txn *txn;
	int fd;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 1024 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 300; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i, 1 + i % 200), 0); /* seeds 1..100 twice */
	CU_ASSERT_EQUAL(t_write(c, v, 500, 999), 0);
	CU_ASSERT_EQUAL(t_write(c, v, 500, 0), 0); /* 999 becomes a zombie */
	CU_ASSERT_EQUAL(dedup_store_reclaim(s), 0);
	CU_ASSERT_EQUAL(dedup_store_fsck(s, 0, &r), 0);
	CU_ASSERT_TRUE(dedup_fsck_clean(&r));
	CU_ASSERT_EQUAL(r.volumes, 1);
	CU_ASSERT_EQUAL(r.index_entries, 201);

	/* 1. a refcount too high: 150 has one reference, claim three */
	CU_ASSERT_EQUAL_FATAL(entry_of(s, 150, h, &cv), 0);
	CU_ASSERT_EQUAL(cv.refs, 1);
	cv.refs = 3;
	CU_ASSERT_EQUAL(poke(s, s->dbi_content, h, HASH_BYTES, &cv, sizeof(cv)), 0);
	/* 2. a leaked block: the zombie claims a reference */
	CU_ASSERT_EQUAL_FATAL(entry_of(s, 999, h, &cv), 0);
	CU_ASSERT_EQUAL(cv.refs, 0);
	cv.refs = 1;
	CU_ASSERT_EQUAL(poke(s, s->dbi_content, h, HASH_BYTES, &cv, sizeof(cv)), 0);
	/* 3. a refcount too low: 7 is mapped twice */
	CU_ASSERT_EQUAL_FATAL(entry_of(s, 7, h, &cv), 0);
	CU_ASSERT_EQUAL(cv.refs, 2);
	cid = LOC_CID(cv.loc);
	cv.refs = 1;
	CU_ASSERT_EQUAL(poke(s, s->dbi_content, h, HASH_BYTES, &cv, sizeof(cv)), 0);
	/* 4. a node nothing points at */
	memset(&n, 0, sizeof(n));
	n.h.magic = NODE_MAGIC;
	CU_ASSERT_EQUAL(poke(s, s->dbi_nodes, &id, sizeof(id), &n, sizeof(n)), 0);
	/* 5. a volume's block count */
	CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
	CU_ASSERT_EQUAL(vol_rec_read(txn, s, "v", &vr), 0);
	mdb_txn_abort(txn);
	CU_ASSERT_EQUAL(vr.nonzero, 300);
	vr.nonzero = 12;
	CU_ASSERT_EQUAL(poke(s, s->dbi_vols, "v", 1, &vr, sizeof(vr)), 0);
	/* 6. a container's live count */
	CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
	{
		MDB_val k = { sizeof(cid), &cid }, d;

		CU_ASSERT_EQUAL(mdb_get(txn, s->dbi_ctrs, &k, &d), 0);
		memcpy(&cr, d.mv_data, sizeof(cr));
	}
	mdb_txn_abort(txn);
	cr.live += 5;
	CU_ASSERT_EQUAL(poke(s, s->dbi_ctrs, &cid, sizeof(cid), &cr, sizeof(cr)), 0);
	/* 7. a container file nobody knows */
	snprintf(path, sizeof(path), "%s/fsck-repair/containers/00000000deadbeef.ctr",
		 harness_tmpdir());
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	CU_ASSERT_TRUE(fd >= 0);
	close(fd);

	CU_ASSERT_EQUAL(dedup_store_fsck(s, 0, &r), 0);
	CU_ASSERT_FALSE(dedup_fsck_clean(&r));
	CU_ASSERT_EQUAL(r.repaired, 0);
	CU_ASSERT_EQUAL(dedup_store_fsck(s, DEDUP_FSCK_REPAIR, &r), 0);
	CU_ASSERT_EQUAL(r.ref_too_high, 2);
	CU_ASSERT_EQUAL(r.leaked_blocks, 1);
	CU_ASSERT_EQUAL(r.ref_too_low, 1);
	CU_ASSERT_EQUAL(r.leaked_nodes, 1);
	CU_ASSERT_EQUAL(r.counter_errors, 1);
	CU_ASSERT_EQUAL(r.container_errors, 1);
	CU_ASSERT_EQUAL(r.orphan_containers, 1);
	CU_ASSERT_EQUAL(r.missing_blocks, 0);
	CU_ASSERT_EQUAL(r.bad_locations, 0);
	CU_ASSERT_EQUAL(r.repaired, 7);
	CU_ASSERT_EQUAL(access(path, F_OK), -1);
	CU_ASSERT_EQUAL(dedup_store_fsck(s, DEDUP_FSCK_VERIFY, &r), 0);
	CU_ASSERT_TRUE(dedup_fsck_clean(&r));
	for (uint64_t i = 0; i < 300; i++)
		CU_ASSERT_TRUE(t_reads(c, v, i, 1 + i % 200));

	/* repaired counts are exact: everything comes back when everything goes */
	dedup_vol_close(v);
	CU_ASSERT_EQUAL(dedup_vol_delete(s, "v"), 0);
	CU_ASSERT_EQUAL(dedup_store_gc(s, NULL, NULL), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.unique_blocks, 0);
	CU_ASSERT_EQUAL(st.containers, 0);
	CU_ASSERT_EQUAL(st.index_bytes, 0);
	CU_ASSERT_EQUAL(st.map_bytes, 0);
	CU_ASSERT_TRUE(t_fsck_clean(s));
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static void test_fsck_verify_finds_corrupt_data(void)
{
	struct dedup_store *s = t_store("fsck-verify", NULL);
	struct dedup_fsck_report r;
	struct dedup_stats st;
	struct dedup_ctx *c;
	struct dedup_vol *v;
	struct content_val cv;
	uint8_t h[HASH_BYTES], junk[64];
	char path[PATH_MAX];
	int fd;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 64 * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (uint64_t i = 0; i < 20; i++)
		CU_ASSERT_EQUAL(t_write(c, v, i, 1 + i), 0);
	CU_ASSERT_EQUAL(t_write(c, v, 0, 0), 0);
	CU_ASSERT_EQUAL_FATAL(entry_of(s, 5, h, &cv), 0);
	CU_ASSERT_EQUAL(ctr_path(s, LOC_CID(cv.loc), path, sizeof(path)), 0);
	fd = open(path, O_WRONLY);
	CU_ASSERT_FATAL(fd >= 0);
	memset(junk, 0xa5, sizeof(junk));
	CU_ASSERT_EQUAL(pwrite(fd, junk, sizeof(junk), (off_t)LOC_SLOT(cv.loc) * TB + 100),
			(ssize_t)sizeof(junk));
	close(fd);
	CU_ASSERT_EQUAL(dedup_store_fsck(s, 0, &r), 0);
	CU_ASSERT_TRUE(dedup_fsck_clean(&r)); /* metadata is fine */
	CU_ASSERT_EQUAL(dedup_store_fsck(s, DEDUP_FSCK_VERIFY | DEDUP_FSCK_REPAIR, &r), 0);
	CU_ASSERT_EQUAL(r.verify_errors, 1);
	/* the collector will not drop a container whose live block it cannot account for */
	CU_ASSERT_EQUAL(dedup_store_gc(s, NULL, NULL), 0);
	CU_ASSERT_EQUAL(dedup_store_stats(s, &st), 0);
	CU_ASSERT_EQUAL(st.containers, 1);
	for (uint64_t i = 1; i < 20; i++)
		if (i != 4)
			CU_ASSERT_TRUE(t_reads(c, v, i, 1 + i));
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
}

static CU_TestInfo tests[] = {
	{ "fsck_repairs_injected_damage", test_fsck_repairs_injected_damage },
	{ "fsck_verify_finds_corrupt_data", test_fsck_verify_finds_corrupt_data },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_fsck", NULL, NULL, tests)
