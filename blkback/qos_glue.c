/*
 * blkback/qos_glue.c - QoS settings as JSON and their persistence in the pool (qos_glue.h).
 */
#define LOG_TAG "qos"
#include "blkback/qos_glue.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct field {
	const char *name;
	size_t off;
	int is32;
	uint64_t max;
};

#define F64(n) { #n, offsetof(struct qos_vbd_settings, n), 0, INT64_MAX }
#define F32(n) { #n, offsetof(struct qos_vbd_settings, n), 1, UINT32_MAX }
static const struct field fields[] = {
	F32(weight), F64(cap_iops), F64(cap_bps), F64(reserve_iops),
	F64(burst_iops), F64(burst_bps), F32(burst_seconds),
};

int qos_glue_settings_from_json(struct json_object *o, struct qos_vbd_settings *s, char *why,
				size_t why_len)
{
	struct qos_vbd_settings n = *s;
	size_t i;

	if (!json_object_is_type(o, json_type_object)) {
		snprintf(why, why_len, "settings must be a JSON object");
		return -EINVAL;
	}
	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		struct json_object *v;
		int64_t x;

		if (!json_object_object_get_ex(o, fields[i].name, &v))
			continue;
		if (!json_object_is_type(v, json_type_int)) {
			snprintf(why, why_len, "%s must be an integer", fields[i].name);
			return -EINVAL;
		}
		errno = 0;
		x = json_object_get_int64(v);
		if (errno || x < 0 || (uint64_t)x > fields[i].max) {
			snprintf(why, why_len, "%s must be between 0 and %llu", fields[i].name,
				 (unsigned long long)fields[i].max);
			return -EINVAL;
		}
		if (fields[i].is32)
			*(uint32_t *)((char *)&n + fields[i].off) = (uint32_t)x;
		else
			*(uint64_t *)((char *)&n + fields[i].off) = (uint64_t)x;
	}
	*s = n;
	return 0;
}

struct json_object *qos_glue_settings_to_json(const struct qos_vbd_settings *s)
{
	struct json_object *o = json_object_new_object();
	size_t i;

	if (!o)
		return NULL;
	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const char *p = (const char *)s + fields[i].off;
		int64_t x = fields[i].is32 ? (int64_t)*(const uint32_t *)p :
					     (int64_t)*(const uint64_t *)p;
		struct json_object *v = json_object_new_int64(x);

		if (!v || json_object_object_add(o, fields[i].name, v)) {
			json_object_put(v);
			json_object_put(o);
			return NULL;
		}
	}
	return o;
}

static int name_ok(const char *n)
{
	return n && n[0] && n[0] != '.' && !strchr(n, '/');
}

int qos_glue_settings_path(char *buf, size_t len, const char *pool, const char *domain,
			   const char *vdev)
{
	int n;

	if (!pool || !name_ok(domain) || !name_ok(vdev))
		return -EINVAL;
	n = snprintf(buf, len, "%s/qos/%s-%s.json", pool, domain, vdev);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

int qos_glue_settings_save(const char *pool, const char *domain, const char *vdev,
			   const struct qos_vbd_settings *s)
{
	char path[4096], dir[4096];
	struct json_object *o;
	int r;

	r = qos_glue_settings_path(path, sizeof(path), pool, domain, vdev);
	if (r)
		return r;
	if ((size_t)snprintf(dir, sizeof(dir), "%s/qos", pool) >= sizeof(dir))
		return -ENAMETOOLONG;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return -errno;
	o = qos_glue_settings_to_json(s);
	if (!o)
		return -ENOMEM;
	r = util_write_file_line(path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return r;
}

int qos_glue_settings_load(const char *pool, const char *domain, const char *vdev,
			   struct qos_vbd_settings *s)
{
	char path[4096], why[128];
	struct json_object *o;
	int r;

	qos_vbd_settings_default(s);
	r = qos_glue_settings_path(path, sizeof(path), pool, domain, vdev);
	if (r)
		return r;
	if (access(path, F_OK))
		return -errno;
	o = json_object_from_file(path);
	if (!o) {
		log_warn("%s: not valid JSON", path);
		return -EINVAL;
	}
	r = qos_glue_settings_from_json(o, s, why, sizeof(why));
	if (r)
		log_warn("%s: %s", path, why);
	json_object_put(o);
	return r;
}
