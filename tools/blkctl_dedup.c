/*
 * blkctl_dedup.c - blkctl's commands on dedup volumes (create --store dedup, delete, snapshot,
 * clone, gc, fsck, import, export, pool, and the dedup part of list --json).
 *
 * The pool's dedup store (POOL/dedup) has one owner process. While blkbackd runs it is the
 * owner, so every command goes over its control socket (blkback/ctl.h); the daemon runs it and
 * answers once (no progress is shown). When blkbackd does not run, blkctl holds the daemon's
 * lock (no daemon can start meanwhile), opens the store itself and runs the command in
 * process, with progress for gc, import and export: a bar on a terminal, plain lines otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blkback/ctl_dedup.h"
#include "blkback/pool.h"
#include "common/util.h"
#include "dedup/dedup.h"
#include "tools/blkctl.h"

/* Where a dedup command runs: the daemon (d.fd >= 0) or this process (store open). */
struct dd_session {
	const char *pool;
	struct blkctl_daemon d;
	struct dedup_store *store;
};

static int session_open(struct dd_session *s, const char *pool)
{
	struct dedup_opts o = { .create = 1 };
	char dir[PATH_MAX];
	int rc;

	memset(s, 0, sizeof(*s));
	s->pool = pool;
	rc = blkctl_daemon_open(pool, &s->d);
	if (rc < 0)
		return die("cannot reach blkbackd on pool %s: %s", pool, strerror(-rc));
	if (s->d.fd >= 0)
		return 0;
	rc = pool_init(pool);
	rc = rc ?: pool_dedup_path(pool, dir, sizeof(dir));
	rc = rc ?: dedup_store_open(dir, &o, &s->store);
	if (rc < 0) {
		blkctl_daemon_close(&s->d);
		if (rc == -EBUSY)
			return die("the dedup store %s is in use by another process", dir);
		return die("cannot open the dedup store of pool %s: %s", pool, strerror(-rc));
	}
	return 0;
}

static void session_close(struct dd_session *s)
{
	if (s->store)
		dedup_store_close(s->store);
	blkctl_daemon_close(&s->d);
}

/* Send @req (consumed) to the daemon; the answer in *ans when ok, else says why. 0 or 1. */
static int dd_call(struct dd_session *s, json_object *req, json_object **ans)
{
	json_object *o, *f;
	int rc;

	rc = blkctl_call(&s->d, req, &o);
	json_object_put(req);
	if (rc < 0)
		return die("no answer from blkbackd on pool %s: %s", s->pool, strerror(-rc));
	if (json_object_object_get_ex(o, "ok", &f) && json_object_get_boolean(f)) {
		if (ans)
			*ans = o;
		else
			json_object_put(o);
		return 0;
	}
	rc = json_object_object_get_ex(o, "error", &f) ? 0 : -1;
	die("%s", rc == 0 ? json_object_get_string(f) : "blkbackd refused the request");
	json_object_put(o);
	return 1;
}

static json_object *dd_req(const char *cmd)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "cmd", json_object_new_string(cmd));
	return o;
}

static void put_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

static int dd_failed(const char *what, const char *name, int rc)
{
	return die("cannot %s '%s': %s", what, name, strerror(-rc));
}

/* ---- progress ---- */

struct progress {
	const char *what;
	int tty;
	int last_pct;
};

static int progress_cb(const struct dedup_progress *p, void *arg)
{
	struct progress *pr = arg;
	int pct = p->total ? (int)(p->done * 100 / p->total) : 100;

	if (pct > 100)
		pct = 100;
	if (pr->tty) {
		char bar[41];
		int fill = pct * 40 / 100;

		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(40 - fill));
		bar[40] = '\0';
		fprintf(stderr, "\r%s [%s] %3d%%", pr->what, bar, pct);
		if (pct == 100)
			fputc('\n', stderr);
	} else if (pct / 10 != pr->last_pct / 10 || pr->last_pct < 0) {
		fprintf(stderr, "%s: %d%%\n", pr->what, pct);
	}
	pr->last_pct = pct;
	return 0;
}

static void progress_init(struct progress *pr, const char *what)
{
	pr->what = what;
	pr->tty = isatty(STDERR_FILENO);
	pr->last_pct = -1;
}

/* ---- commands ---- */

int blkctl_dedup_create(const char *pool, const char *name, uint64_t size)
{
	struct dd_session s;
	json_object *req;
	int rc;

	if (size % DEDUP_BLOCK_BYTES)
		return die("a dedup volume's size must be a multiple of 4096 bytes");
	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		req = dd_req("dedup_create");
		put_str(req, "vol", name);
		json_object_object_add(req, "size", json_object_new_int64((int64_t)size));
		rc = dd_call(&s, req, NULL);
		session_close(&s);
		return rc;
	}
	if (pool_vol_get(pool, name, &(struct pool_vol){ 0 }) == 0) {
		session_close(&s);
		return die("a volume named '%s' exists in pool %s", name, pool);
	}
	/* Store first, metadata last: the .json is the commit point of every pool volume. */
	rc = dedup_vol_create(s.store, name, size);
	if (rc == 0) {
		rc = pool_vol_add_meta(pool, name, size, POOL_STORE_DEDUP);
		if (rc < 0)
			dedup_vol_delete(s.store, name);
	}
	session_close(&s);
	return rc < 0 ? dd_failed("create dedup volume", name, rc) : 0;
}

int blkctl_dedup_delete(const char *pool, const char *name)
{
	struct dd_session s;
	json_object *req;
	int rc;

	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		req = dd_req("dedup_delete");
		put_str(req, "vol", name);
		rc = dd_call(&s, req, NULL);
		session_close(&s);
		return rc;
	}
	rc = dedup_vol_delete(s.store, name);
	if (rc == 0 || rc == -ENOENT)
		rc = pool_vol_delete(pool, name);
	session_close(&s);
	return rc < 0 ? dd_failed("delete", name, rc) : 0;
}

/* snapshot VOL SNAP / clone SRC NEWVOL */
static int copy_cmd(const char *pool, int argc, char **argv, int snapshot)
{
	const char *what = snapshot ? "snapshot" : "clone";
	struct dedup_vol_info info;
	struct pool_vol pv;
	struct dd_session s;
	json_object *req;
	int rc;

	if (argc != 3)
		return die("%s needs two volume names (see blkctl %s --help)", what, what);
	if (!pool_vol_name_ok(argv[1]) || !pool_vol_name_ok(argv[2]))
		return die("volume names are 1..63 of [A-Za-z0-9_.-], not starting with '.'");
	rc = pool_vol_get(pool, argv[1], &pv);
	if (rc < 0)
		return die("no volume named '%s' in pool %s", argv[1], pool);
	if (strcmp(pv.store, POOL_STORE_DEDUP) != 0)
		return die("'%s' is a %s volume; %s needs a dedup volume", argv[1], pv.store, what);
	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		req = dd_req(what);
		put_str(req, "src", argv[1]);
		put_str(req, "dst", argv[2]);
		rc = dd_call(&s, req, NULL);
		session_close(&s);
		if (rc == 0)
			printf("%s %s of %s\n", snapshot ? "snapshot" : "clone", argv[2], argv[1]);
		return rc;
	}
	if (pool_vol_get(pool, argv[2], &(struct pool_vol){ 0 }) == 0) {
		session_close(&s);
		return die("a volume named '%s' exists in pool %s", argv[2], pool);
	}
	rc = snapshot ? dedup_vol_snapshot(s.store, argv[1], argv[2])
		      : dedup_vol_clone(s.store, argv[1], argv[2]);
	if (rc == 0) {
		rc = dedup_vol_get(s.store, argv[2], &info);
		rc = rc ?: pool_vol_add_meta(pool, argv[2], info.size_bytes, POOL_STORE_DEDUP);
		if (rc < 0)
			dedup_vol_delete(s.store, argv[2]);
	}
	session_close(&s);
	if (rc < 0)
		return dd_failed(what, argv[1], rc);
	printf("%s %s of %s\n", snapshot ? "snapshot" : "clone", argv[2], argv[1]);
	return 0;
}

int blkctl_dedup_snapshot(const char *pool, int argc, char **argv)
{
	return copy_cmd(pool, argc, argv, 1);
}

int blkctl_dedup_clone(const char *pool, int argc, char **argv)
{
	return copy_cmd(pool, argc, argv, 0);
}

int blkctl_dedup_gc(const char *pool, int argc, char **argv)
{
	struct dedup_stats before, after;
	struct progress pr;
	struct dd_session s;
	json_object *ans;
	char sz[32];
	int rc;

	(void)argv;
	if (argc != 1)
		return die("gc takes no arguments");
	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		rc = dd_call(&s, dd_req("gc"), &ans);
		session_close(&s);
		if (rc)
			return rc;
		json_object *f;

		json_object_object_get_ex(ans, "freed_bytes", &f);
		printf("gc: freed %s\n", util_fmt_size((uint64_t)json_object_get_int64(f), sz,
						       sizeof(sz)));
		json_object_put(ans);
		return 0;
	}
	progress_init(&pr, "gc");
	rc = dedup_store_stats(s.store, &before);
	rc = rc ?: dedup_store_gc(s.store, progress_cb, &pr);
	rc = rc ?: dedup_store_stats(s.store, &after);
	session_close(&s);
	if (rc < 0)
		return die("gc failed: %s", strerror(-rc));
	printf("gc: freed %s\n",
	       util_fmt_size(before.container_bytes > after.container_bytes
				     ? before.container_bytes - after.container_bytes
				     : 0,
			     sz, sizeof(sz)));
	return 0;
}

int blkctl_dedup_fsck(const char *pool, int argc, char **argv)
{
	struct dedup_fsck_report r;
	struct dd_session s;
	json_object *ans, *rep, *f;
	int repair = 0, verify = 0, clean, rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--repair"))
			repair = 1;
		else if (!strcmp(argv[i], "--verify"))
			verify = 1;
		else
			return die("fsck takes --repair and --verify only (see blkctl fsck --help)");
	}
	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		json_object *req = dd_req("fsck");

		json_object_object_add(req, "repair", json_object_new_boolean(repair));
		json_object_object_add(req, "verify", json_object_new_boolean(verify));
		rc = dd_call(&s, req, &ans);
		session_close(&s);
		if (rc)
			return rc;
		json_object_object_get_ex(ans, "report", &rep);
		rep = json_object_get(rep);
		json_object_put(ans);
	} else {
		memset(&r, 0, sizeof(r));
		rc = dedup_store_fsck(s.store, (repair ? DEDUP_FSCK_REPAIR : 0) |
						   (verify ? DEDUP_FSCK_VERIFY : 0),
				      &r);
		session_close(&s);
		if (rc < 0)
			return die("fsck could not check the store: %s", strerror(-rc));
		rep = bb_dedup_fsck_json(&r);
	}
	json_object_object_foreach(rep, k, v)
	{
		if (strcmp(k, "clean") != 0)
			printf("%-20s %" PRId64 "\n", k, json_object_get_int64(v));
	}
	clean = json_object_object_get_ex(rep, "clean", &f) && json_object_get_boolean(f);
	printf("%s\n", clean ? "clean" : "PROBLEMS FOUND");
	json_object_put(rep);
	return clean ? 0 : 1;
}

static int image_cmd(const char *pool, int argc, char **argv, int import)
{
	const char *what = import ? "import" : "export";
	char file[PATH_MAX];
	struct progress pr;
	struct pool_vol pv;
	struct dd_session s;
	json_object *req;
	int fd, rc;

	if (argc != 3)
		return die("%s needs VOL FILE (see blkctl %s --help)", what, what);
	rc = pool_vol_get(pool, argv[1], &pv);
	if (rc < 0)
		return die("no volume named '%s' in pool %s", argv[1], pool);
	if (strcmp(pv.store, POOL_STORE_DEDUP) != 0)
		return die("'%s' is a %s volume; %s works on dedup volumes", argv[1], pv.store,
			      what);
	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		/* The daemon opens the file: send it a path that does not depend on our cwd. */
		if (argv[2][0] == '/') {
			snprintf(file, sizeof(file), "%s", argv[2]);
		} else {
			char cwd[PATH_MAX];

			if (!getcwd(cwd, sizeof(cwd)) ||
			    snprintf(file, sizeof(file), "%s/%s", cwd, argv[2]) >= (int)sizeof(file)) {
				session_close(&s);
				return die("path too long: %s", argv[2]);
			}
		}
		req = dd_req(what);
		put_str(req, "vol", argv[1]);
		put_str(req, "file", file);
		rc = dd_call(&s, req, NULL);
		session_close(&s);
		if (rc == 0)
			printf("%sed %s %s %s\n", what, argv[1], import ? "from" : "to", argv[2]);
		return rc;
	}
	fd = import ? open(argv[2], O_RDONLY | O_CLOEXEC)
		    : open(argv[2], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = errno;
		session_close(&s);
		return die("cannot open %s: %s", argv[2], strerror(rc));
	}
	progress_init(&pr, what);
	rc = import ? dedup_vol_import(s.store, argv[1], fd, progress_cb, &pr)
		    : dedup_vol_export(s.store, argv[1], fd, progress_cb, &pr);
	if (rc == 0 && !import && fsync(fd) < 0 && errno != EINVAL)
		rc = -errno;
	close(fd);
	session_close(&s);
	if (rc < 0)
		return dd_failed(what, argv[1], rc);
	printf("%sed %s %s %s\n", what, argv[1], import ? "from" : "to", argv[2]);
	return 0;
}

int blkctl_dedup_import(const char *pool, int argc, char **argv)
{
	return image_cmd(pool, argc, argv, 1);
}

int blkctl_dedup_export(const char *pool, int argc, char **argv)
{
	return image_cmd(pool, argc, argv, 0);
}

static void print_json(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						       JSON_C_TO_STRING_NOSLASHESCAPE));
}

int blkctl_dedup_pool(const char *pool, int argc, char **argv)
{
	struct dedup_stats st;
	struct dd_session s;
	json_object *ans, *stats;
	int json = 0, rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") != 0)
			return die("pool takes --json only");
		json = 1;
	}
	if (session_open(&s, pool))
		return 1;
	if (s.d.fd >= 0) {
		rc = dd_call(&s, dd_req("pool"), &ans);
		session_close(&s);
		if (rc)
			return rc;
		json_object_object_get_ex(ans, "dedup", &stats);
		stats = json_object_get(stats);
		json_object_put(ans);
	} else {
		rc = dedup_store_reclaim(s.store);
		rc = rc ?: dedup_store_stats(s.store, &st);
		session_close(&s);
		if (rc < 0)
			return die("cannot read the dedup store's statistics: %s", strerror(-rc));
		stats = bb_dedup_stats_json(&st);
	}
	if (json) {
		print_json(stats);
	} else {
		json_object_object_foreach(stats, k, v)
		{
			printf("%-16s %s\n", k, json_object_get_string(v));
		}
	}
	json_object_put(stats);
	return 0;
}

json_object *blkctl_dedup_vols(const char *pool)
{
	struct dd_session s;
	json_object *ans, *arr = NULL;
	int rc;

	if (session_open(&s, pool))
		return NULL;
	if (s.d.fd >= 0) {
		if (dd_call(&s, dd_req("dedup_list"), &ans) == 0) {
			json_object_object_get_ex(ans, "vols", &arr);
			arr = json_object_get(arr);
			json_object_put(ans);
		}
	} else {
		arr = bb_dedup_vols_json(s.store, &rc);
		if (!arr)
			die("cannot list the dedup store: %s", strerror(-rc));
	}
	session_close(&s);
	return arr;
}

void blkctl_dedup_annotate(const char *pool, json_object *arr)
{
	json_object *dvols = NULL;
	size_t n = json_object_array_length(arr);

	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(arr, i), *f;

		if (!json_object_object_get_ex(o, "store", &f) ||
		    strcmp(json_object_get_string(f), POOL_STORE_DEDUP) != 0)
			continue;
		if (!dvols && !(dvols = blkctl_dedup_vols(pool)))
			return;
		for (size_t j = 0; j < json_object_array_length(dvols); j++) {
			json_object *d = json_object_array_get_idx(dvols, j), *name, *nm;

			json_object_object_get_ex(d, "name", &name);
			json_object_object_get_ex(o, "name", &nm);
			if (strcmp(json_object_get_string(name), json_object_get_string(nm)) != 0)
				continue;
			json_object_object_foreach(d, k, v)
			{
				if (strcmp(k, "name") && strcmp(k, "size"))
					json_object_object_add(o, k, json_object_get(v));
			}
		}
	}
	json_object_put(dvols);
}

int blkctl_dedup_resize(const char *pool, const char *name, uint64_t size, int shrink)
{
	struct dedup_vol_info info;
	char old_s[32], new_s[32];
	struct dd_session s;
	json_object *req, *ans, *f;
	uint64_t old;
	int rc;

	if (size % DEDUP_BLOCK_BYTES)
		return die("a dedup volume's size must be a multiple of 4096 bytes");
	if (session_open(&s, pool))
		return 1;
	util_fmt_size(size, new_s, sizeof(new_s));
	if (s.d.fd >= 0) {
		/* The daemon's resize tells every guest using the volume its new size. */
		req = dd_req("resize");
		put_str(req, "vol", name);
		json_object_object_add(req, "size", json_object_new_int64((int64_t)size));
		json_object_object_add(req, "shrink", json_object_new_boolean(shrink));
		rc = dd_call(&s, req, &ans);
		session_close(&s);
		if (rc)
			return rc;
		json_object_object_get_ex(ans, "old_size", &f);
		util_fmt_size((uint64_t)json_object_get_int64(f), old_s, sizeof(old_s));
		json_object_put(ans);
		printf("resized volume %s from %s to %s (online)\n", name, old_s, new_s);
		return 0;
	}
	rc = dedup_vol_get(s.store, name, &info);
	old = info.size_bytes;
	if (rc == 0 && size < old && !shrink)
		rc = -EPERM;
	rc = rc ?: dedup_vol_resize(s.store, name, size);
	rc = rc ?: pool_vol_set_size(pool, name, size);
	session_close(&s);
	if (rc == -EPERM)
		return die("refusing to shrink '%s' without --shrink", name);
	if (rc < 0)
		return dd_failed("resize", name, rc);
	util_fmt_size(old, old_s, sizeof(old_s));
	printf("resized volume %s from %s to %s (offline)\n", name, old_s, new_s);
	return 0;
}
