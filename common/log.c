/*
 * log.c - the one logger: "<prog> <level> <tag>: message" on stderr, one write per line so
 * lines from several threads do not interleave.
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level_cur = LOG_LVL_INFO;
static const char *log_prog;

#define LOG_RL_INTERVAL_NS 5000000000ull /* one window every 5 s */
#define LOG_RL_BURST 10                  /* lines per window */

static const char *const level_names[] = { "err", "warn", "info", "debug" };

void log_set_prog(const char *prog)
{
	log_prog = prog;
}

int log_set_level(const char *name)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			log_level_cur = (int)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_msg(int level, const char *tag, const char *fmt, ...)
{
	char line[1024];
	int n = 0;
	va_list ap;

	if (level < 0 || level > LOG_LVL_DEBUG)
		level = LOG_LVL_ERR;
	if (log_prog)
		n = snprintf(line, sizeof(line), "%s: ", log_prog);
	n += snprintf(line + n, sizeof(line) - (size_t)n, "%s %s: ", level_names[level], tag);
	va_start(ap, fmt);
	if (n < (int)sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write(2) per line: atomic for a pipe up to PIPE_BUF, so threads do not interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int log_ratelimit_ok(struct log_ratelimit *rl, const char *tag)
{
	uint64_t now = mono_ns();

	if (now - rl->window_start_ns >= LOG_RL_INTERVAL_NS) {
		if (rl->suppressed)
			log_msg(LOG_LVL_WARN, tag, "%u similar messages suppressed", rl->suppressed);
		rl->window_start_ns = now;
		rl->printed = 0;
		rl->suppressed = 0;
	}
	if (rl->printed < LOG_RL_BURST) {
		rl->printed++;
		return 1;
	}
	rl->suppressed++;
	return 0;
}
