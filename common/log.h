/*
 * log.h - leveled logging shared by every daemon and tool.
 *
 * Each source file defines LOG_TAG (its subsystem, e.g. "xs" or "gnt") before including this
 * header. The level check happens before any formatting, so a disabled debug line costs one
 * branch. Data-path errors go through LOG_RATELIMITED so a hostile guest cannot flood the log.
 */
#ifndef SLUICE_COMMON_LOG_H
#define SLUICE_COMMON_LOG_H

#include <stdint.h>

#ifndef LOG_TAG
#define LOG_TAG "sluice"
#endif

enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern int log_level_cur; /**< messages above this level are dropped (default INFO) */

void log_msg(int level, const char *tag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** Set the level from a name: "err", "warn", "info", "debug". Returns 0 or -EINVAL. */
int log_set_level(const char *name);

/** Set a program name printed before each line (default none). */
void log_set_prog(const char *prog);

#define LOG_AT(lvl, ...)                                                                           \
	do {                                                                                       \
		if ((lvl) <= log_level_cur)                                                        \
			log_msg((lvl), LOG_TAG, __VA_ARGS__);                                      \
	} while (0)

#define log_err(...) LOG_AT(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)

/** Rate limiter state: at most `burst` lines per `interval_ns`, then a count of suppressed ones. */
struct log_ratelimit {
	uint64_t window_start_ns; /**< start of the current window */
	uint32_t printed;         /**< lines printed in this window */
	uint32_t suppressed;      /**< lines dropped in this window */
};

/** Returns 1 if a line may be printed now; reports suppressed lines when a window closes. */
int log_ratelimit_ok(struct log_ratelimit *rl, const char *tag);

#define LOG_RATELIMITED(rl, lvl, ...)                                                              \
	do {                                                                                       \
		if ((lvl) <= log_level_cur && log_ratelimit_ok((rl), LOG_TAG))                     \
			log_msg((lvl), LOG_TAG, __VA_ARGS__);                                      \
	} while (0)

#endif
