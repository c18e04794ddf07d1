/*
 * util.c - size parsing/formatting and the monotonic clock.
 */
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int util_parse_size(const char *s, uint64_t *out)
{
	char digits[32];
	size_t n = 0;
	unsigned shift = 0;
	uint64_t v;
	int rc;

	if (!s)
		return -EINVAL;
	while (s[n] && isdigit((unsigned char)s[n]))
		n++;
	if (n == 0 || n >= sizeof(digits))
		return n ? -ERANGE : -EINVAL;
	memcpy(digits, s, n);
	digits[n] = '\0';
	rc = util_parse_u64(digits, 0, UINT64_MAX, &v);
	if (rc)
		return rc;
	s += n;
	switch (toupper((unsigned char)*s)) {
	case '\0':
		break;
	case 'K': shift = 10; s++; break;
	case 'M': shift = 20; s++; break;
	case 'G': shift = 30; s++; break;
	case 'T': shift = 40; s++; break;
	case 'P': shift = 50; s++; break;
	case 'B': break;
	default:
		return -EINVAL;
	}
	if (shift && (*s == 'i' || *s == 'I'))
		s++;
	if (*s == 'B' || *s == 'b')
		s++;
	if (*s)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

char *util_fmt_size(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGTPE";
	unsigned u = 0;
	double v = (double)bytes;

	if (bytes < 1024) {
		snprintf(buf, len, "%llu", (unsigned long long)bytes);
		return buf;
	}
	while (v >= 1024.0 && u < sizeof(units) - 1) {
		v /= 1024.0;
		u++;
	}
	if ((bytes & ((1ull << (10 * u)) - 1)) == 0)
		snprintf(buf, len, "%.0f%c", v, units[u - 1]);
	else
		snprintf(buf, len, "%.1f%c", v, units[u - 1]);
	return buf;
}

uint64_t util_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int util_write_file_atomic(const char *path, const void *data, size_t len)
{
	char tmp[4096], dir[4096];
	const char *slash = strrchr(path, '/');
	size_t off;
	int fd, dfd, rc = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	if (slash)
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path + (slash == path)), path);
	else
		snprintf(dir, sizeof(dir), ".");
	/* A unique temporary name: two writers at once must not share one. */
	fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	for (off = 0; off < len;) {
		ssize_t n = write(fd, (const char *)data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		off += (size_t)n;
	}
	/* mkstemp makes 0600; these files are settings that operators read. */
	if (!rc && (fchmod(fd, 0644) || fsync(fd)))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	/* The rename is durable once the directory is. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int util_write_file_line(const char *path, const char *text)
{
	size_t len = strlen(text);
	char *buf = malloc(len + 1);
	int rc;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, len);
	buf[len] = '\n';
	rc = util_write_file_atomic(path, buf, len + 1);
	free(buf);
	return rc;
}
