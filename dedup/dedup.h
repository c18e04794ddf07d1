/*
 * dedup.h - the content-addressed dedup store: volumes whose 4 KiB blocks are stored once per
 * distinct content, with O(1) snapshots and clones (a Parallax-style copy-on-write radix tree per
 * volume), a SHA-256 content index with reference counts in LMDB, and append-only container
 * files for block data. docs/dedup.md has the on-disk format and the crash-consistency argument.
 *
 * Handles (all opaque):
 *   struct dedup_store  one store (a directory); one process opens it at a time (flock).
 *   struct dedup_ctx    a per-thread context: SHA-256 state, an LMDB read slot, a completion
 *                       queue with an eventfd. One thread uses a context at a time.
 *   struct dedup_vol    an open volume (or snapshot, read-only). Shared by any number of threads.
 *   struct dedup_req    one I/O request, preallocated by the caller (no allocation per I/O).
 *
 * Threads. The store owns one writer thread: the only LMDB writer. Every metadata change
 * (writes, discards, volume operations, reclaim, the collector, fsck) runs there. It applies
 * groups of requests to one open transaction, journals them (one write per group: that is the
 * acknowledgement point) and commits the transaction as a checkpoint every 32768 blocks or when
 * writes pause. Callers' threads hash blocks, look blocks up, allocate container slots and do
 * the data I/O themselves. See docs/dedup.md, "Concurrency" and "Durability".
 *
 * The asynchronous I/O protocol (what blkbackd's dedup target does, per ring thread):
 *
 *   write:   dedup_write_prepare()      hash, drop zeros, find duplicates, allocate slots
 *            for each dedup_req_extent(): pwritev(e->fd, e->iov, e->iovcnt, e->offset_bytes)
 *            dedup_write_submit(status) hand the request to the writer (status < 0 aborts it)
 *            ... later dedup_ctx_reap() returns it: status 0 means it survives kill -9 and
 *            every later read sees it; a FLUSH makes it durable against power loss.
 *   read:    dedup_read_prepare()       zero blocks are filled in place
 *            for each dedup_req_extent(): preadv(e->fd, e->iov, e->iovcnt, e->offset_bytes)
 *            dedup_read_finish()        unpins the container files
 *   discard: dedup_discard_submit()     completes through dedup_ctx_reap()
 *   flush:   dedup_flush_submit()       completes through dedup_ctx_reap()
 *
 * Units: volume addresses and lengths are in 4 KiB blocks (`_blk`); sizes are in bytes.
 * Errors: every function returns 0 or a negative errno (LMDB codes are translated: map full and
 * disk full are -ENOSPC, a corrupt database is -EIO).
 */
#ifndef SLUICE_DEDUP_DEDUP_H
#define SLUICE_DEDUP_DEDUP_H

#include <stdint.h>
#include <sys/uio.h>

#define DEDUP_BLOCK_BYTES 4096u /**< the unit of dedup and of every volume address */
#define DEDUP_NAME_MAX 63       /**< longest volume or snapshot name */
#define DEDUP_REQ_MAX_BLK 256   /**< most blocks one request can carry */

struct dedup_store;
struct dedup_ctx;
struct dedup_vol;
struct dedup_req;

/** Options of dedup_store_open(). Zero means the default everywhere. */
struct dedup_opts {
	int create;               /**< create the store (directory, index) if missing */
	int direct;               /**< open container files with O_DIRECT when the FS allows */
	uint64_t container_bytes; /**< container file size for a new store (default 64 MiB, a
				       multiple of 4 KiB, 64 KiB..4 GiB); fixed at creation */
	uint64_t map_bytes;       /**< initial LMDB map size (default 4 GiB; address space only) */
	uint64_t map_max_bytes;   /**< the map grows (doubling) up to this (default 4 TiB); beyond
				       it metadata updates fail with -ENOSPC */
	uint32_t group_max_blk;   /**< most blocks the writer takes as one group (default 8192) */
	uint32_t gc_dead_pct;     /**< background collector: compact full containers with at least
				       this % dead blocks when idle (default 0: only
				       dedup_store_gc) */
	uint32_t checkpoint_ms;   /**< an acknowledged write waits at most this long in the journal
				       before a checkpoint commits it to the index, and 1/50 of it
				       once writes pause (default 1000) */
};

/** Progress of a long operation (import, export, gc), in the operation's own units. */
struct dedup_progress {
	uint64_t done;        /**< bytes (import/export) or container bytes scanned (gc) so far */
	uint64_t total;       /**< the same unit, for the whole operation */
	uint64_t freed_bytes; /**< gc: container bytes returned to the file system so far */
};

/**
 * Progress callback, called in the caller's thread every few MiB and once at the end.
 * Returning non-zero cancels the operation, which then returns -ECANCELED (work already
 * committed stays).
 */
typedef int (*dedup_progress_fn)(const struct dedup_progress *p, void *arg);

/** Pool-wide numbers (dedup_store_stats). Blocks are 4 KiB. */
struct dedup_stats {
	uint64_t logical_bytes;    /**< non-zero data the volumes and snapshots hold, each counted
					in full: what a store without any sharing would hold */
	uint64_t stored_bytes;     /**< unique_blocks * 4 KiB: the distinct data referenced */
	uint64_t unique_blocks;    /**< index entries with a reference count > 0 */
	uint64_t zero_blocks;      /**< blocks of volumes and snapshots that read as zeros (never
					stored: written as zeros, discarded or never written) */
	uint64_t zero_writes;      /**< all-zero blocks written and elided since creation */
	double dedup_ratio;        /**< logical_bytes / stored_bytes (1.0 when nothing is stored) */
	uint64_t dead_blocks;      /**< container slots holding no live block (the collector's
					work: reclaimable space) */
	uint64_t container_bytes;  /**< size of all container files */
	uint64_t containers;       /**< number of container files */
	uint64_t index_bytes;      /**< LMDB pages of the content index (hash -> location, refs) */
	uint64_t map_bytes;        /**< LMDB pages of every volume's block map */
	uint64_t meta_file_bytes;  /**< size of the LMDB file (all metadata, free pages too) */
	uint64_t reclaim_pending;  /**< references waiting in the reclaim queue */
	uint32_t volumes;          /**< writable volumes */
	uint32_t snapshots;        /**< read-only snapshots */
};

/** One volume or snapshot (dedup_vol_get / dedup_vol_list). */
struct dedup_vol_info {
	char name[DEDUP_NAME_MAX + 1];
	char origin[DEDUP_NAME_MAX + 1]; /**< what it was snapshotted or cloned from ("" if none) */
	uint64_t size_bytes;
	uint64_t mapped_bytes;           /**< non-zero blocks * 4 KiB */
	int64_t created;                 /**< unix time */
	int readonly;                    /**< a snapshot */
};

/** What dedup_store_fsck found (and repaired, with DEDUP_FSCK_REPAIR). */
struct dedup_fsck_report {
	uint64_t volumes;             /**< volumes and snapshots checked */
	uint64_t nodes;               /**< map nodes reachable from them */
	uint64_t index_entries;       /**< content index entries checked */
	uint64_t ref_too_high;        /**< index refcounts above the maps' count (leaks) */
	uint64_t leaked_blocks;       /**< of those, blocks no map references at all */
	uint64_t ref_too_low;         /**< index refcounts below the maps' count (would free live
					   data early) */
	uint64_t missing_blocks;      /**< distinct hashes the maps reference with no index entry
					   (data lost; not repairable) */
	uint64_t bad_locations;       /**< index entries pointing outside any container (data
					   lost; not repairable) */
	uint64_t node_ref_errors;     /**< map node refcounts wrong */
	uint64_t leaked_nodes;        /**< map nodes no volume reaches */
	uint64_t missing_nodes;       /**< nodes a map points at that do not exist (not
					   repairable) */
	uint64_t bad_nodes;           /**< nodes with a wrong header (level, count) */
	uint64_t container_errors;    /**< container live/used counters wrong */
	uint64_t orphan_containers;   /**< container files the index does not know */
	uint64_t missing_containers;  /**< containers the index knows with no file */
	uint64_t counter_errors;      /**< volume block counts or pool counters wrong */
	uint64_t verify_errors;       /**< DEDUP_FSCK_VERIFY: blocks whose data does not hash to
					   their name */
	uint64_t repaired;            /**< problems fixed */
};

#define DEDUP_FSCK_REPAIR 0x1 /**< fix what can be fixed */
#define DEDUP_FSCK_VERIFY 0x2 /**< also read every live block and check its hash */

/** The location of one data I/O of a request: do preadv/pwritev(fd, iov, iovcnt, offset). */
struct dedup_extent {
	int fd;                   /**< container file; valid until the request completes */
	uint64_t offset_bytes;    /**< offset in that file, 4 KiB aligned */
	const struct iovec *iov;  /**< the caller's buffers for these blocks (slices of the
				       request's iov) */
	unsigned iovcnt;
	uint32_t nr_blk;          /**< blocks in this extent */
};

/* ---------------------------------------------------------------------------------------- */
/* Store */

/**
 * Open (or, with o->create, create) the store in directory @dir. Recovers from any crash: the
 * journal is replayed onto the last checkpoint (a new block whose data does not hash to its
 * name, which only a power loss can leave, is dropped like an unflushed write) and committed,
 * and container files nothing refers to are removed. Starts the writer thread. Only one
 * process may have a store open (-EBUSY otherwise).
 * Returns 0, -ENOENT (missing and not o->create), -EBUSY, -EINVAL (bad options, or a store of an
 * unknown format), -ENOMEM, -EIO or -errno.
 */
int dedup_store_open(const char *dir, const struct dedup_opts *o, struct dedup_store **out);

/**
 * Close the store: finishes every request already submitted, stops the writer after a last
 * checkpoint (the journal is empty afterwards). Every context and volume handle must be closed
 * first.
 */
void dedup_store_close(struct dedup_store *s);

/**
 * Fill @st. Commits what the writer holds first (a checkpoint: it costs two fdatasyncs when
 * writes are pending), then reads a snapshot. Returns 0 or -errno.
 */
int dedup_store_stats(struct dedup_store *s, struct dedup_stats *st);

/**
 * Apply every reference drop waiting in the reclaim queue now (normally done in the background
 * when the writer is idle). Returns 0 or -errno.
 */
int dedup_store_reclaim(struct dedup_store *s);

/**
 * Run the collector now: drain the reclaim queue, then compact every container that holds dead
 * blocks (copy the live ones to the open container, commit, delete the file). Containers with
 * I/O in flight are skipped. I/O continues between containers. @fn may be NULL.
 * Returns 0, -ECANCELED, -ENOSPC or -errno.
 */
int dedup_store_gc(struct dedup_store *s, dedup_progress_fn fn, void *arg);

/**
 * Check the block maps, the content index, the refcounts and the container files against each
 * other (DEDUP_FSCK_* flags) and fill @r. Writes pause while it runs. Returns 0 when it could
 * check everything (look at @r for what it found), or -errno.
 */
int dedup_store_fsck(struct dedup_store *s, unsigned flags, struct dedup_fsck_report *r);

/** 1 if the report has no problem in it. */
int dedup_fsck_clean(const struct dedup_fsck_report *r);

/* ---------------------------------------------------------------------------------------- */
/* Volumes and snapshots. Names: [A-Za-z0-9_.-], 1..63 characters, not starting with '.'. */

/**
 * Create an empty (all zeros) volume of @size_bytes (a multiple of 4 KiB, > 0).
 * Returns 0, -EEXIST, -EINVAL, -EFBIG (too large for the map), -ENOSPC or -errno.
 */
int dedup_vol_create(struct dedup_store *s, const char *name, uint64_t size_bytes);

/**
 * Make read-only snapshot @snap of @vol in O(1): it shares @vol's whole map. It holds every
 * write acknowledged before the call. Returns 0, -ENOENT, -EEXIST, -EINVAL, -ENOSPC or -errno.
 */
int dedup_vol_snapshot(struct dedup_store *s, const char *vol, const char *snap);

/**
 * Make writable volume @newvol sharing every block of @src (a snapshot or a volume) in O(1).
 * Writes to either never show in the other. Returns as dedup_vol_snapshot().
 */
int dedup_vol_clone(struct dedup_store *s, const char *src, const char *newvol);

/**
 * Delete a volume or snapshot. Its references are dropped in the background (reclaim queue);
 * space returns with the collector. Returns 0, -ENOENT, -EBUSY (open) or -errno.
 */
int dedup_vol_delete(struct dedup_store *s, const char *name);

/**
 * Grow or shrink a volume (not a snapshot) online to @size_bytes (multiple of 4 KiB, > 0).
 * Shrinking drops the blocks past the new end. Open handles see the new size when this returns.
 * Returns 0, -ENOENT, -EROFS, -EINVAL, -EFBIG, -ENOSPC or -errno.
 */
int dedup_vol_resize(struct dedup_store *s, const char *name, uint64_t size_bytes);

/** Describe one volume (after a checkpoint, as stats). Returns 0, -ENOENT, -EINVAL or -errno. */
int dedup_vol_get(struct dedup_store *s, const char *name, struct dedup_vol_info *info);

/** All volumes and snapshots sorted by name into a malloc'd array; free() it. */
int dedup_vol_list(struct dedup_store *s, struct dedup_vol_info **out, unsigned *count);

/**
 * The volume's share of the stored data: every block it maps counts 4 KiB divided by the
 * number of references to that content (and to each shared map node on the way), so the shares
 * of all volumes add up to stored_bytes once the reclaim queue is empty. Walks the whole map:
 * O(mapped blocks). Returns 0, -ENOENT or -errno.
 */
int dedup_vol_share(struct dedup_store *s, const char *name, uint64_t *share_bytes);

/**
 * Write the raw image read from @fd (a regular file, from offset 0 to its size) into volume
 * @name, which must be at least that large; a partial last block is padded with zeros.
 * Returns 0, -ENOENT, -EFBIG, -EROFS, -ECANCELED, -ENOSPC, -EIO or -errno.
 */
int dedup_vol_import(struct dedup_store *s, const char *name, int fd, dedup_progress_fn fn,
		     void *arg);

/**
 * Write volume @name as a raw image to @fd. A regular file is truncated and zero blocks are left
 * as holes; anything else (a pipe, a device) gets every byte in order.
 * Returns 0, -ENOENT, -ECANCELED, -EIO or -errno.
 */
int dedup_vol_export(struct dedup_store *s, const char *name, int fd, dedup_progress_fn fn,
		     void *arg);

/**
 * Open a handle for I/O on a volume or snapshot (snapshots are read-only: writes fail with
 * -EROFS). A volume with open handles cannot be deleted. Returns 0, -ENOENT, -ENOMEM or -errno.
 */
int dedup_vol_open(struct dedup_store *s, const char *name, struct dedup_vol **out);

/** Close a handle; its requests must have completed. */
void dedup_vol_close(struct dedup_vol *v);

/** Current size in bytes (follows online resizes). */
uint64_t dedup_vol_size(const struct dedup_vol *v);

/** 1 for a snapshot. */
int dedup_vol_readonly(const struct dedup_vol *v);

/* ---------------------------------------------------------------------------------------- */
/* Contexts and requests */

/**
 * A context for the calling thread: its SHA-256 state (one EVP_MD_CTX, reused for every block),
 * an LMDB read slot, a completion queue. Returns 0, -ENOMEM, -EUSERS (reader slots exhausted)
 * or -errno.
 */
int dedup_ctx_open(struct dedup_store *s, struct dedup_ctx **out);

/** Close a context; every request submitted on it must have been reaped. */
void dedup_ctx_close(struct dedup_ctx *c);

/** An eventfd that becomes readable when completions are waiting for dedup_ctx_reap(). */
int dedup_ctx_fd(struct dedup_ctx *c);

/**
 * Pop one completed request (write, discard, flush) and its status into *status, or NULL when
 * none is waiting. Also clears the eventfd when the queue becomes empty.
 */
struct dedup_req *dedup_ctx_reap(struct dedup_ctx *c, int *status);

/** Allocate a request able to carry @max_blk blocks (1..DEDUP_REQ_MAX_BLK). */
int dedup_req_alloc(uint32_t max_blk, struct dedup_req **out);
void dedup_req_free(struct dedup_req *r);
void dedup_req_set_priv(struct dedup_req *r, void *priv);
void *dedup_req_priv(const struct dedup_req *r);

/** Data I/Os the prepared request needs (0 for an all-zero or all-duplicate write). */
unsigned dedup_req_nr_extents(const struct dedup_req *r);

/** The @i-th one; valid until the request completes (or is finished, for reads). */
const struct dedup_extent *dedup_req_extent(const struct dedup_req *r, unsigned i);

/**
 * Prepare a read of @nr_blk blocks at @first_blk into @iov (every element a multiple of 4 KiB,
 * total nr_blk * 4 KiB). Zero blocks are filled now; the caller reads the extents, then calls
 * dedup_read_finish(). Reads see every write acknowledged before the call.
 * Returns 0, -EINVAL (range or iov), -EIO or -errno.
 */
int dedup_read_prepare(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
		       uint32_t nr_blk, const struct iovec *iov, unsigned iovcnt,
		       struct dedup_req *r);

/** Release what dedup_read_prepare() pinned; call after the extent reads are done. */
void dedup_read_finish(struct dedup_ctx *c, struct dedup_req *r);

/**
 * Prepare a write of @iov (as for reads) at @first_blk: hash each block, drop zero blocks,
 * find duplicates (no data I/O for them) and allocate container slots for new content, which the
 * caller writes through the extents. The buffers must stay unchanged until the request completes.
 * Returns 0, -EINVAL, -EROFS, -ENOSPC (no room for a container file) or -errno; on error
 * nothing was allocated and dedup_write_submit() must not be called.
 */
int dedup_write_prepare(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
			uint32_t nr_blk, const struct iovec *iov, unsigned iovcnt,
			struct dedup_req *r);

/**
 * Hand a prepared write to the writer once its extent writes are done; @io_status < 0 (an extent
 * write failed) completes it with that status and changes nothing. Completion comes through
 * dedup_ctx_reap() on @c: 0 once the write is applied and journaled (survives kill -9, visible
 * to reads), -ENOSPC, -EINVAL (the volume shrank under it) or -errno.
 */
void dedup_write_submit(struct dedup_ctx *c, struct dedup_req *r, int io_status);

/**
 * Discard @nr_blk blocks at @first_blk: they read as zeros after completion and their references
 * go to the reclaim queue. Whole map subtrees are dropped in O(1) each. Returns 0 (completion
 * through dedup_ctx_reap) or -EINVAL / -EROFS (no completion).
 */
int dedup_discard_submit(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
			 uint64_t nr_blk, struct dedup_req *r);

/**
 * Make every write completed before the call durable against power loss: fdatasync of the
 * containers written since their last sync, then of the journal. Completes through
 * dedup_ctx_reap(). Returns 0 (the completion's status is 0 or -EIO).
 */
int dedup_flush_submit(struct dedup_ctx *c, struct dedup_req *r);

/**
 * Wait for request @r (submitted on @c) to complete and return its status; it is not returned
 * by dedup_ctx_reap() afterwards. For tools and tests; the I/O path reaps instead.
 */
int dedup_req_wait(struct dedup_ctx *c, struct dedup_req *r);

/* ---------------------------------------------------------------------------------------- */
/* Synchronous I/O helpers (tools and tests): the same path, with the data I/O done by pread /
 * pwrite and a wait for the commit. Any buffer alignment. */

int dedup_vol_read(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk, uint32_t nr_blk,
		   void *buf);
int dedup_vol_write(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
		    uint32_t nr_blk, const void *buf);
int dedup_vol_discard(struct dedup_ctx *c, struct dedup_vol *v, uint64_t first_blk,
		      uint64_t nr_blk);
int dedup_ctx_flush(struct dedup_ctx *c);

#endif
