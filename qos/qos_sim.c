/*
 * qos_sim.c - virtual-time event simulation of closed-loop vbds, the scheduler and the simdev.
 *
 * Events sit in a binary heap ordered by (time, sequence number), so equal times run in the
 * order they were scheduled and a run is repeatable. Nothing in here touches the wall clock.
 */
#include "qos/qos_sim.h"
#include "qos/qos_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SIM_QD_MAX 4096
#define SIM_VOL_DEFAULT (1ull << 30)
#define SIM_VOL_SHIFT 40 /* volumes sit this far apart on the simulated device */

/* Log-linear latency histogram: 128 exact buckets, then 64 per power of two (1.6%). */
#define H_SUB_BITS 7
#define H_SUB (1u << H_SUB_BITS)
#define H_HALF (H_SUB / 2)
#define H_N (H_SUB + 57 * H_HALF)

enum ev_kind { EV_ISSUE, EV_DONE, EV_RETRY, EV_CALL };

struct ev {
	uint64_t t;
	uint64_t seq;
	enum ev_kind kind;
	uint32_t vbd;
	uint32_t slot; /* EV_ISSUE/EV_DONE: slot; EV_RETRY: generation */
	qos_sim_fn fn;
	void *arg;
};

enum slot_state { SLOT_IDLE, SLOT_PENDING, SLOT_QUEUED, SLOT_INFLIGHT };

struct slot {
	enum slot_state state;
	uint64_t issue_ns;
	struct qos_io io;
	struct qos_ticket t;
	uint64_t svc_ns;
};

struct simvbd {
	struct qos_sim *sim;
	unsigned idx;
	struct qos_vbd *v;
	struct qos_sim_workload wl;
	struct slot *slots;
	uint32_t nslots;
	uint32_t *ring; /* queued slot numbers in issue order */
	uint32_t ring_head, ring_cnt;
	uint64_t cursor;
	uint64_t rng;
	uint64_t retry_at;
	uint32_t gen;

	uint64_t ops, bytes, dev_ns, lat_sum, lat_max, max_stall, last_done_ns;
	uint64_t *hist;
	uint64_t *series;
	unsigned nseries;
};

struct qos_sim {
	struct qos_sim_cfg cfg;
	uint64_t now;
	uint64_t measure_from;
	struct ev *heap;
	size_t nheap, cap_heap;
	uint64_t seq;
	int err;
	struct qos_simdev *dev;
	struct qos_sched *sched;
	struct simvbd vbd[QOS_SIM_MAX_VBD];
};

/*
 * ---- event heap ----
 */

static int ev_less(const struct ev *a, const struct ev *b)
{
	return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void ev_push(struct qos_sim *sim, struct ev e)
{
	size_t i;

	if (sim->nheap == sim->cap_heap) {
		size_t cap = sim->cap_heap ? 2 * sim->cap_heap : 256;
		struct ev *h = realloc(sim->heap, cap * sizeof(*h));

		if (!h) {
			sim->err = -ENOMEM;
			return;
		}
		sim->heap = h;
		sim->cap_heap = cap;
	}
	e.seq = sim->seq++;
	i = sim->nheap++;
	while (i && ev_less(&e, &sim->heap[(i - 1) / 2])) {
		sim->heap[i] = sim->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	sim->heap[i] = e;
}

static struct ev ev_pop(struct qos_sim *sim)
{
	struct ev top = sim->heap[0], last = sim->heap[--sim->nheap];
	size_t i = 0, n = sim->nheap;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && ev_less(&sim->heap[c + 1], &sim->heap[c]))
			c++;
		if (!ev_less(&sim->heap[c], &last))
			break;
		sim->heap[i] = sim->heap[c];
		i = c;
	}
	if (n)
		sim->heap[i] = last;
	return top;
}

/*
 * ---- histogram ----
 */

static unsigned hist_idx(uint64_t v)
{
	unsigned msb, shift;

	if (v < H_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - (H_SUB_BITS - 1);
	return H_SUB + (shift - 1) * H_HALF + (unsigned)((v >> shift) - H_HALF);
}

static uint64_t hist_upper(unsigned idx)
{
	unsigned shift;
	uint64_t top;

	if (idx < H_SUB)
		return idx;
	shift = (idx - H_SUB) / H_HALF + 1;
	top = (idx - H_SUB) % H_HALF + H_HALF;
	return ((top + 1) << shift) - 1;
}

static uint64_t hist_pct(const uint64_t *h, uint64_t n, uint64_t max, unsigned pct)
{
	uint64_t rank = (n * pct + 99) / 100, cum = 0;

	if (!n)
		return 0;
	for (unsigned i = 0; i < H_N; i++) {
		cum += h[i];
		if (cum >= rank)
			return hist_upper(i) < max ? hist_upper(i) : max;
	}
	return max;
}

/*
 * ---- vbds ----
 */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t sim_clock_now(void *ctx)
{
	return ((struct qos_sim *)ctx)->now;
}

static void schedule_retry(struct simvbd *sv, uint64_t t)
{
	if (t >= sv->retry_at)
		return;
	sv->retry_at = t;
	sv->gen++;
	ev_push(sv->sim, (struct ev){ .t = t, .kind = EV_RETRY, .vbd = sv->idx, .slot = sv->gen });
}

static void sim_wake(void *arg)
{
	struct simvbd *sv = arg;

	schedule_retry(sv, sv->sim->now);
}

static int slot_may_issue(const struct simvbd *sv, uint32_t slot, uint64_t now)
{
	return slot < sv->wl.qd && now >= sv->wl.start_ns && (!sv->wl.stop_ns || now < sv->wl.stop_ns);
}

/* Admit from the head of the vbd's queue, as a ring thread does, until refused or empty. */
static void pump(struct simvbd *sv)
{
	struct qos_sim *sim = sv->sim;

	while (sv->ring_cnt) {
		uint32_t n = sv->ring[sv->ring_head];
		struct slot *sl = &sv->slots[n];
		struct qos_io dio;
		uint64_t retry, done;

		if (sv->v) {
			int rc = qos_vbd_admit(sv->v, &sl->io, &sl->t, &retry);

			if (rc == -EAGAIN) {
				schedule_retry(sv, retry);
				return;
			}
		}
		sv->ring_head = (sv->ring_head + 1) % sv->nslots;
		sv->ring_cnt--;
		sl->state = SLOT_INFLIGHT;
		dio = sl->io;
		dio.offset_bytes += (uint64_t)sv->idx << SIM_VOL_SHIFT;
		done = qos_simdev_submit(sim->dev, &dio, &sl->svc_ns);
		ev_push(sim, (struct ev){ .t = done, .kind = EV_DONE, .vbd = sv->idx, .slot = n });
	}
}

static void slot_issue(struct simvbd *sv, uint32_t n)
{
	struct slot *sl = &sv->slots[n];
	uint64_t vol = sv->wl.vol_bytes, blocks = vol / sv->wl.bs_bytes;

	if (!slot_may_issue(sv, n, sv->sim->now)) {
		sl->state = SLOT_IDLE;
		return;
	}
	sl->io.op = sv->wl.op;
	sl->io.len_bytes = sv->wl.bs_bytes;
	if (sv->wl.seq) {
		if (sv->cursor + sv->wl.bs_bytes > vol)
			sv->cursor = 0;
		sl->io.offset_bytes = sv->cursor;
		sv->cursor += sv->wl.bs_bytes;
	} else {
		sl->io.offset_bytes = (splitmix(&sv->rng) % blocks) * sv->wl.bs_bytes;
	}
	sl->issue_ns = sv->sim->now;
	sl->state = SLOT_QUEUED;
	sv->ring[(sv->ring_head + sv->ring_cnt) % sv->nslots] = n;
	sv->ring_cnt++;
	pump(sv);
}

/* Schedule slot @n's next request: now, after think time, or at the workload's start. */
static void slot_next(struct simvbd *sv, uint32_t n, uint64_t delay)
{
	struct qos_sim *sim = sv->sim;
	uint64_t t = sim->now + delay;

	if (n >= sv->wl.qd || (sv->wl.stop_ns && t >= sv->wl.stop_ns)) {
		sv->slots[n].state = SLOT_IDLE;
		return;
	}
	if (t < sv->wl.start_ns)
		t = sv->wl.start_ns;
	if (t == sim->now) {
		slot_issue(sv, n);
		return;
	}
	sv->slots[n].state = SLOT_PENDING;
	ev_push(sim, (struct ev){ .t = t, .kind = EV_ISSUE, .vbd = sv->idx, .slot = n });
}

static void record(struct simvbd *sv, const struct slot *sl)
{
	struct qos_sim *sim = sv->sim;
	uint64_t now = sim->now, lat = now - sl->issue_ns;
	uint64_t from = sl->issue_ns > sv->last_done_ns ? sl->issue_ns : sv->last_done_ns;

	if (sim->cfg.series_ns) {
		unsigned b = (unsigned)(now / sim->cfg.series_ns);

		if (b >= sv->nseries) {
			unsigned n = b + 64;
			uint64_t *s = realloc(sv->series, n * sizeof(*s));

			if (!s) {
				sim->err = -ENOMEM;
			} else {
				memset(s + sv->nseries, 0, (n - sv->nseries) * sizeof(*s));
				sv->series = s;
				sv->nseries = n;
			}
		}
		if (b < sv->nseries)
			sv->series[b]++;
	}
	if (now >= sim->measure_from) {
		sv->ops++;
		sv->bytes += sl->io.len_bytes;
		sv->dev_ns += sl->svc_ns;
		sv->lat_sum += lat;
		if (lat > sv->lat_max)
			sv->lat_max = lat;
		sv->hist[hist_idx(lat)]++;
		if (from >= sim->measure_from && now - from > sv->max_stall)
			sv->max_stall = now - from;
	}
	sv->last_done_ns = now;
}

static void on_done(struct simvbd *sv, uint32_t n)
{
	struct slot *sl = &sv->slots[n];

	uint64_t think = sv->wl.think_ns;

	if (sv->v)
		qos_vbd_complete(sv->v, &sl->t);
	record(sv, sl);
	if (think && sv->wl.think_random)
		think = splitmix(&sv->rng) % (2 * think + 1);
	slot_next(sv, n, think);
}

/*
 * ---- public ----
 */

static int workload_ok(const struct qos_sim_workload *wl, unsigned i, char *why, size_t len)
{
	uint64_t vol = wl->vol_bytes ? wl->vol_bytes : SIM_VOL_DEFAULT;

	if (wl->op != QOS_OP_READ && wl->op != QOS_OP_WRITE) {
		qos_why(why, len, "vbd %u: workload op must be read or write", i);
		return -EINVAL;
	}
	if (!wl->bs_bytes || wl->bs_bytes > vol || wl->qd < 1 || wl->qd > SIM_QD_MAX ||
	    vol >= (1ull << SIM_VOL_SHIFT)) {
		qos_why(why, len, "vbd %u: need 0 < bs <= volume < 1 TiB and qd in 1..%d", i,
			SIM_QD_MAX);
		return -EINVAL;
	}
	return 0;
}

static int slots_grow(struct simvbd *sv, uint32_t qd)
{
	struct slot *s;
	uint32_t *r;
	uint32_t old = sv->nslots;

	if (qd <= old)
		return 0;
	s = realloc(sv->slots, qd * sizeof(*s));
	if (!s)
		return -ENOMEM;
	sv->slots = s;
	memset(s + old, 0, (qd - old) * sizeof(*s));
	r = malloc(qd * sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (uint32_t i = 0; i < sv->ring_cnt; i++)
		r[i] = sv->ring[(sv->ring_head + i) % old];
	free(sv->ring);
	sv->ring = r;
	sv->ring_head = 0;
	sv->nslots = qd;
	return 0;
}

int qos_sim_new(const struct qos_sim_cfg *cfg, struct qos_sim **out, char *why, size_t why_len)
{
	struct qos_clock clk = { sim_clock_now, NULL };
	struct qos_sim *sim;
	int err;

	if (cfg->nvbd < 1 || cfg->nvbd > QOS_SIM_MAX_VBD) {
		qos_why(why, why_len, "need 1..%d vbds", QOS_SIM_MAX_VBD);
		return -EINVAL;
	}
	for (unsigned i = 0; i < cfg->nvbd; i++) {
		err = workload_ok(&cfg->vbd[i].wl, i, why, why_len);
		if (err)
			return err;
	}
	sim = calloc(1, sizeof(*sim));
	if (!sim)
		return -ENOMEM;
	sim->cfg = *cfg;
	if (!sim->cfg.sched.period_ns)
		qos_params_default(&sim->cfg.sched);
	sim->measure_from = cfg->measure_from_ns;
	clk.ctx = sim;
	err = qos_simdev_new(&cfg->dev, &clk, &sim->dev);
	if (err) {
		qos_why(why, why_len, "simulated device: a 4 KiB request costs nothing");
		goto err_free;
	}
	if (!cfg->no_qos) {
		err = qos_sched_new(&sim->cfg.sched, &clk, &sim->sched, why, why_len);
		if (err)
			goto err_free;
	}
	for (unsigned i = 0; i < cfg->nvbd; i++) {
		struct simvbd *sv = &sim->vbd[i];
		struct qos_vbd_settings set = cfg->vbd[i].set;

		sv->sim = sim;
		sv->idx = i;
		sv->wl = cfg->vbd[i].wl;
		if (!sv->wl.vol_bytes)
			sv->wl.vol_bytes = SIM_VOL_DEFAULT;
		sv->rng = cfg->seed * 0x100000001b3ull + i;
		sv->retry_at = UINT64_MAX;
		sv->hist = calloc(H_N, sizeof(*sv->hist));
		err = sv->hist ? slots_grow(sv, sv->wl.qd) : -ENOMEM;
		if (err)
			goto err_free;
		if (sim->sched) {
			if (!set.weight)
				qos_vbd_settings_default(&set);
			err = qos_vbd_add(sim->sched, &set, sim_wake, sv, &sv->v, why, why_len);
			if (err)
				goto err_free;
		}
		for (uint32_t n = 0; n < sv->wl.qd; n++) {
			sv->slots[n].state = SLOT_PENDING;
			ev_push(sim, (struct ev){ .t = sv->wl.start_ns, .kind = EV_ISSUE, .vbd = i,
						  .slot = n });
		}
	}
	if (sim->err) {
		err = sim->err;
		goto err_free;
	}
	*out = sim;
	return 0;

err_free:
	qos_sim_free(sim);
	return err;
}

void qos_sim_free(struct qos_sim *sim)
{
	if (!sim)
		return;
	for (unsigned i = 0; i < QOS_SIM_MAX_VBD; i++) {
		struct simvbd *sv = &sim->vbd[i];

		qos_vbd_remove(sv->v);
		free(sv->slots);
		free(sv->ring);
		free(sv->hist);
		free(sv->series);
	}
	qos_sched_free(sim->sched);
	qos_simdev_free(sim->dev);
	free(sim->heap);
	free(sim);
}

int qos_sim_at(struct qos_sim *sim, uint64_t t_ns, qos_sim_fn fn, void *arg)
{
	ev_push(sim, (struct ev){ .t = t_ns, .kind = EV_CALL, .fn = fn, .arg = arg });
	return sim->err;
}

int qos_sim_run(struct qos_sim *sim, uint64_t until_ns)
{
	while (!sim->err && sim->nheap && sim->heap[0].t < until_ns) {
		struct ev e = ev_pop(sim);
		struct simvbd *sv = &sim->vbd[e.vbd];

		if (e.t > sim->now)
			sim->now = e.t;
		switch (e.kind) {
		case EV_ISSUE:
			if (sv->slots[e.slot].state == SLOT_PENDING)
				slot_issue(sv, e.slot);
			break;
		case EV_DONE:
			on_done(sv, e.slot);
			break;
		case EV_RETRY:
			if (e.slot == sv->gen) {
				sv->retry_at = UINT64_MAX;
				pump(sv);
			}
			break;
		case EV_CALL:
			e.fn(sim, e.arg);
			break;
		}
	}
	if (until_ns > sim->now)
		sim->now = until_ns;
	return sim->err;
}

uint64_t qos_sim_now(const struct qos_sim *sim)
{
	return sim->now;
}

struct qos_sched *qos_sim_sched(struct qos_sim *sim)
{
	return sim->sched;
}

struct qos_vbd *qos_sim_vbd(struct qos_sim *sim, unsigned i)
{
	return i < sim->cfg.nvbd ? sim->vbd[i].v : NULL;
}

struct qos_simdev *qos_sim_dev(struct qos_sim *sim)
{
	return sim->dev;
}

void qos_sim_set_workload(struct qos_sim *sim, unsigned i, const struct qos_sim_workload *wl)
{
	struct simvbd *sv;

	if (i >= sim->cfg.nvbd || workload_ok(wl, i, NULL, 0))
		return;
	sv = &sim->vbd[i];
	if (slots_grow(sv, wl->qd)) {
		sim->err = -ENOMEM;
		return;
	}
	sv->wl = *wl;
	if (!sv->wl.vol_bytes)
		sv->wl.vol_bytes = SIM_VOL_DEFAULT;
	sv->cursor = 0;
	for (uint32_t n = 0; n < sv->wl.qd; n++)
		if (sv->slots[n].state == SLOT_IDLE)
			slot_next(sv, n, 0);
}

void qos_sim_measure_restart(struct qos_sim *sim)
{
	sim->measure_from = sim->now;
	for (unsigned i = 0; i < sim->cfg.nvbd; i++) {
		struct simvbd *sv = &sim->vbd[i];

		sv->ops = sv->bytes = sv->dev_ns = sv->lat_sum = sv->lat_max = sv->max_stall = 0;
		memset(sv->hist, 0, H_N * sizeof(*sv->hist));
	}
}

void qos_sim_result(struct qos_sim *sim, unsigned i, struct qos_sim_result *o)
{
	struct simvbd *sv;

	memset(o, 0, sizeof(*o));
	if (i >= sim->cfg.nvbd)
		return;
	sv = &sim->vbd[i];
	o->ops = sv->ops;
	o->bytes = sv->bytes;
	o->dev_ns = sv->dev_ns;
	o->span_ns = sim->now > sim->measure_from ? sim->now - sim->measure_from : 0;
	if (o->span_ns) {
		o->iops = (double)sv->ops * 1e9 / (double)o->span_ns;
		o->bps = (double)sv->bytes * 1e9 / (double)o->span_ns;
	}
	o->lat_mean_ns = sv->ops ? sv->lat_sum / sv->ops : 0;
	o->lat_p50_ns = hist_pct(sv->hist, sv->ops, sv->lat_max, 50);
	o->lat_p99_ns = hist_pct(sv->hist, sv->ops, sv->lat_max, 99);
	o->lat_max_ns = sv->lat_max;
	o->max_stall_ns = sv->max_stall;
}

const uint64_t *qos_sim_series(struct qos_sim *sim, unsigned i, unsigned *n)
{
	unsigned b = sim->cfg.series_ns ? (unsigned)(sim->now / sim->cfg.series_ns) : 0;

	if (i >= sim->cfg.nvbd || !sim->vbd[i].series) {
		*n = 0;
		return NULL;
	}
	*n = b < sim->vbd[i].nseries ? b : sim->vbd[i].nseries;
	return sim->vbd[i].series;
}

double qos_jain_weighted(const double *t, const double *w, unsigned n)
{
	double sum = 0, sq = 0;

	for (unsigned i = 0; i < n; i++) {
		double x = w[i] > 0 ? t[i] / w[i] : 0;

		sum += x;
		sq += x * x;
	}
	return sq > 0 ? sum * sum / (n * sq) : 0;
}
