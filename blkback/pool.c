/*
 * pool.c - the pool directory: volumes as sparse files with json-c metadata next to them.
 *
 * The metadata file is the commit point of a volume: a volume exists when POOL/vols/<name>.json
 * does. create writes the data file first and the metadata last; delete removes the metadata
 * first and the data file last. A crash between the two steps leaves at most an orphan data
 * file, which no listing shows and the next create of that name reclaims.
 *
 * Writers (create, delete, set_size) take an flock on POOL/vols/.lock, so blkctl and blkbackd
 * can change the same pool at the same time without losing an update. Readers take no lock:
 * metadata is replaced by rename(), so they see the old or the new file, never a torn one.
 * Names cannot start with '.', so the lock and temp files never look like volumes.
 */
#define LOG_TAG "pool"

#include "blkback/pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/** Metadata is a handful of fields; anything bigger is not ours. */
#define POOL_META_MAX  4096
#define POOL_STORE_RAW "raw"

int pool_vol_name_ok(const char *name)
{
	size_t len;

	if (!name || name[0] == '\0' || name[0] == '.')
		return 0;
	len = strlen(name);
	if (len > POOL_VOL_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

static int size_ok(uint64_t size_bytes)
{
	/* off_t is signed: a larger file cannot exist, and json-c stores int64 exactly. */
	return size_bytes > 0 && size_bytes % 512 == 0 && size_bytes <= (uint64_t)INT64_MAX;
}

/* "POOL/<dir><name><suffix>" into @buf. */
static int pool_join(char *buf, unsigned len, const char *pool, const char *dir, const char *name,
		     const char *suffix)
{
	int n = snprintf(buf, len, "%s/%s%s%s", pool, dir, name, suffix);

	if (n < 0)
		return -EINVAL;
	if ((unsigned)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

static int meta_path(const char *pool, const char *name, char *buf, unsigned len)
{
	return pool_join(buf, len, pool, "vols/", name, ".json");
}

int pool_vol_path(const char *pool, const char *name, char *buf, unsigned len)
{
	/* The name becomes a path component: never let "../x" or "a/b" through. */
	if (!pool_vol_name_ok(name))
		return -EINVAL;
	return pool_join(buf, len, pool, "vols/", name, ".img");
}

int pool_ctl_path(const char *pool, char *buf, unsigned len)
{
	return pool_join(buf, len, pool, "", "blkbackd.sock", "");
}

static int mkdir_one(const char *path)
{
	struct stat st;

	if (mkdir(path, 0755) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	if (stat(path, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* mkdir -p: a pool such as /srv/pool may be the first thing under its parent. */
static int mkdir_parents(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	int rc;

	if (len == 0)
		return -ENOENT;
	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		rc = mkdir_one(buf);
		*p = '/';
		if (rc < 0)
			return rc;
	}
	return mkdir_one(buf);
}

int pool_init(const char *pool)
{
	char path[PATH_MAX];
	int rc;

	rc = mkdir_parents(pool);
	if (rc < 0)
		return rc;
	rc = pool_join(path, sizeof(path), pool, "", "vols", "");
	if (rc < 0)
		return rc;
	return mkdir_one(path);
}

/* Make a rename or unlink in the vols directory durable. */
static int fsync_vols(const char *pool)
{
	char path[PATH_MAX];
	int fd, rc;

	rc = pool_join(path, sizeof(path), pool, "", "vols", "");
	if (rc < 0)
		return rc;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

/* Take the pool's writer lock; returns the fd to pass to unlock_pool() or -errno. */
static int lock_pool(const char *pool)
{
	char path[PATH_MAX];
	int fd, rc;

	rc = pool_join(path, sizeof(path), pool, "vols/", ".lock", "");
	if (rc < 0)
		return rc;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			rc = -errno;
			close(fd);
			return rc;
		}
	}
	return fd;
}

static void unlock_pool(int fd)
{
	/* Closing the last descriptor releases the flock. */
	close(fd);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Replace @v's metadata atomically: write a temp file, fsync it, rename it over the old one and
 * fsync the directory, so after a crash the file is either the old or the new version.
 */
static int meta_write(const char *pool, const struct pool_vol *v)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	struct json_object *o;
	const char *text;
	int fd, rc, n;

	rc = meta_path(pool, v->name, path, sizeof(path));
	if (rc < 0)
		return rc;
	n = snprintf(tmp, sizeof(tmp), "%s/vols/.%s.json.%ld.tmp", pool, v->name, (long)getpid());
	if (n < 0 || (unsigned)n >= sizeof(tmp))
		return -ENAMETOOLONG;

	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	if (json_object_object_add(o, "name", json_object_new_string(v->name)) < 0 ||
	    json_object_object_add(o, "size", json_object_new_int64((int64_t)v->size_bytes)) < 0 ||
	    json_object_object_add(o, "store", json_object_new_string(v->store)) < 0 ||
	    json_object_object_add(o, "created", json_object_new_int64(v->created)) < 0) {
		rc = -ENOMEM;
		goto err_put;
	}
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	if (!text) {
		rc = -ENOMEM;
		goto err_put;
	}

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto err_put;
	}
	rc = write_all(fd, text, strlen(text));
	if (rc == 0)
		rc = write_all(fd, "\n", 1);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		goto err_unlink;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		goto err_unlink;
	}
	json_object_put(o);
	return fsync_vols(pool);

err_unlink:
	unlink(tmp);
err_put:
	json_object_put(o);
	return rc;
}

static int read_small_file(const char *path, char *buf, size_t cap, size_t *len)
{
	size_t got = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf + got, cap - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == cap) {
			rc = -EINVAL; /* too big to be metadata */
			break;
		}
	}
	close(fd);
	if (rc == 0)
		*len = got;
	return rc;
}

/* Parse metadata text for volume @name into @out; anything unexpected is -EINVAL. */
static int meta_parse(const char *name, const char *text, size_t len, struct pool_vol *out)
{
	struct json_tokener *tok;
	struct json_object *o, *f;
	struct pool_vol v;
	const char *s;
	int64_t size;
	int rc = -EINVAL;

	memset(&v, 0, sizeof(v));
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, text, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(o, json_type_object))
		goto out;

	/* The file's own name must match: a copied or renamed file is not that volume. */
	if (!json_object_object_get_ex(o, "name", &f) || !json_object_is_type(f, json_type_string))
		goto out;
	s = json_object_get_string(f);
	if (strcmp(s, name) != 0 || !pool_vol_name_ok(s))
		goto out;
	snprintf(v.name, sizeof(v.name), "%s", s);

	if (!json_object_object_get_ex(o, "size", &f) || !json_object_is_type(f, json_type_int))
		goto out;
	errno = 0;
	size = json_object_get_int64(f);
	if (errno != 0 || size <= 0 || !size_ok((uint64_t)size))
		goto out;
	v.size_bytes = (uint64_t)size;

	if (!json_object_object_get_ex(o, "store", &f) || !json_object_is_type(f, json_type_string))
		goto out;
	s = json_object_get_string(f);
	if (s[0] == '\0' || strlen(s) >= sizeof(v.store))
		goto out;
	snprintf(v.store, sizeof(v.store), "%s", s);

	/* "created" is informational: tolerate its absence, not a wrong type. */
	if (json_object_object_get_ex(o, "created", &f)) {
		if (!json_object_is_type(f, json_type_int))
			goto out;
		v.created = json_object_get_int64(f);
	}

	*out = v;
	rc = 0;
out:
	if (o)
		json_object_put(o);
	json_tokener_free(tok);
	return rc;
}

int pool_vol_get(const char *pool, const char *name, struct pool_vol *out)
{
	char path[PATH_MAX];
	char *text;
	size_t len = 0;
	int rc;

	if (!pool_vol_name_ok(name))
		return -EINVAL;
	rc = meta_path(pool, name, path, sizeof(path));
	if (rc < 0)
		return rc;
	text = malloc(POOL_META_MAX);
	if (!text)
		return -ENOMEM;
	rc = read_small_file(path, text, POOL_META_MAX, &len);
	if (rc == 0)
		rc = meta_parse(name, text, len, out);
	free(text);
	return rc;
}

/* Does @name's metadata file exist? 1, 0 or -errno. */
static int meta_exists(const char *pool, const char *name)
{
	char path[PATH_MAX];
	struct stat st;
	int rc;

	rc = meta_path(pool, name, path, sizeof(path));
	if (rc < 0)
		return rc;
	if (lstat(path, &st) == 0)
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

int pool_vol_create(const char *pool, const char *name, uint64_t size_bytes)
{
	char img[PATH_MAX];
	struct pool_vol v;
	int lock, fd, rc;

	if (!pool_vol_name_ok(name) || !size_ok(size_bytes))
		return -EINVAL;
	rc = pool_vol_path(pool, name, img, sizeof(img));
	if (rc < 0)
		return rc;
	rc = pool_init(pool);
	if (rc < 0)
		return rc;
	lock = lock_pool(pool);
	if (lock < 0)
		return lock;

	rc = meta_exists(pool, name);
	if (rc != 0) {
		rc = rc > 0 ? -EEXIST : rc;
		goto out_unlock;
	}
	/* No metadata: any data file under this name is a crashed create's orphan; reuse it. */
	fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		rc = -errno;
		goto out_unlock;
	}
	/* Sparse: no blocks are allocated until the guest writes. */
	if (ftruncate(fd, (off_t)size_bytes) < 0) {
		rc = errno == EFBIG || errno == EINVAL ? -EFBIG : -errno;
		goto err_close;
	}
	if (fsync(fd) < 0) {
		rc = -errno;
		goto err_close;
	}
	close(fd);

	memset(&v, 0, sizeof(v));
	snprintf(v.name, sizeof(v.name), "%s", name);
	snprintf(v.store, sizeof(v.store), "%s", POOL_STORE_RAW);
	v.size_bytes = size_bytes;
	v.created = (int64_t)time(NULL);
	rc = meta_write(pool, &v);
	if (rc < 0)
		goto err_unlink;
	unlock_pool(lock);
	log_debug("created %s (%llu bytes)", name, (unsigned long long)size_bytes);
	return 0;

err_close:
	close(fd);
err_unlink:
	unlink(img);
out_unlock:
	unlock_pool(lock);
	return rc;
}

int pool_vol_add_meta(const char *pool, const char *name, uint64_t size_bytes,
		      const char *store)
{
	struct pool_vol v;
	int lock, rc;

	if (!pool_vol_name_ok(name) || !size_ok(size_bytes) || !store || !store[0] ||
	    strlen(store) >= sizeof(v.store))
		return -EINVAL;
	rc = pool_init(pool);
	if (rc < 0)
		return rc;
	lock = lock_pool(pool);
	if (lock < 0)
		return lock;
	rc = meta_exists(pool, name);
	if (rc != 0) {
		rc = rc > 0 ? -EEXIST : rc;
		goto out_unlock;
	}
	memset(&v, 0, sizeof(v));
	snprintf(v.name, sizeof(v.name), "%s", name);
	snprintf(v.store, sizeof(v.store), "%s", store);
	v.size_bytes = size_bytes;
	v.created = (int64_t)time(NULL);
	rc = meta_write(pool, &v);
out_unlock:
	unlock_pool(lock);
	return rc;
}

int pool_dedup_path(const char *pool, char *buf, unsigned len)
{
	int n = snprintf(buf, len, "%s/dedup", pool);

	return n < 0 || (unsigned)n >= len ? -ENAMETOOLONG : 0;
}

int pool_vol_delete(const char *pool, const char *name)
{
	char meta[PATH_MAX], img[PATH_MAX];
	int lock, rc;

	if (!pool_vol_name_ok(name))
		return -EINVAL;
	rc = meta_path(pool, name, meta, sizeof(meta));
	if (rc < 0)
		return rc;
	rc = pool_vol_path(pool, name, img, sizeof(img));
	if (rc < 0)
		return rc;
	lock = lock_pool(pool);
	if (lock < 0)
		return lock;
	/* Metadata first: once it is gone the volume is gone, whatever happens to the data. */
	if (unlink(meta) < 0) {
		rc = -errno;
		goto out_unlock;
	}
	if (unlink(img) < 0 && errno != ENOENT)
		log_warn("%s: metadata removed but data file stays: %s", name, strerror(errno));
	rc = fsync_vols(pool);
out_unlock:
	unlock_pool(lock);
	return rc;
}

int pool_vol_set_size(const char *pool, const char *name, uint64_t size_bytes)
{
	struct pool_vol v;
	int lock, rc;

	if (!pool_vol_name_ok(name) || !size_ok(size_bytes))
		return -EINVAL;
	lock = lock_pool(pool);
	if (lock < 0)
		return lock;
	/* Read under the lock so a concurrent delete or set_size is not undone. */
	rc = pool_vol_get(pool, name, &v);
	if (rc < 0)
		goto out_unlock;
	v.size_bytes = size_bytes;
	rc = meta_write(pool, &v);
out_unlock:
	unlock_pool(lock);
	return rc;
}

static int vol_cmp(const void *a, const void *b)
{
	const struct pool_vol *x = a, *y = b;

	return strcmp(x->name, y->name);
}

int pool_vol_list(const char *pool, struct pool_vol **out, unsigned *count)
{
	char path[PATH_MAX];
	struct pool_vol *vols = NULL, *grown;
	unsigned n = 0, cap = 0;
	struct dirent *de;
	DIR *dir;
	int rc;

	rc = pool_join(path, sizeof(path), pool, "", "vols", "");
	if (rc < 0)
		return rc;
	dir = opendir(path);
	if (!dir)
		return -errno;
	for (;;) {
		char name[POOL_VOL_NAME_MAX + 1];
		size_t len;

		errno = 0;
		de = readdir(dir);
		if (!de) {
			rc = errno ? -errno : 0;
			break;
		}
		len = strlen(de->d_name);
		if (len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		len -= 5;
		if (len > POOL_VOL_NAME_MAX)
			continue;
		memcpy(name, de->d_name, len);
		name[len] = '\0';
		if (!pool_vol_name_ok(name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			grown = realloc(vols, cap * sizeof(*vols));
			if (!grown) {
				rc = -ENOMEM;
				break;
			}
			vols = grown;
		}
		rc = pool_vol_get(pool, name, &vols[n]);
		if (rc == -ENOENT) {
			continue; /* deleted while we listed */
		} else if (rc < 0) {
			/* One bad file must not hide the other volumes; say which one it is. */
			log_warn("%s/%s: unreadable volume metadata: %s", path, de->d_name,
				 strerror(-rc));
			continue;
		}
		n++;
	}
	closedir(dir);
	if (rc < 0) {
		free(vols);
		return rc;
	}
	if (n > 1)
		qsort(vols, n, sizeof(*vols), vol_cmp);
	*out = vols;
	*count = n;
	return 0;
}
