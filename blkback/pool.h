/*
 * pool.h - a pool: the directory holding a host's volumes and blkbackd's control socket.
 *
 * Layout (POOL is the directory given with --pool / BLKCTL_POOL):
 *   POOL/vols/<name>.img    the raw volume (sparse file), for store "raw"
 *   POOL/vols/<name>.json   volume metadata: {"name","size","store","created"} (json-c)
 *   POOL/blkbackd.sock      control socket of the running blkbackd (see ctl.h)
 *   POOL/blkbackd.lock      flock'd by the running blkbackd
 *   POOL/dedup/             the dedup store (dedup/dedup.h) holding every volume of store
 *                           "dedup": their blocks and snapshots; the .json is their metadata
 * Volume names: [A-Za-z0-9_.-], 1..63 characters, not starting with '.'.
 * Metadata files are replaced atomically (write temp, fsync, rename). The metadata file is the
 * commit point: a volume exists when its .json does. Writers serialise on flock(POOL/vols/.lock),
 * so blkctl and blkbackd may change one pool at the same time.
 */
#ifndef SLUICE_BLKBACK_POOL_H
#define SLUICE_BLKBACK_POOL_H

#include <stdint.h>

#define POOL_VOL_NAME_MAX 63
#define POOL_STORE_DEDUP "dedup"

struct pool_vol {
	char name[POOL_VOL_NAME_MAX + 1];
	uint64_t size_bytes; /**< the volume's size as recorded */
	char store[16];	     /**< POOL_STORE_RAW or POOL_STORE_DEDUP */
	int64_t created;     /**< unix time */
};

/** 1 if @name is a valid volume name, else 0. */
int pool_vol_name_ok(const char *name);

/** Create POOL (with its parents, as mkdir -p) and POOL/vols if missing. Returns 0 or -errno. */
int pool_init(const char *pool);

/**
 * Create volume @name of @size_bytes (multiple of 512, > 0) with store "raw": a sparse file and
 * its metadata. Creates the pool directories if missing. Returns 0, -EEXIST, -EINVAL (bad name
 * or size), -EFBIG (larger than the file system allows), -ENOSPC or -errno.
 */
int pool_vol_create(const char *pool, const char *name, uint64_t size_bytes);

/**
 * Record metadata only for volume @name of @store (the data lives elsewhere: the dedup store
 * creates it first). Size rules as pool_vol_create(). Returns 0, -EEXIST, -EINVAL or -errno.
 */
int pool_vol_add_meta(const char *pool, const char *name, uint64_t size_bytes,
		      const char *store);

/** Path of the pool's dedup store directory (POOL/dedup) into @buf. 0 or -ENAMETOOLONG. */
int pool_dedup_path(const char *pool, char *buf, unsigned len);

/**
 * Remove a volume's data and metadata. Returns 0, -ENOENT if unknown, -EINVAL for a bad name or
 * -errno. (Attachment checks are the caller's.)
 */
int pool_vol_delete(const char *pool, const char *name);

/**
 * Read a volume's metadata into @out. Returns 0, -ENOENT, -EINVAL (bad name or corrupt metadata)
 * or -errno.
 */
int pool_vol_get(const char *pool, const char *name, struct pool_vol *out);

/**
 * Record a new size in the metadata (the data file is resized by the target). Returns 0, -ENOENT,
 * -EINVAL (bad name, size not a positive multiple of 512, corrupt metadata) or -errno.
 */
int pool_vol_set_size(const char *pool, const char *name, uint64_t size_bytes);

/** Path of a volume's data file into @buf. Returns 0, -EINVAL (bad name) or -ENAMETOOLONG. */
int pool_vol_path(const char *pool, const char *name, char *buf, unsigned len);

/**
 * List volumes sorted by name into a malloc'd array (*out, *count); free() it (*out may be NULL
 * when *count is 0). A volume whose metadata is unreadable is skipped with a warning in the log.
 * Returns 0, -ENOENT if POOL/vols does not exist, or -errno.
 */
int pool_vol_list(const char *pool, struct pool_vol **out, unsigned *count);

/** Path of the control socket into @buf. Returns 0 or -ENAMETOOLONG. */
int pool_ctl_path(const char *pool, char *buf, unsigned len);

#endif
