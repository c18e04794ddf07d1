/*
 * cost.c - the linear device-time cost model, its calibration from probes, the defaults and the
 * monotonic clock.
 */
#include "qos/qos.h"
#include "qos/qos_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define COST_LEN_MAX (1ull << 40)

void qos_why(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

static uint64_t clock_mono_now(void *ctx)
{
	struct timespec ts;

	(void)ctx;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * QOS_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

static const struct qos_clock clock_mono = { clock_mono_now, NULL };

const struct qos_clock *qos_clock_monotonic(void)
{
	return &clock_mono;
}

void qos_cost_model_flash(struct qos_cost_model *m, uint64_t iops)
{
	uint64_t t;

	if (iops == 0)
		iops = 1;
	if (iops > QOS_NS_PER_SEC)
		iops = QOS_NS_PER_SEC;
	t = QOS_NS_PER_SEC / iops;
	/* A quarter of a 4 KiB request's time scales with size: 128 KiB then costs 8.75 of them,
	 * which is what SATA/NVMe flash roughly does (a few GB/s next to ~100k IOPS). */
	m->rd_page_ns = t / 4;
	m->rd_rand_base_ns = t - m->rd_page_ns;
	m->rd_seq_base_ns = m->rd_rand_base_ns;
	m->wr_page_ns = m->rd_page_ns;
	m->wr_rand_base_ns = m->rd_rand_base_ns;
	m->wr_seq_base_ns = m->rd_seq_base_ns;
}

uint64_t qos_cost_ns(const struct qos_cost_model *m, const struct qos_io *io, int seq)
{
	uint64_t len = io->len_bytes > COST_LEN_MAX ? COST_LEN_MAX : io->len_bytes;

	switch (io->op) {
	case QOS_OP_READ:
		return (seq ? m->rd_seq_base_ns : m->rd_rand_base_ns) +
		       (uint64_t)(((unsigned __int128)len * m->rd_page_ns) / QOS_PAGE_BYTES);
	case QOS_OP_WRITE:
		return (seq ? m->wr_seq_base_ns : m->wr_rand_base_ns) +
		       (uint64_t)(((unsigned __int128)len * m->wr_page_ns) / QOS_PAGE_BYTES);
	case QOS_OP_FLUSH:
	case QOS_OP_DISCARD:
	default:
		return m->wr_rand_base_ns;
	}
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* One direction: t4r, t4s, tbig are the probe times per request in ns. */
static void calib_dir(uint64_t t4r, uint64_t t4s, uint64_t tbig, uint32_t big_pages,
		      uint64_t *page, uint64_t *seq_base, uint64_t *rand_base)
{
	*page = sub0(tbig, t4s) / (big_pages - 1);
	*seq_base = sub0(t4s, *page);
	*rand_base = sub0(t4r, *page);
}

int qos_cost_model_from_calib(const struct qos_calib *c, struct qos_cost_model *out, char *why,
			      size_t why_len)
{
	const uint64_t t[6] = { c->rd_rand_ns, c->rd_seq_ns, c->rd_big_ns,
				c->wr_rand_ns, c->wr_seq_ns, c->wr_big_ns };
	static const char *const names[6] = { "read random", "read sequential", "read big",
					       "write random", "write sequential", "write big" };
	uint32_t pages;

	if (c->big_bytes <= QOS_PAGE_BYTES || c->big_bytes % QOS_PAGE_BYTES) {
		qos_why(why, why_len, "big probe size %u is not a multiple of 4 KiB above 4 KiB",
			c->big_bytes);
		return -EINVAL;
	}
	for (int i = 0; i < 6; i++) {
		if (t[i] == 0 || t[i] > QOS_NS_PER_SEC) {
			qos_why(why, why_len, "%s probe time %llu ns per request is outside 1 ns..1 s",
				names[i], (unsigned long long)t[i]);
			return -EINVAL;
		}
	}
	pages = c->big_bytes / QOS_PAGE_BYTES;
	calib_dir(t[0], t[1], t[2], pages, &out->rd_page_ns, &out->rd_seq_base_ns,
		  &out->rd_rand_base_ns);
	calib_dir(t[3], t[4], t[5], pages, &out->wr_page_ns, &out->wr_seq_base_ns,
		  &out->wr_rand_base_ns);
	return 0;
}

void qos_params_default(struct qos_params *p)
{
	memset(p, 0, sizeof(*p));
	p->period_ns = QOS_PERIOD_DEFAULT_NS;
	qos_cost_model_flash(&p->cost, 50000);
	p->vrate_min_pct = 10;
	p->vrate_max_pct = 1000;
	p->lat_target_ns = 0;
	p->qdelay_pct = QOS_QDELAY_DEFAULT_PCT;
	p->window_init_ns = 0;
}

void qos_vbd_settings_default(struct qos_vbd_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->weight = QOS_WEIGHT_DEFAULT;
}

const char *qos_state_name(enum qos_state st)
{
	switch (st) {
	case QOS_STATE_IDLE:
		return "idle";
	case QOS_STATE_BOOST:
		return "boost";
	case QOS_STATE_UNDER:
		return "under";
	case QOS_STATE_OVER:
		return "over";
	case QOS_STATE_PARKED:
		return "parked";
	}
	return "unknown";
}
