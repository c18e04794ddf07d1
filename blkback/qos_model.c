/*
 * blkback/qos_model.c - the pool's device cost model file, POOL/qos/device.json (qos_model.h).
 */
#include "blkback/qos_model.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A hand-written model is a few hundred bytes; anything this big is not one. */
#define MODEL_FILE_MAX (64u << 10)

static const struct {
	const char *name;
	size_t off;
} coefs[] = {
#define C(n) { #n, offsetof(struct qos_cost_model, n) }
	C(rd_page_ns), C(rd_seq_base_ns), C(rd_rand_base_ns),
	C(wr_page_ns), C(wr_seq_base_ns), C(wr_rand_base_ns),
#undef C
};

static const struct {
	const char *name;
	size_t off;
} probes[] = {
#define P(n) { #n, offsetof(struct qos_calib, n) }
	P(rd_rand_ns), P(rd_seq_ns), P(rd_big_ns), P(wr_rand_ns), P(wr_seq_ns), P(wr_big_ns),
#undef P
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void why_set(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

int qos_model_path(char *buf, size_t len, const char *pool)
{
	int n;

	if (!pool)
		return -EINVAL;
	n = snprintf(buf, len, "%s/qos/device.json", pool);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* Add integer @x as @name to @o. 0 or -ENOMEM. */
static int put_u64(struct json_object *o, const char *name, uint64_t x)
{
	/* json-c keeps int64; every value here is far below 2^63 (ns, a page count). */
	struct json_object *v = json_object_new_int64((int64_t)x);

	if (!v || json_object_object_add(o, name, v)) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static struct json_object *model_to_json(const struct qos_cost_model *m,
					 const struct qos_calib *c, const char *source)
{
	struct json_object *o = json_object_new_object(), *k = NULL, *s;
	size_t i;

	if (!o)
		return NULL;
	for (i = 0; i < NELEM(coefs); i++)
		if (put_u64(o, coefs[i].name, *(const uint64_t *)((const char *)m + coefs[i].off)))
			goto fail;
	s = json_object_new_string(source ? source : "unknown");
	if (!s || json_object_object_add(o, "source", s)) {
		json_object_put(s);
		goto fail;
	}
	if (put_u64(o, "saved", (uint64_t)time(NULL)))
		goto fail;
	if (!c)
		return o;
	k = json_object_new_object();
	if (!k || put_u64(k, "big_bytes", c->big_bytes))
		goto fail;
	for (i = 0; i < NELEM(probes); i++)
		if (put_u64(k, probes[i].name,
			    *(const uint64_t *)((const char *)c + probes[i].off)))
			goto fail;
	if (json_object_object_add(o, "calib", k))
		goto fail;
	return o;

fail:
	json_object_put(k);
	json_object_put(o);
	return NULL;
}

int qos_model_save(const char *pool, const struct qos_cost_model *m, const struct qos_calib *c,
		   const char *source)
{
	char path[4096], dir[4096];
	struct json_object *o;
	const char *txt;
	int r;

	r = qos_model_path(path, sizeof(path), pool);
	if (r)
		return r;
	if ((size_t)snprintf(dir, sizeof(dir), "%s/qos", pool) >= sizeof(dir))
		return -ENAMETOOLONG;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return -errno;
	o = model_to_json(m, c, source);
	if (!o)
		return -ENOMEM;
	txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	if (!txt) {
		json_object_put(o);
		return -ENOMEM;
	}
	r = util_write_file_line(path, txt);
	json_object_put(o);
	return r;
}

/* Read all of @path into a NUL-terminated malloc'd buffer. 0, -EFBIG or -errno. */
static int read_small_file(const char *path, char **out, size_t *out_len)
{
	char *buf;
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(MODEL_FILE_MAX + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, MODEL_FILE_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > MODEL_FILE_MAX) {
			r = -EFBIG;
			goto fail;
		}
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;

fail:
	free(buf);
	close(fd);
	return r;
}

int qos_model_load(const char *pool, struct qos_cost_model *m, char *why, size_t why_len)
{
	struct qos_cost_model n;
	struct json_tokener *tok;
	struct json_object *o = NULL;
	char path[4096], *text = NULL;
	size_t len = 0, i;
	int r;

	r = qos_model_path(path, sizeof(path), pool);
	if (r) {
		why_set(why, why_len, "the pool's path is too long for its device model file");
		return r;
	}
	r = read_small_file(path, &text, &len);
	if (r == -ENOENT)
		return r;
	if (r == -EFBIG) {
		why_set(why, why_len, "%s is larger than %u bytes, too big to be a device model",
			path, MODEL_FILE_MAX);
		return -EINVAL;
	}
	if (r) {
		why_set(why, why_len, "cannot read %s: %s", path, strerror(-r));
		return r;
	}
	tok = json_tokener_new();
	if (!tok) {
		free(text);
		return -ENOMEM;
	}
	o = json_tokener_parse_ex(tok, text, (int)len);
	i = len;
	/* Only whitespace may follow the object: "{...} junk" is a damaged file, not a model. */
	if (o && json_tokener_get_error(tok) == json_tokener_success)
		for (i = json_tokener_get_parse_end(tok); i < len; i++)
			if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
				break;
	if (!o || json_tokener_get_error(tok) != json_tokener_success || i < len ||
	    !json_object_is_type(o, json_type_object)) {
		why_set(why, why_len, "%s is not a JSON object", path);
		r = -EINVAL;
		goto out;
	}
	for (i = 0; i < NELEM(coefs); i++) {
		struct json_object *v;
		int64_t x;

		if (!json_object_object_get_ex(o, coefs[i].name, &v)) {
			why_set(why, why_len, "%s has no %s", path, coefs[i].name);
			r = -EINVAL;
			goto out;
		}
		if (!json_object_is_type(v, json_type_int)) {
			why_set(why, why_len, "%s: %s must be an integer (nanoseconds)", path,
				coefs[i].name);
			r = -EINVAL;
			goto out;
		}
		errno = 0;
		x = json_object_get_int64(v);
		/* errno: json-c clamps values beyond int64 and says so only through errno. */
		if (errno || x < 0 || (uint64_t)x > QOS_MODEL_COEF_MAX_NS) {
			why_set(why, why_len, "%s: %s must be between 0 and %llu ns", path,
				coefs[i].name, (unsigned long long)QOS_MODEL_COEF_MAX_NS);
			r = -EINVAL;
			goto out;
		}
		*(uint64_t *)((char *)&n + coefs[i].off) = (uint64_t)x;
	}
	if (n.rd_page_ns + n.rd_rand_base_ns == 0 || n.wr_page_ns + n.wr_rand_base_ns == 0) {
		why_set(why, why_len,
			"%s: a 4 KiB random %s costs 0 ns (%s_page_ns + %s_rand_base_ns), so the "
			"device could not be shared",
			path, n.rd_page_ns + n.rd_rand_base_ns ? "write" : "read",
			n.rd_page_ns + n.rd_rand_base_ns ? "wr" : "rd",
			n.rd_page_ns + n.rd_rand_base_ns ? "wr" : "rd");
		r = -EINVAL;
		goto out;
	}
	*m = n;
	r = 0;
out:
	json_object_put(o);
	json_tokener_free(tok);
	free(text);
	return r;
}
