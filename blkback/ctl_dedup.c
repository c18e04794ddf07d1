/*
 * ctl_dedup.c - blkbackd's side of dedup volumes: the pool's dedup store (POOL/dedup), opened
 * once when the daemon starts (a store has one owner process, so while blkbackd runs every
 * operation on it comes through here), and the control commands on it (protocol in ctl.h).
 * The commands run on the control thread; ring threads keep serving I/O meanwhile.
 */
#define LOG_TAG "blkback"
#include "blkback/blkback_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blkback/ctl.h"
#include "blkback/ctl_dedup.h"
#include "dedup/dedup.h"

int bb_dedup_start(struct blkback *bb)
{
	/* Containers bypass the page cache where raw volumes do (the store probes the FS). */
	struct dedup_opts o = { .create = 1, .direct = !bb->opts.no_direct };
	char dir[512];
	int rc;

	rc = pool_dedup_path(bb->opts.pool, dir, sizeof(dir));
	if (rc < 0)
		return rc;
	rc = dedup_store_open(dir, &o, &bb->dedup);
	if (rc < 0)
		log_err("cannot open the dedup store %s: %s", dir, strerror(-rc));
	return rc;
}

void bb_dedup_stop(struct blkback *bb)
{
	if (bb->dedup) {
		dedup_store_close(bb->dedup);
		bb->dedup = NULL;
	}
}

static json_object *ok(void)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

static json_object *err(int e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_object *err(int e, const char *fmt, ...)
{
	json_object *o = json_object_new_object();
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(why));
	json_object_object_add(o, "errno", json_object_new_int(e < 0 ? -e : e));
	return o;
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

/* A string field naming a volume; NULL (and *ans set) when missing or invalid. */
static const char *vol_field(json_object *req, const char *key, json_object **ans)
{
	json_object *f;
	const char *s;

	if (!json_object_object_get_ex(req, key, &f) || !json_object_is_type(f, json_type_string)) {
		*ans = err(-EINVAL, "the request needs \"%s\" (a volume name)", key);
		return NULL;
	}
	s = json_object_get_string(f);
	if (!pool_vol_name_ok(s)) {
		*ans = err(-EINVAL, "'%.64s' is not a valid volume name", s);
		return NULL;
	}
	return s;
}

/* A volume of the pool whose store is dedup. */
static int dedup_vol_meta(struct blkback *bb, const char *name, struct pool_vol *pv,
			  json_object **ans)
{
	int rc = pool_vol_get(bb->opts.pool, name, pv);

	if (rc < 0) {
		*ans = err(rc, rc == -ENOENT ? "no volume named '%s' in the pool"
					     : "cannot read the metadata of volume '%s'", name);
		return rc;
	}
	if (strcmp(pv->store, POOL_STORE_DEDUP) != 0) {
		*ans = err(-EINVAL, "volume '%s' is not a dedup volume (store %s)", name, pv->store);
		return -EINVAL;
	}
	return 0;
}

static json_object *cmd_create(struct blkback *bb, json_object *req)
{
	json_object *ans = NULL, *f;
	const char *name = vol_field(req, "vol", &ans);
	int64_t size;
	int rc;

	if (!name)
		return ans;
	if (!json_object_object_get_ex(req, "size", &f) || !json_object_is_type(f, json_type_int) ||
	    (size = json_object_get_int64(f)) <= 0 || size % DEDUP_BLOCK_BYTES)
		return err(-EINVAL, "a dedup volume's size must be a positive multiple of 4096");
	rc = pool_vol_get(bb->opts.pool, name, &(struct pool_vol){ 0 });
	if (rc == 0)
		return err(-EEXIST, "volume '%s' already exists", name);
	/* Store first, metadata last: the .json is the commit point of every pool volume. */
	rc = dedup_vol_create(bb->dedup, name, (uint64_t)size);
	if (rc < 0)
		return err(rc, "cannot create dedup volume '%s': %s", name, strerror(-rc));
	rc = pool_vol_add_meta(bb->opts.pool, name, (uint64_t)size, POOL_STORE_DEDUP);
	if (rc < 0) {
		dedup_vol_delete(bb->dedup, name);
		return err(rc, "cannot record volume '%s': %s", name, strerror(-rc));
	}
	log_info("created dedup volume %s (%lld bytes)", name, (long long)size);
	return ok();
}

/* snapshot (read-only) or clone (writable): @src -> @dst, recorded in the pool. */
static json_object *cmd_copy(struct blkback *bb, json_object *req, int snapshot)
{
	json_object *ans = NULL;
	const char *src = vol_field(req, "src", &ans), *dst;
	struct dedup_vol_info info;
	struct pool_vol pv;
	int rc;

	if (!src)
		return ans;
	dst = vol_field(req, "dst", &ans);
	if (!dst)
		return ans;
	if (dedup_vol_meta(bb, src, &pv, &ans) < 0)
		return ans;
	if (pool_vol_get(bb->opts.pool, dst, &(struct pool_vol){ 0 }) == 0)
		return err(-EEXIST, "volume '%s' already exists", dst);
	rc = snapshot ? dedup_vol_snapshot(bb->dedup, src, dst) : dedup_vol_clone(bb->dedup, src, dst);
	if (rc < 0)
		return err(rc, "cannot %s '%s' as '%s': %s", snapshot ? "snapshot" : "clone", src,
			   dst, strerror(-rc));
	rc = dedup_vol_get(bb->dedup, dst, &info);
	rc = rc ?: pool_vol_add_meta(bb->opts.pool, dst, info.size_bytes, POOL_STORE_DEDUP);
	if (rc < 0) {
		dedup_vol_delete(bb->dedup, dst);
		return err(rc, "cannot record volume '%s': %s", dst, strerror(-rc));
	}
	log_info("%s %s of %s", snapshot ? "snapshot" : "clone", dst, src);
	return ok();
}

static json_object *cmd_delete(struct blkback *bb, json_object *req)
{
	json_object *ans = NULL;
	const char *name = vol_field(req, "vol", &ans);
	struct pool_vol pv;
	int rc;

	if (!name)
		return ans;
	if (dedup_vol_meta(bb, name, &pv, &ans) < 0)
		return ans;
	/* The store refuses an open volume: a vbd serving it keeps it. */
	rc = dedup_vol_delete(bb->dedup, name);
	if (rc == -EBUSY)
		return err(rc, "volume '%s' is in use by a vbd; detach it first", name);
	if (rc < 0 && rc != -ENOENT)
		return err(rc, "cannot delete '%s' from the dedup store: %s", name, strerror(-rc));
	rc = pool_vol_delete(bb->opts.pool, name);
	if (rc < 0)
		return err(rc, "cannot remove the metadata of '%s': %s", name, strerror(-rc));
	log_info("deleted dedup volume %s", name);
	return ok();
}

static json_object *cmd_gc(struct blkback *bb)
{
	struct dedup_stats before, after;
	json_object *o;
	int rc;

	rc = dedup_store_stats(bb->dedup, &before);
	rc = rc ?: dedup_store_gc(bb->dedup, NULL, NULL);
	rc = rc ?: dedup_store_stats(bb->dedup, &after);
	if (rc < 0)
		return err(rc, "garbage collection failed: %s", strerror(-rc));
	o = ok();
	add_u64(o, "container_bytes_before", before.container_bytes);
	add_u64(o, "container_bytes", after.container_bytes);
	add_u64(o, "freed_bytes", before.container_bytes > after.container_bytes
					   ? before.container_bytes - after.container_bytes
					   : 0);
	return o;
}

json_object *bb_dedup_fsck_json(const struct dedup_fsck_report *r)
{
	json_object *o = json_object_new_object();

#define F(x) add_u64(o, #x, r->x)
	F(volumes); F(nodes); F(index_entries); F(ref_too_high); F(leaked_blocks);
	F(ref_too_low); F(missing_blocks); F(bad_locations); F(node_ref_errors);
	F(leaked_nodes); F(missing_nodes); F(bad_nodes); F(container_errors);
	F(orphan_containers); F(missing_containers); F(counter_errors); F(verify_errors);
	F(repaired);
#undef F
	json_object_object_add(o, "clean", json_object_new_boolean(dedup_fsck_clean(r)));
	return o;
}

static json_object *cmd_fsck(struct blkback *bb, json_object *req)
{
	struct dedup_fsck_report r;
	unsigned flags = 0;
	json_object *f, *o;
	int rc;

	if (json_object_object_get_ex(req, "repair", &f) && json_object_get_boolean(f))
		flags |= DEDUP_FSCK_REPAIR;
	if (json_object_object_get_ex(req, "verify", &f) && json_object_get_boolean(f))
		flags |= DEDUP_FSCK_VERIFY;
	memset(&r, 0, sizeof(r));
	rc = dedup_store_fsck(bb->dedup, flags, &r);
	if (rc < 0)
		return err(rc, "fsck could not check the store: %s", strerror(-rc));
	o = ok();
	json_object_object_add(o, "report", bb_dedup_fsck_json(&r));
	return o;
}

json_object *bb_dedup_stats_json(const struct dedup_stats *st)
{
	json_object *o = json_object_new_object();

	add_u64(o, "logical_bytes", st->logical_bytes);
	add_u64(o, "stored_bytes", st->stored_bytes);
	add_u64(o, "zero_blocks", st->zero_blocks);
	add_u64(o, "unique_blocks", st->unique_blocks);
	json_object_object_add(o, "dedup_ratio", json_object_new_double(st->dedup_ratio));
	add_u64(o, "zero_writes", st->zero_writes);
	add_u64(o, "dead_blocks", st->dead_blocks);
	add_u64(o, "container_bytes", st->container_bytes);
	add_u64(o, "containers", st->containers);
	add_u64(o, "index_bytes", st->index_bytes);
	add_u64(o, "map_bytes", st->map_bytes);
	add_u64(o, "meta_file_bytes", st->meta_file_bytes);
	add_u64(o, "reclaim_pending", st->reclaim_pending);
	add_u64(o, "volumes", st->volumes);
	add_u64(o, "snapshots", st->snapshots);
	return o;
}

static json_object *cmd_pool(struct blkback *bb)
{
	struct dedup_stats st;
	json_object *o;
	int rc;

	/* Pending reference drops would make the numbers lag what the user just did. */
	rc = dedup_store_reclaim(bb->dedup);
	rc = rc ?: dedup_store_stats(bb->dedup, &st);
	if (rc < 0)
		return err(rc, "cannot read the dedup store's statistics: %s", strerror(-rc));
	o = ok();
	json_object_object_add(o, "dedup", bb_dedup_stats_json(&st));
	return o;
}

json_object *bb_dedup_vols_json(struct dedup_store *s, int *rc_out)
{
	struct dedup_vol_info *vi = NULL;
	json_object *arr;
	unsigned n = 0;
	int rc;

	rc = dedup_store_reclaim(s);
	rc = rc ?: dedup_vol_list(s, &vi, &n);
	if (rc < 0) {
		*rc_out = rc;
		return NULL;
	}
	arr = json_object_new_array();
	for (unsigned i = 0; i < n; i++) {
		json_object *e = json_object_new_object();
		uint64_t share = 0;

		if (dedup_vol_share(s, vi[i].name, &share) < 0)
			share = 0;
		json_object_object_add(e, "name", json_object_new_string(vi[i].name));
		json_object_object_add(e, "origin", json_object_new_string(vi[i].origin));
		add_u64(e, "size", vi[i].size_bytes);
		add_u64(e, "mapped_bytes", vi[i].mapped_bytes);
		add_u64(e, "share_bytes", share);
		json_object_object_add(e, "readonly", json_object_new_boolean(vi[i].readonly));
		json_object_array_add(arr, e);
	}
	free(vi);
	*rc_out = 0;
	return arr;
}

static json_object *cmd_list(struct blkback *bb)
{
	json_object *arr, *o;
	int rc;

	arr = bb_dedup_vols_json(bb->dedup, &rc);
	if (!arr)
		return err(rc, "cannot list the dedup store: %s", strerror(-rc));
	o = ok();
	json_object_object_add(o, "vols", arr);
	return o;
}

/* import / export: the daemon opens @file itself (blkctl sends an absolute path). */
static json_object *cmd_image(struct blkback *bb, json_object *req, int import)
{
	json_object *ans = NULL, *f, *o;
	const char *name = vol_field(req, "vol", &ans), *file;
	struct pool_vol pv;
	int fd, rc;

	if (!name)
		return ans;
	if (!json_object_object_get_ex(req, "file", &f) || !json_object_is_type(f, json_type_string) ||
	    json_object_get_string(f)[0] != '/')
		return err(-EINVAL, "the request needs \"file\" (an absolute path)");
	file = json_object_get_string(f);
	if (dedup_vol_meta(bb, name, &pv, &ans) < 0)
		return ans;
	fd = import ? open(file, O_RDONLY | O_CLOEXEC)
		    : open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return err(-errno, "cannot open %s: %s", file, strerror(errno));
	rc = import ? dedup_vol_import(bb->dedup, name, fd, NULL, NULL)
		    : dedup_vol_export(bb->dedup, name, fd, NULL, NULL);
	if (rc == 0 && !import && fsync(fd) < 0 && errno != EINVAL)
		rc = -errno;
	close(fd);
	if (rc < 0)
		return err(rc, "cannot %s volume '%s' %s %s: %s", import ? "import" : "export", name,
			   import ? "from" : "to", file, strerror(-rc));
	o = ok();
	return o;
}

json_object *bb_ctl_dedup(struct blkback *bb, const char *cmd, json_object *req)
{
	static const char *const cmds[] = { "dedup_create", "snapshot", "clone", "dedup_delete",
					    "gc",	    "fsck",	"pool", "dedup_list",
					    "import",	    "export" };
	unsigned i;

	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(cmd, cmds[i]) == 0)
			break;
	if (i == sizeof(cmds) / sizeof(cmds[0]))
		return NULL;
	if (!bb->dedup)
		return err(-ENODEV, "blkbackd has no dedup store open");
	if (bb->shutting_down && strcmp(cmd, "pool") != 0 && strcmp(cmd, "dedup_list") != 0)
		return err(-ESHUTDOWN, "blkbackd is shutting down");
	switch (i) {
	case 0: return cmd_create(bb, req);
	case 1: return cmd_copy(bb, req, 1);
	case 2: return cmd_copy(bb, req, 0);
	case 3: return cmd_delete(bb, req);
	case 4: return cmd_gc(bb);
	case 5: return cmd_fsck(bb, req);
	case 6: return cmd_pool(bb);
	case 7: return cmd_list(bb);
	case 8: return cmd_image(bb, req, 1);
	default: return cmd_image(bb, req, 0);
	}
}
