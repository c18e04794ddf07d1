/*
 * dedup_internal.h - what the files of dedup/ share: the on-disk records (see docs/dedup.md),
 * the store, context and request structures, and the writer's transaction state.
 *
 * Threads: fields marked [writer] are touched only by the writer thread; [alloc] under
 * store->alloc_lock; [wq] under store->wq_lock; [atomic] with C11 atomics; [const] set at open.
 */
#ifndef SLUICE_DEDUP_INTERNAL_H
#define SLUICE_DEDUP_INTERNAL_H

#include "dedup/dedup.h"

#include <lmdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_BYTES 32

/* ---- on-disk records (little-endian host order; the store is not portable across endians) -- */

#define DEDUP_FORMAT 1u

/*
 * A block-map node: 2016 bytes, stored inline in the nodes database so that one LMDB page
 * (4080 usable bytes) holds exactly two: 2 x (8 node header + 8 key + 2016 + 2 index) = 4068.
 * Changing a node dirties one page, and as every record has the same even size the values stay
 * 8-byte aligned in their pages. Interior nodes hold 251 child node ids, leaves 62 SHA-256
 * names (all zeros = a zero block). Level 0 is the leaf level.
 */
#define NODE_BYTES 2016
#define NODE_MAGIC 0x4e44u /* "DN" */
#define LEAF_FANOUT 62
#define INNER_FANOUT 251
#define MAP_MAX_LEVELS 6 /* 62 * 251^5 blocks of 4 KiB: volumes up to 224 PiB */

struct node_hdr {
	uint16_t magic;
	uint8_t level;     /**< 0 = leaf */
	uint8_t reserved0;
	uint16_t count;    /**< non-zero entries */
	uint16_t reserved1;
};

struct node {
	struct node_hdr h;
	union {
		uint8_t hash[LEAF_FANOUT][HASH_BYTES]; /**< level 0 */
		uint64_t child[INNER_FANOUT];          /**< level > 0; 0 = all-zero subtree */
	};
};

_Static_assert(sizeof(struct node) == NODE_BYTES, "two nodes fill one LMDB page");

/* A node read in place from LMDB: its value must be NODE_BYTES and 8-byte aligned (see above;
 * anything else is a damaged database, reported instead of read misaligned). */
static inline int node_val_ok(const void *p, size_t len)
{
	return len == NODE_BYTES && ((uintptr_t)p & (_Alignof(struct node) - 1)) == 0;
}

/* A block's physical location: container id and slot (4 KiB unit) in it. */
#define LOC_SLOT_BITS 20 /* containers of up to 4 GiB */
#define LOC_MAKE(cid, slot) (((uint64_t)(cid) << LOC_SLOT_BITS) | (uint64_t)(slot))
#define LOC_CID(loc) ((loc) >> LOC_SLOT_BITS)
#define LOC_SLOT(loc) ((uint32_t)((loc) & ((1u << LOC_SLOT_BITS) - 1)))

/* Content index value (key: the 32-byte SHA-256). 12 bytes: LMDB only 2-aligns, use memcpy. */
struct content_val {
	uint64_t loc;
	uint32_t refs; /**< leaf entries + queued decrefs naming this hash; UINT32_MAX sticks */
} __attribute__((packed));

#define REFS_STICKY UINT32_MAX

/* Container record (key: u64 cid). */
#define CTR_SEALED 0x1u
struct ctr_rec {
	uint32_t used;  /**< slots [0, used) may hold committed data; appends resume here */
	uint32_t live;  /**< index entries with refs > 0 located here */
	uint32_t flags; /**< CTR_SEALED: never appended to again */
	uint32_t reserved;
};

/* Volume record (key: the name). */
#define VOL_MAGIC 0x4c4f5644u /* "DVOL" */
#define VOL_READONLY 0x1u
struct vol_rec {
	uint32_t magic;
	uint32_t flags;
	uint64_t size_bytes;
	uint64_t root;    /**< node id, 0 = all zeros */
	uint32_t levels;  /**< tree height: the root is at level levels - 1 */
	uint32_t reserved;
	uint64_t nonzero; /**< blocks mapped to non-zero content */
	int64_t created;
	char origin[DEDUP_NAME_MAX + 1];
};

/* Reclaim queue item (key: u64 sequence number, appended). */
#define RQ_HASH 1 /* drop one reference to a content hash: 1 + 32 bytes */
#define RQ_NODE 2 /* drop one reference to a map node: 1 + 8 bytes */

/* Meta keys */
#define META_FORMAT "format"
#define META_CTR_BYTES "ctr_bytes"
#define META_NEXT_NODE "next_node"
#define META_RQ_NEXT "rq_next"
#define META_ZOMBIES "zombies"
#define META_ZERO_WRITES "zero_writes"
#define META_CKPT_GEN "ckpt_gen" /* journal generation the last checkpoint committed */

/* ---- containers ---------------------------------------------------------------------------- */

#define CTR_CHUNK 1024
#define CTR_DIR 65536 /* at most 64 Mi containers over the store's life */

struct ctr {
	uint64_t cid;
	int fd;
	atomic_uint refs;     /**< the table's reference + read pins; the fd closes at 0 */
	atomic_uint inflight; /**< prepared writes (new slots, duplicate hits) not yet done */
	atomic_int retiring;  /**< the collector is emptying it: no new duplicate hits */
};

/* ---- store -------------------------------------------------------------------------------- */

struct wop;
struct wstate;
struct ovl;
struct vstate;

struct dedup_store {
	char *dir;                         /**< [const] */
	int lock_fd;                       /**< [const] flock'd */
	MDB_env *env;                      /**< [const] */
	MDB_dbi dbi_meta, dbi_vols, dbi_nodes, dbi_noderef, dbi_content, dbi_ctrs, dbi_rq;
	uint64_t map_bytes;                /**< [writer] current map size */
	uint64_t map_max_bytes;            /**< [const] */
	uint64_t ctr_bytes;                /**< [const] container file size */
	uint32_t ctr_slots;                /**< [const] ctr_bytes / 4 KiB */
	uint32_t group_max_blk;            /**< [const] */
	uint32_t gc_dead_pct;              /**< [const] */
	uint64_t ckpt_age_ns;              /**< [const] checkpoint_ms */
	int direct;                        /**< [const] container fds are O_DIRECT */
	EVP_MD *sha256;                    /**< [const] fetched once */

	/*
	 * Readers (prepare of reads and writes) hold this shared while their LMDB read snapshot is
	 * live; the writer takes it exclusively to remap a grown LMDB map and to retire a
	 * container, so no reader holds a pointer into the old map or a location in a deleted file.
	 */
	pthread_rwlock_t rd_lock;

	/* Container table: ctr_dir[cid / CTR_CHUNK][cid % CTR_CHUNK]; chunks are never freed. */
	struct ctr *_Atomic *_Atomic ctr_dir[CTR_DIR];
	pthread_mutex_t alloc_lock;
	struct ctr *active;       /**< [alloc] container receiving appends, NULL: make one */
	uint32_t active_next;     /**< [alloc] next free slot in it */
	uint64_t next_cid;        /**< [alloc] */

	pthread_mutex_t vol_lock;
	struct dedup_vol *vols;   /**< [vol_lock] open handles */
	struct ovl *ovl;          /**< readers: rd_lock shared; the writer: rd_lock exclusive */
	int jfd;                  /**< the journal */

	pthread_t writer;
	pthread_mutex_t wq_lock;
	pthread_cond_t wq_cond;   /**< wakes the writer */
	pthread_cond_t op_cond;   /**< wakes callers waiting for an admin op */
	struct dedup_req *wq_head, *wq_tail; /**< [wq] submitted writes, discards, flushes */
	struct wop *op_head, *op_tail;       /**< [wq] admin ops */
	int stop;                            /**< [wq] */
	int writer_running;
	struct wstate *w;                    /**< [writer] */
};

struct dedup_vol {
	struct dedup_store *s;
	char name[DEDUP_NAME_MAX + 1];
	struct vstate *vs;      /**< the volume's overlay (shared by its handles) */
	int readonly;
	_Atomic uint64_t size_bytes;
	struct dedup_vol *next; /**< [vol_lock] */
};

struct dedup_ctx {
	struct dedup_store *s;
	EVP_MD_CTX *md;
	MDB_txn *rtxn; /**< reset while idle, renewed per prepare */
	int efd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct dedup_req *done_head, *done_tail; /**< [lock] */
	void *bounce;          /**< aligned scratch for the synchronous helpers */
	struct dedup_req *sreq; /**< request of the synchronous helpers */
};

enum req_kind { REQ_READ = 1, REQ_WRITE, REQ_DISCARD, REQ_FLUSH };
enum req_state { RS_IDLE = 0, RS_PREPARED, RS_QUEUED, RS_DONE };
enum blk_kind { BLK_ZERO = 0, BLK_NEW, BLK_DUP, BLK_SAME };

struct req_blk {
	uint8_t hash[HASH_BYTES];
	uint8_t kind;      /**< enum blk_kind */
	uint16_t same_as;  /**< BLK_SAME: earlier block of this request with the same content */
	uint64_t loc;      /**< BLK_NEW: the allocated slot */
	struct ctr *ctr;   /**< BLK_NEW / BLK_DUP: holds an inflight count on it */
	uint8_t indexed;   /**< BLK_NEW: the writer indexed this copy (not a twin's) */
};

struct dedup_req {
	enum req_kind kind;
	enum req_state state;
	int status;
	uint32_t max_blk;
	struct dedup_ctx *ctx;
	struct dedup_vol *vol;
	uint64_t first_blk;
	uint64_t nr_blk;
	void *priv;
	struct dedup_req *next;
	int prefail; /**< the writer failed it before applying (not retried) */
	unsigned nr_ext;
	struct dedup_extent *ext;  /**< [max_blk] */
	struct ctr **ext_ctr;      /**< [max_blk] read pins */
	struct iovec *xiov;        /**< [max_blk] */
	struct req_blk *blk;       /**< [max_blk] */
};

/* ---- what the writer applies and journals -------------------------------------------------- */

#define JENT_WRITE 1
#define JENT_DISCARD 2

struct wrec {
	uint8_t type;          /**< JENT_WRITE / JENT_DISCARD */
	const char *name;
	uint64_t first_blk;
	uint64_t nr_blk;
	struct req_blk *blk;   /**< JENT_WRITE: nr_blk blocks */
};

struct jbuf {
	uint8_t *buf;
	size_t len, cap;
};

/* ---- writer transaction state -------------------------------------------------------------- */

/* A node held by the writer during one transaction. */
struct ncent {
	uint64_t id;
	uint8_t dirty;   /**< written back at commit */
	uint8_t excl;    /**< known to have refcount 1 on an exclusive path: modify in place */
	uint8_t isnew;   /**< created in this transaction */
	uint8_t deleted; /**< freed in this transaction */
	struct ncent *free_next;
	struct node n;
};

struct ctr_delta {
	uint64_t cid;
	int64_t live;
	uint32_t used_max; /**< committed slot high-water (0: unchanged) */
	uint32_t set_flags;
	int remove;        /**< delete the record (collector) */
};

struct wvol {
	char name[DEDUP_NAME_MAX + 1];
	struct vol_rec rec;
	int exists;
	int dirty;
	int deleted;
};

struct wtx {
	struct dedup_store *s;
	MDB_txn *txn;
	uint64_t next_node;
	uint64_t rq_next;
	uint64_t zombies;
	uint64_t zero_writes;
	int64_t rq_delta;       /**< items pushed - popped */
	/* node cache: open addressing on id; entries recycled through free_ents */
	struct ncent **tab;
	uint32_t tab_cap;
	uint32_t tab_used;
	struct ncent **list;    /**< entries in insertion order */
	uint32_t nlist, cap_list;
	struct ncent *free_ents;
	uint32_t nfree;
	struct ctr_delta *cd;
	unsigned ncd, cap_cd;
	struct wvol *vols;
	unsigned nvols, cap_vols;
};

/* ---- store.c ------------------------------------------------------------------------------- */

int dedup_mdb_err(int rc);
int dedup_name_ok(const char *name);
int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *v, uint64_t dflt);
int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t v);
void dedup_sha256(EVP_MD_CTX *md, const EVP_MD *alg, const void *blk, uint8_t out[HASH_BYTES]);
int dedup_block_is_zero(const void *blk);
int dedup_hash_is_zero(const uint8_t *h);
int dedup_map_grow(struct dedup_store *s);
uint64_t levels_span(unsigned level);
unsigned levels_for(uint64_t nr_blk);

/* ---- container.c --------------------------------------------------------------------------- */

int ctr_table_load(struct dedup_store *s);
int ctr_table_finish(struct dedup_store *s);
void ctr_table_free(struct dedup_store *s);
struct ctr *ctr_lookup(struct dedup_store *s, uint64_t cid);
void ctr_put(struct ctr *c);
int ctr_alloc(struct dedup_store *s, uint32_t want, struct ctr **ctr, uint32_t *slot,
	      uint32_t *got);
void ctr_seal_active(struct dedup_store *s, uint64_t cid);
void ctr_retire(struct dedup_store *s, struct ctr *c);
int ctr_path(const struct dedup_store *s, uint64_t cid, char *buf, size_t len);
int ctr_is_active(struct dedup_store *s, uint64_t cid);

/* ---- map.c (writer side) ------------------------------------------------------------------- */

int wtx_begin(struct dedup_store *s, struct wtx *w);
int wtx_flush(struct wtx *w);
int wtx_commit(struct wtx *w);
void wtx_abort(struct wtx *w);
void wtx_free(struct wtx *w);
int node_peek(struct wtx *w, uint64_t id, const struct node **out);
int noderef_get(MDB_txn *txn, struct dedup_store *s, uint64_t id, uint32_t *ref);
int noderef_set(struct wtx *w, uint64_t id, uint32_t ref);
int map_get(struct wtx *w, const struct vol_rec *vr, uint64_t lba, uint8_t out[HASH_BYTES]);
int map_set(struct wtx *w, struct vol_rec *vr, uint64_t lba, const uint8_t nh[HASH_BYTES]);
int map_discard(struct wtx *w, struct vol_rec *vr, uint64_t lba, uint64_t n, uint64_t *removed);
int map_grow(struct wtx *w, struct vol_rec *vr, uint64_t new_blocks);
int map_node_decref(struct wtx *w, uint64_t id, uint8_t *hashes, unsigned *nhashes);
int map_count(struct wtx *w, uint64_t id, unsigned level, uint64_t *nonzero);
int wvol_get(struct wtx *w, const char *name, struct wvol **out);

/* ---- index.c ------------------------------------------------------------------------------- */

int content_get(MDB_txn *txn, struct dedup_store *s, const uint8_t *h, struct content_val *v);
int content_put(struct wtx *w, const uint8_t *h, const struct content_val *v);
int content_del(struct wtx *w, const uint8_t *h);
int content_incref(struct wtx *w, const uint8_t *h);
int content_add_new(struct wtx *w, const uint8_t *h, uint64_t loc, int *indexed);
int content_decref(struct wtx *w, const uint8_t *h);
struct ctr_delta *ctr_delta_get(struct wtx *w, uint64_t cid);
void ctr_used_bump(struct wtx *w, uint64_t loc);
int rq_push_hash(struct wtx *w, const uint8_t *h);
int rq_push_node(struct wtx *w, uint64_t id);
int rq_process(struct wtx *w, unsigned budget, unsigned *done);

/* ---- writer.c ------------------------------------------------------------------------------ */

struct wop {
	int (*fn)(struct dedup_store *s, struct wop *op);
	const char *a, *b; /**< names */
	uint64_t u;        /**< size, flags */
	void *out;
	int rc;
	int done;
	int cancel;        /**< [wq] set by the caller's progress callback */
	struct dedup_progress prog; /**< [wq] */
	uint64_t prog_seq;          /**< [wq] reports made */
	uint64_t prog_ack;          /**< [wq] reports the caller's callback has returned from */
	int has_fn;                 /**< [wq] a callback consumes the reports */
	struct wop *next;
};

int writer_start(struct dedup_store *s);
void writer_stop(struct dedup_store *s);
int writer_call(struct dedup_store *s, struct wop *op, dedup_progress_fn fn, void *arg);
void writer_progress(struct dedup_store *s, struct wop *op, const struct dedup_progress *p);
int writer_cancelled(struct dedup_store *s, struct wop *op);
void writer_service_io(struct dedup_store *s);
int writer_txn(struct dedup_store *s, int (*fn)(struct wtx *w, void *arg), void *arg);
int writer_drain_reclaim(struct dedup_store *s);
void writer_enqueue(struct dedup_store *s, struct dedup_req *r);
void req_complete(struct dedup_req *r, int status);
void req_release_ctrs(struct dedup_req *r);

int writer_checkpoint(struct dedup_store *s);
int writer_checkpoint_call(struct dedup_store *s);

/* ---- journal.c / overlay.c ----------------------------------------------------------------- */

uint32_t dedup_crc32c(const void *buf, size_t len);
int jnl_open(struct dedup_store *s);
int jnl_encode(struct jbuf *jb, uint64_t gen, const struct wrec *rec);
int jnl_append(struct dedup_store *s, uint64_t *off, const void *buf, size_t len);
int jnl_truncate(struct dedup_store *s);
int jnl_replay(struct dedup_store *s, uint64_t gen, uint64_t limit,
	       int (*fn)(const struct wrec *rec, void *arg), void *arg, uint64_t *end);

int ovl_init(struct dedup_store *s);
void ovl_free(struct dedup_store *s);
struct vstate *ovl_vstate(struct dedup_store *s, const char *name);
int ovl_lookup_blk(const struct vstate *vs, uint64_t lba, uint8_t out[HASH_BYTES]);
int ovl_lookup_content(const struct dedup_store *s, const uint8_t *h, uint64_t *loc);
int ovl_reserve_blk(struct vstate *vs, uint32_t more);
void ovl_set_blk(struct vstate *vs, uint64_t lba, const uint8_t *h);
int ovl_discard(struct vstate *vs, uint64_t lo, uint64_t hi);
unsigned ovl_tombstones(const struct vstate *vs);
int ovl_reserve_content(struct dedup_store *s, uint32_t more);
void ovl_add_content(struct dedup_store *s, const uint8_t *h, uint64_t loc);
void ovl_clear(struct dedup_store *s);

/* ---- gc.c / fsck.c ------------------------------------------------------------------------- */

int gc_run(struct dedup_store *s, struct wop *op, int force);
int gc_background(struct dedup_store *s);
int fsck_run(struct dedup_store *s, struct wop *op);

/* ---- io.c ---------------------------------------------------------------------------------- */

int vol_rec_read(MDB_txn *txn, struct dedup_store *s, const char *name, struct vol_rec *vr);
int ctx_read_begin(struct dedup_ctx *c);
int dedup_extent_io(const struct dedup_extent *e, int write);
void ctx_read_end(struct dedup_ctx *c);

#endif
