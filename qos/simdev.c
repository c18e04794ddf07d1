/*
 * simdev.c - the simulated device: one FIFO server with a linear cost model and a fixed latency.
 */
#include "qos/simdev.h"
#include "qos/qos_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct qos_simdev {
	pthread_mutex_t lock;
	struct qos_simdev_params p;
	struct qos_clock clk;
	uint32_t speed_pct;
	uint64_t busy_until_ns; /* end of the last booked service */
	uint64_t cursor;        /* end of the previous request, to tell sequential */
	int have_cursor;
	struct qos_simdev_stats st;
};

void qos_simdev_params_flash(struct qos_simdev_params *p, uint64_t iops, uint64_t lat_ns)
{
	memset(p, 0, sizeof(*p));
	qos_cost_model_flash(&p->cost, iops);
	p->lat_ns = lat_ns;
}

static int parse_num(const char *s, const char *end, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (s == end)
		return -EINVAL;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > max)
			return -EINVAL;
	}
	*out = v;
	return 0;
}

int qos_simdev_parse(const char *spec, struct qos_simdev_params *out, char *why, size_t why_len)
{
	const char *colon = strchr(spec, ':');
	const char *end = spec + strlen(spec);
	uint64_t iops, lat_us = QOS_SIMDEV_LAT_DEFAULT_NS / 1000;

	if (parse_num(spec, colon ? colon : end, QOS_NS_PER_SEC, &iops) || iops == 0) {
		qos_why(why, why_len, "simulated device \"%s\": IOPS must be a number in 1..1e9",
			spec);
		return -EINVAL;
	}
	if (colon && parse_num(colon + 1, end, 10000000, &lat_us)) {
		qos_why(why, why_len,
			"simulated device \"%s\": LAT_US must be a number in 0..10000000", spec);
		return -EINVAL;
	}
	qos_simdev_params_flash(out, iops, lat_us * 1000);
	return 0;
}

int qos_simdev_new(const struct qos_simdev_params *p, const struct qos_clock *clock,
		   struct qos_simdev **out)
{
	struct qos_io io4k = { QOS_OP_READ, 0, QOS_PAGE_BYTES };
	struct qos_simdev *d;
	int err;

	if (!qos_cost_ns(&p->cost, &io4k, 0))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	err = -pthread_mutex_init(&d->lock, NULL);
	if (err) {
		free(d);
		return err;
	}
	d->p = *p;
	d->clk = clock ? *clock : *qos_clock_monotonic();
	d->speed_pct = 100;
	*out = d;
	return 0;
}

void qos_simdev_free(struct qos_simdev *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

uint64_t qos_simdev_submit(struct qos_simdev *d, const struct qos_io *io, uint64_t *service_ns)
{
	uint64_t now, start, svc, done;
	int seq = 0;

	pthread_mutex_lock(&d->lock);
	now = d->clk.now_ns(d->clk.ctx);
	if (io->op == QOS_OP_READ || io->op == QOS_OP_WRITE) {
		if (d->have_cursor) {
			uint64_t a = io->offset_bytes, b = d->cursor;

			seq = (a > b ? a - b : b - a) <= QOS_SEQ_WINDOW_BYTES;
		}
		d->cursor = io->offset_bytes + io->len_bytes;
		d->have_cursor = 1;
		d->st.bytes += io->len_bytes;
	}
	svc = qos_cost_ns(&d->p.cost, io, seq) * 100 / d->speed_pct;
	start = now > d->busy_until_ns ? now : d->busy_until_ns;
	d->busy_until_ns = start + svc;
	done = d->busy_until_ns + d->p.lat_ns;
	d->st.ops++;
	d->st.busy_ns += svc;
	pthread_mutex_unlock(&d->lock);
	if (service_ns)
		*service_ns = svc;
	return done;
}

void qos_simdev_set_speed(struct qos_simdev *d, uint32_t pct)
{
	pthread_mutex_lock(&d->lock);
	d->speed_pct = pct < 1 ? 1 : pct > 10000 ? 10000 : pct;
	pthread_mutex_unlock(&d->lock);
}

void qos_simdev_stats(struct qos_simdev *d, struct qos_simdev_stats *out)
{
	pthread_mutex_lock(&d->lock);
	*out = d->st;
	pthread_mutex_unlock(&d->lock);
}
