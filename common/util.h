/*
 * util.h - small helpers shared by the tools and daemons: size parsing and formatting, time.
 */
#ifndef SLUICE_COMMON_UTIL_H
#define SLUICE_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/**
 * Parse a size such as "4096", "512K", "20G" or "1T" (binary multiples; a trailing "iB" or "B"
 * is accepted). Returns 0 and stores bytes in *out, or -EINVAL for a malformed string and
 * -ERANGE when the value does not fit in 64 bits.
 */
int util_parse_size(const char *s, uint64_t *out);

/** Format bytes as "20G", "1.5M" or "512" into buf (at least 16 bytes). Returns buf. */
char *util_fmt_size(uint64_t bytes, char *buf, size_t len);

/** Parse a whole unsigned decimal number in [min, max]. Returns 0, -EINVAL or -ERANGE. */
int util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/** CLOCK_MONOTONIC in nanoseconds. */
uint64_t util_now_ns(void);

/**
 * Replace @path with @len bytes of @data, atomically and durably: a unique temporary file in
 * the same directory (mode 0644), fsync, rename over @path, fsync of the directory. After a
 * crash @path holds the old or the new content. Returns 0 or -errno (nothing left behind).
 */
int util_write_file_atomic(const char *path, const void *data, size_t len);

/** util_write_file_atomic() of the string @text and a newline. */
int util_write_file_line(const char *path, const char *text);

#endif
