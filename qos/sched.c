/*
 * sched.c - the credit-weighted scheduler: admission, device window, credits, caps,
 * reservations, BOOST, and the per-period accounting that adapts window and vrate.
 *
 * All state lives under one mutex per device (see qos.h for why that is enough). Accounting
 * runs lazily: the first call after a period ended runs it before doing its own work, so no
 * timer thread is needed.
 */
#include "qos/qos.h"
#include "qos/qos_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PPM 1000000ull
#define BASE_HIST 4      /* periods with unqueued samples the base latency averages over */
#define RATE_SLOTS 64    /* periods kept for the per-vbd "last second" rates */
#define WINDOW_STEP_DIV 8 /* window moves by 1/8 per period */
#define TOL_MAX_NS (1ull << 60)

/*
 * A virtual-clock meter (GCRA): each unit pushes tat (theoretical arrival time) 1/rate seconds
 * into the future; a request passes while tat is at most tol_ns ahead of now. Holds a cap, a
 * burst's peak rate, or a reservation's token rate with one word of state, and tells exactly
 * when the next request will pass.
 */
struct meter {
	uint64_t tat_ns;
	uint64_t rate; /* units per second; 0 = off */
	uint64_t tol_ns;
};

struct list {
	struct list *prev, *next;
};

struct rate_slot {
	uint64_t ops, bytes, ns;
};

struct qos_vbd {
	struct qos_sched *s;
	struct list all;  /* s->vbds */
	struct list wait; /* s->contenders while waiting or granted */
	struct qos_vbd_settings set;
	qos_wake_fn wake;
	void *wake_arg;

	int64_t credit_ns;
	int active;      /* counted in s->weight_active */
	int demand;      /* admitted or refused something this period */
	int waiting;     /* on s->contenders, waiting for room */
	int granted;     /* on s->contenders, room held in grant_ticket for pend_io */
	uint64_t wait_since_ns;
	uint64_t grant_ns;
	struct qos_io pend_io;
	struct qos_ticket grant_ticket;

	struct meter cap_iops, cap_bps, peak_iops, peak_bps, resv;

	uint64_t cursor; /* end of the previous request, to tell sequential */
	int have_cursor;

	uint64_t inflight_ns;
	uint32_t inflight;
	uint32_t boost_inflight;
	uint64_t parked_until_ns;

	/* throttled-time bookkeeping: a refused segment runs from seg_start_ns */
	uint64_t seg_start_ns;
	int seg_cap;

	/* statistics */
	uint64_t ops, bytes, dev_ns, throttled_ns, parked_ns, boosts;
	uint64_t p_ops, p_bytes;
	struct rate_slot rates[RATE_SLOTS];
	unsigned rate_idx;
};

struct qos_sched {
	pthread_mutex_t lock;
	struct qos_params p;
	struct qos_clock clk;
	struct list vbds;
	struct list contenders; /* vbds waiting for room or holding granted room */
	uint32_t nvbd, nwaiting;
	uint64_t weight_active;
	uint32_t nactive;
	uint64_t resv_total;
	uint64_t capacity_iops;
	uint64_t cost4k_ns; /* a random 4 KiB read: smallest window */

	uint64_t vrate_ppm;
	uint64_t window_ns;
	uint64_t inflight_ns;

	uint64_t period_start_ns;
	uint64_t next_tick_ns;
	uint64_t last_evt_ns;
	uint64_t periods;

	/* this period's measurements; "lone" = dispatched to an empty device, so unqueued */
	uint64_t p_n, p_sum_e, p_sum_cost, p_max_cost, p_refused, p_wait_ns;
	uint64_t p_max_inflight; /* the most model ns in flight at once */
	uint64_t p_grant_n, p_grant_delay; /* granted rooms taken up, and their wait for the vbd */
	uint64_t grant_delay_ns;           /* smoothed: how long granted room waits for its vbd */
	unsigned __int128 p_sum_cost2;
	uint64_t p_lone_n, p_lone_lat, p_lone_cost;

	/* unqueued samples of the last periods that had some: count, sum of latency and cost */
	uint64_t base_n[BASE_HIST], base_lat[BASE_HIST], base_cost[BASE_HIST];
	unsigned base_idx;
	uint64_t lat_base_ns, lat_low_ns, lat_target_ns, lat_mean_ns;
};

/*
 * ---- small helpers ----
 */

static void list_init(struct list *l)
{
	l->prev = l->next = l;
}

static void list_add_tail(struct list *head, struct list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static void list_del(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

#define vbd_of(ptr, member) ((struct qos_vbd *)((char *)(ptr) - offsetof(struct qos_vbd, member)))

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t mul_div(uint64_t a, uint64_t b, uint64_t c)
{
	unsigned __int128 r = (unsigned __int128)a * b / c;

	return r > UINT64_MAX ? UINT64_MAX : (uint64_t)r;
}

static uint64_t meter_charge_ns(const struct meter *m, uint64_t units)
{
	/* Rounded up so that many small charges never add up to less than the rate allows. */
	return (uint64_t)(((unsigned __int128)units * QOS_NS_PER_SEC + m->rate - 1) / m->rate);
}

/* 1 and *until (the time the meter lets a request through) when @m holds requests back now. */
static int meter_blocked(const struct meter *m, uint64_t now, uint64_t *until)
{
	uint64_t tat;

	if (!m->rate)
		return 0;
	tat = max64(m->tat_ns, now);
	if (tat - now <= m->tol_ns)
		return 0;
	*until = tat - m->tol_ns;
	return 1;
}

static void meter_charge(struct meter *m, uint64_t now, uint64_t units)
{
	if (m->rate)
		m->tat_ns = max64(m->tat_ns, now) + meter_charge_ns(m, units);
}

static void meter_refund(struct meter *m, uint64_t units)
{
	if (m->rate)
		m->tat_ns -= min64(m->tat_ns, meter_charge_ns(m, units));
}

static void meter_set(struct meter *m, uint64_t rate, uint64_t tol_ns)
{
	m->rate = rate;
	m->tol_ns = tol_ns;
}

/*
 * Reservation tokens: due when tat <= now. An idle vbd catches up at most one period's worth,
 * so a reservation is a rate, not a bank.
 */
static int resv_due(const struct qos_vbd *v, uint64_t now)
{
	return v->resv.rate && v->resv.tat_ns <= now;
}

static void resv_take(struct qos_vbd *v, uint64_t now, uint64_t period_ns)
{
	uint64_t floor = now > period_ns ? now - period_ns : 0;

	v->resv.tat_ns = max64(v->resv.tat_ns, floor) + meter_charge_ns(&v->resv, 1);
}

static uint64_t budget_ns(const struct qos_sched *s)
{
	return mul_div(s->p.period_ns, s->vrate_ppm, PPM);
}

/* One period's share of the budget for weight @w: the bound on both credit and debt. */
static int64_t share_ns(const struct qos_sched *s, uint32_t w)
{
	uint64_t wt = s->weight_active ? s->weight_active : w;

	return (int64_t)mul_div(budget_ns(s), w, wt);
}

/*
 * ---- settings ----
 */

static int settings_check_locked(struct qos_sched *s, const struct qos_vbd *v,
				 const struct qos_vbd_settings *set, char *why, size_t len)
{
	uint64_t others;

	if (set->weight < QOS_WEIGHT_MIN || set->weight > QOS_WEIGHT_MAX) {
		qos_why(why, len, "weight %u is outside %d..%d", set->weight, QOS_WEIGHT_MIN,
			QOS_WEIGHT_MAX);
		return -EINVAL;
	}
	if (set->cap_iops > QOS_RATE_MAX || set->cap_bps > QOS_RATE_MAX ||
	    set->reserve_iops > QOS_RATE_MAX || set->burst_iops > QOS_RATE_MAX ||
	    set->burst_bps > QOS_RATE_MAX) {
		qos_why(why, len, "a rate is above the largest supported (%llu per second)",
			(unsigned long long)QOS_RATE_MAX);
		return -EINVAL;
	}
	if (set->reserve_iops && set->cap_iops && set->reserve_iops > set->cap_iops) {
		qos_why(why, len, "reservation %llu IOPS is above the cap of %llu IOPS",
			(unsigned long long)set->reserve_iops, (unsigned long long)set->cap_iops);
		return -EINVAL;
	}
	others = s->resv_total - (v ? v->set.reserve_iops : 0);
	if (set->reserve_iops > s->capacity_iops - min64(others, s->capacity_iops)) {
		qos_why(why, len,
			"reservations would add up to %llu IOPS, more than the device's %llu IOPS",
			(unsigned long long)(others + set->reserve_iops),
			(unsigned long long)s->capacity_iops);
		return -EINVAL;
	}
	if (set->burst_iops && (!set->cap_iops || set->burst_iops <= set->cap_iops)) {
		qos_why(why, len, "burst of %llu IOPS needs an IOPS cap below it",
			(unsigned long long)set->burst_iops);
		return -EINVAL;
	}
	if (set->burst_bps && (!set->cap_bps || set->burst_bps <= set->cap_bps)) {
		qos_why(why, len, "burst of %llu bytes/s needs a bytes/s cap below it",
			(unsigned long long)set->burst_bps);
		return -EINVAL;
	}
	if ((set->burst_iops || set->burst_bps) &&
	    (set->burst_seconds < 1 || set->burst_seconds > QOS_BURST_SECONDS_MAX)) {
		qos_why(why, len, "burst length %u s is outside 1..%d s", set->burst_seconds,
			QOS_BURST_SECONDS_MAX);
		return -EINVAL;
	}
	if (!set->burst_iops && !set->burst_bps && set->burst_seconds) {
		qos_why(why, len, "burst length %u s given without a burst rate",
			set->burst_seconds);
		return -EINVAL;
	}
	return 0;
}

/*
 * The cap meter tolerates one period (the granularity of "no stall longer than a period") plus,
 * with a burst, exactly the excess that running at @burst for @secs accumulates.
 */
static void cap_meters_set(struct qos_sched *s, struct meter *avg, struct meter *peak,
			   uint64_t cap, uint64_t burst, uint32_t secs)
{
	uint64_t tol = s->p.period_ns;

	if (cap && burst) {
		unsigned __int128 extra =
			(unsigned __int128)secs * (burst - cap) * QOS_NS_PER_SEC / cap;

		tol += extra > TOL_MAX_NS ? TOL_MAX_NS : (uint64_t)extra;
	}
	meter_set(avg, cap, tol);
	meter_set(peak, cap ? burst : 0, s->p.period_ns);
}

static void vbd_apply(struct qos_vbd *v, const struct qos_vbd_settings *set)
{
	struct qos_sched *s = v->s;

	if (v->active)
		s->weight_active = s->weight_active - v->set.weight + set->weight;
	/* Keep credit per unit of weight (the dispatch order) continuous across a weight change:
	 * otherwise a vbd in debt whose weight triples would look three times less indebted and
	 * hold the device until the others' order caught up. */
	if (v->set.weight && set->weight != v->set.weight)
		v->credit_ns = (int64_t)((__int128)v->credit_ns * set->weight / v->set.weight);
	s->resv_total = s->resv_total - v->set.reserve_iops + set->reserve_iops;
	v->set = *set;
	cap_meters_set(s, &v->cap_iops, &v->peak_iops, set->cap_iops, set->burst_iops,
		       set->burst_seconds);
	cap_meters_set(s, &v->cap_bps, &v->peak_bps, set->cap_bps, set->burst_bps,
		       set->burst_seconds);
	meter_set(&v->resv, set->reserve_iops, 0);
}

/*
 * ---- charging ----
 */

static uint64_t io_units_bytes(const struct qos_io *io)
{
	return io->op == QOS_OP_READ || io->op == QOS_OP_WRITE ? io->len_bytes : 0;
}

static int vbd_capped(const struct qos_vbd *v, uint64_t now, uint64_t *until)
{
	const struct meter *m[4] = { &v->cap_iops, &v->peak_iops, &v->cap_bps, &v->peak_bps };
	uint64_t u;
	int blocked = 0;

	*until = 0;
	for (int i = 0; i < 4; i++) {
		if (meter_blocked(m[i], now, &u)) {
			blocked = 1;
			*until = max64(*until, u);
		}
	}
	return blocked;
}

static int io_seq(const struct qos_vbd *v, const struct qos_io *io)
{
	uint64_t d;

	if (!v->have_cursor)
		return 0;
	d = io->offset_bytes > v->cursor ? io->offset_bytes - v->cursor
					 : v->cursor - io->offset_bytes;
	return d <= QOS_SEQ_WINDOW_BYTES;
}

/* Close a refused segment (throttled time) at @now. */
static void seg_close(struct qos_vbd *v, uint64_t now)
{
	uint64_t d;

	if (!v->seg_start_ns)
		return;
	d = now > v->seg_start_ns ? now - v->seg_start_ns : 0;
	v->throttled_ns += d;
	if (v->seg_cap)
		v->parked_ns += d;
	v->seg_start_ns = 0;
}

static void seg_open(struct qos_vbd *v, uint64_t now, int cap)
{
	v->seg_start_ns = now ? now : 1;
	v->seg_cap = cap;
}

static void vbd_charge(struct qos_vbd *v, const struct qos_io *io, uint64_t now,
		       struct qos_ticket *t, uint32_t flags)
{
	struct qos_sched *s = v->s;
	uint64_t cost = qos_cost_ns(&s->p.cost, io, io_seq(v, io));
	uint64_t bytes = io_units_bytes(io);

	if (io->op == QOS_OP_READ || io->op == QOS_OP_WRITE) {
		v->cursor = io->offset_bytes + io->len_bytes;
		v->have_cursor = 1;
	}
	if (v->cap_iops.rate || v->cap_bps.rate) {
		meter_charge(&v->cap_iops, now, 1);
		meter_charge(&v->peak_iops, now, 1);
		meter_charge(&v->cap_bps, now, bytes);
		meter_charge(&v->peak_bps, now, bytes);
		flags |= QOS_TICKET_CAP;
	}
	if (resv_due(v, now)) {
		resv_take(v, now, s->p.period_ns);
		flags |= QOS_TICKET_RESV;
	}
	if (!s->inflight_ns)
		flags |= QOS_TICKET_LONE;
	v->credit_ns -= (int64_t)cost;
	s->inflight_ns += cost;
	s->p_max_inflight = max64(s->p_max_inflight, s->inflight_ns);
	v->inflight_ns += cost;
	v->inflight++;
	if (flags & QOS_TICKET_BOOST) {
		v->boost_inflight++;
		v->boosts++;
	}
	t->cost_ns = cost;
	t->dispatch_ns = now;
	t->len_bytes = bytes;
	t->flags = flags;
}

/* Take back what vbd_charge() charged; the request never ran. */
static void vbd_uncharge(struct qos_vbd *v, const struct qos_ticket *t)
{
	struct qos_sched *s = v->s;

	if (t->flags & QOS_TICKET_CAP) {
		meter_refund(&v->cap_iops, 1);
		meter_refund(&v->peak_iops, 1);
		meter_refund(&v->cap_bps, t->len_bytes);
		meter_refund(&v->peak_bps, t->len_bytes);
	}
	if ((t->flags & QOS_TICKET_RESV) && v->resv.rate)
		meter_refund(&v->resv, 1);
	if ((t->flags & QOS_TICKET_BOOST) && v->boost_inflight) {
		v->boost_inflight--;
		v->boosts--;
	}
	v->credit_ns += (int64_t)t->cost_ns;
	s->inflight_ns -= min64(s->inflight_ns, t->cost_ns);
	v->inflight_ns -= min64(v->inflight_ns, t->cost_ns);
	if (v->inflight)
		v->inflight--;
}

/*
 * ---- waiting and granting ----
 */

/*
 * Contenders are the vbds the device's room is shared among: those waiting for room and those
 * holding room granted to them but not yet claimed. A granted vbd stays a contender because its
 * thread will be back for more as soon as it has claimed; without that, room left over after a
 * grant would go to whichever thread asks first (typically the one whose completion freed it,
 * so a vbd of big requests would keep winning its own room back whatever its credit).
 */
static void contend_wait(struct qos_vbd *v, uint64_t now)
{
	if (v->waiting || v->granted)
		return;
	list_add_tail(&v->s->contenders, &v->wait);
	v->waiting = 1;
	v->wait_since_ns = now;
	v->s->nwaiting++;
}

static void contend_grant(struct qos_vbd *v, uint64_t now)
{
	v->waiting = 0;
	v->s->nwaiting--;
	v->granted = 1;
	v->grant_ns = now;
}

/* Leave the contenders; a granted room must have been claimed or uncharged by the caller. */
static void contend_del(struct qos_vbd *v)
{
	if (!v->waiting && !v->granted)
		return;
	list_del(&v->wait);
	if (v->waiting)
		v->s->nwaiting--;
	v->waiting = 0;
	v->granted = 0;
}

/*
 * 1 if @a should get the device before @b: a due reservation first (mClock's reservation
 * phase), then more credit per unit of weight (UNDER before OVER, and among equals the split
 * follows the weights), then the one waiting longer.
 */
static int vbd_before(const struct qos_vbd *a, const struct qos_vbd *b, uint64_t now)
{
	int ra = resv_due(a, now), rb = resv_due(b, now);
	__int128 ca, cb;

	if (ra != rb)
		return ra > rb;
	ca = (__int128)a->credit_ns * b->set.weight;
	cb = (__int128)b->credit_ns * a->set.weight;
	if (ca != cb)
		return ca > cb;
	return a->wait_since_ns < b->wait_since_ns;
}

static struct qos_vbd *best_contender(struct qos_sched *s, uint64_t now)
{
	struct qos_vbd *best = NULL;

	for (struct list *l = s->contenders.next; l != &s->contenders; l = l->next) {
		struct qos_vbd *v = vbd_of(l, wait);

		if (!best || vbd_before(v, best, now))
			best = v;
	}
	return best;
}

/* 1 if another contender should get the device before @v. */
static int contender_before(struct qos_sched *s, const struct qos_vbd *v, uint64_t now)
{
	for (struct list *l = s->contenders.next; l != &s->contenders; l = l->next) {
		struct qos_vbd *u = vbd_of(l, wait);

		if (u != v && vbd_before(u, v, now))
			return 1;
	}
	return 0;
}

/*
 * Grant the device's free room to the best contenders and wake them. Stops when the best one
 * already holds a grant: the rest of the room is left for its next requests.
 */
static void sched_fill(struct qos_sched *s, uint64_t now)
{
	while (s->nwaiting && s->inflight_ns < s->window_ns) {
		struct qos_vbd *best = best_contender(s, now);
		uint64_t until;

		if (best->granted)
			break;
		if (vbd_capped(best, now, &until)) {
			/* Capped meanwhile (settings changed): it learns its parking time on retry. */
			contend_del(best);
		} else {
			vbd_charge(best, &best->pend_io, now, &best->grant_ticket, 0);
			contend_grant(best, now);
		}
		if (best->wake)
			best->wake(best->wake_arg);
	}
}

/*
 * ---- accounting ----
 */

static void vbd_activate(struct qos_vbd *v)
{
	struct qos_sched *s = v->s;

	if (v->active)
		return;
	v->active = 1;
	s->nactive++;
	s->weight_active += v->set.weight;
	/* The newcomer shrinks everyone's share at once: cut banks to the new bound so a vbd that
	 * was alone cannot hold the device for a whole period ahead of it. */
	for (struct list *l = s->vbds.next; l != &s->vbds; l = l->next) {
		struct qos_vbd *u = vbd_of(l, all);
		int64_t bound;

		if (!u->active)
			continue;
		bound = share_ns(s, u->set.weight);
		if (u->credit_ns > bound)
			u->credit_ns = bound;
	}
}

/*
 * Steer the window so the device stays busy with a short queue (TCP Vegas / PARDA style). The
 * reference is the device's unqueued latency: the mean of "lone" requests, the ones dispatched
 * while nothing else was in flight. Only those update it, so a queue that never drains cannot
 * creep into the reference (a plain minimum over all requests would ratchet upwards), and a
 * jittery device's mean, not its best case, is what the queue is measured against. When the
 * device's own latency rises, the window shrinks until requests run alone again and the
 * reference follows.
 */
static void account_window(struct qos_sched *s)
{
	uint64_t mean_e, mean_cost, mean_svc, resid, n = 0, lat = 0, cost = 0, base, low, target;
	uint64_t wmin, wmax;

	if (s->p_lone_n) {
		s->base_n[s->base_idx % BASE_HIST] = s->p_lone_n;
		s->base_lat[s->base_idx % BASE_HIST] = s->p_lone_lat;
		s->base_cost[s->base_idx % BASE_HIST] = s->p_lone_cost;
		s->base_idx++;
	}
	if (!s->p_n)
		return;
	for (int i = 0; i < BASE_HIST; i++) {
		n += s->base_n[i];
		lat += s->base_lat[i];
		cost += s->base_cost[i];
	}
	mean_e = s->p_sum_e / s->p_n;
	mean_cost = s->p_sum_cost / s->p_n;
	mean_svc = mul_div(mean_cost, PPM, s->vrate_ppm);
	/* Mean residual service time E[S^2] / 2E[S]: what a request waits, on average, behind the
	 * one in service. A busy device needs that much queueing, more with big requests. */
	resid = s->p_sum_cost ? (uint64_t)(s->p_sum_cost2 / (2 * s->p_sum_cost)) : 0;
	resid = mul_div(resid, PPM, s->vrate_ppm);
	/* Service time is taken out with today's vrate: samples from when the estimate was still
	 * off (at start, typically the only time the device was empty) must not stay off. */
	if (n) {
		uint64_t svc = mul_div(cost, PPM, s->vrate_ppm);

		base = lat > svc ? (lat - svc) / n : 0;
	} else {
		base = mean_e;
	}
	/* low: the latency of a device kept just busy; target: plus the queueing allowance. */
	low = base + resid;
	if (s->p.lat_target_ns)
		target = max64(s->p.lat_target_ns, base);
	else
		target = low + max64(QOS_QDELAY_MIN_NS, (base + mean_svc) * s->p.qdelay_pct / 100);
	low = min64(low, target);

	if (mean_e > target) {
		/* Little's law: the excess queueing delay times the device's rate is the excess
		 * work in flight. Take it out, at most half the window per period. */
		uint64_t excess = mul_div(mean_e - target, s->vrate_ppm, PPM);

		s->window_ns -= min64(excess, s->window_ns / 2);
	} else if (s->p_refused && mean_e <= low + (target - low) / 2) {
		s->window_ns += max64(s->window_ns / WINDOW_STEP_DIV, mean_cost);
	}
	/*
	 * Never less than what keeps the server busy behind the biggest recent request: the work
	 * the device does during one unqueued latency, that request, and an average one queued.
	 * A request holds its whole cost in the window until it completes, also during the
	 * device's fixed latency when the server is already free for others.
	 */
	/*
	 * Plus the work the device does while granted room waits for its vbd to come and take it
	 * (a ring thread's wake-up: nothing in virtual time, tens to hundreds of us on a busy
	 * host): that room is in the window but not on the device, which would run dry.
	 */
	if (s->p_grant_n)
		s->grant_delay_ns = (3 * s->grant_delay_ns + s->p_grant_delay / s->p_grant_n) / 4;
	wmin = max64(s->cost4k_ns, mul_div(base + s->grant_delay_ns, s->vrate_ppm, PPM) +
					   s->p_max_cost + mean_cost);
	wmax = max64(budget_ns(s), wmin);
	/*
	 * A window that refused nobody was not validated by use (TCP's congestion window
	 * validation, RFC 7661): let it fall halfway to what was in flight at most, so a latency
	 * spike that raised the floor for a while cannot keep it high once contention starts.
	 */
	if (!s->p_refused) {
		uint64_t used = max64(s->p_max_inflight, wmin);

		if (s->window_ns > used)
			s->window_ns -= (s->window_ns - used) / 2;
	}
	s->window_ns = max64(wmin, min64(s->window_ns, wmax));
	s->lat_base_ns = base;
	s->lat_low_ns = low;
	s->lat_target_ns = target;
	s->lat_mean_ns = mean_e;
}

static void account_vrate(struct qos_sched *s, uint64_t elapsed)
{
	uint64_t x = mul_div(s->p_sum_cost, PPM, elapsed);
	uint64_t lo = s->p.vrate_min_pct * 10000ull, hi = s->p.vrate_max_pct * 10000ull;
	int queued = s->p_n && s->lat_mean_ns > s->lat_low_ns + (s->lat_target_ns - s->lat_low_ns) / 2;

	/* Only a period where vbds were held back for most of it and requests queued in the device
	 * shows what the device can do; otherwise the throughput is just a lower bound on its
	 * capacity. (A too-high vrate underestimates service times, which looks like queueing, so
	 * the estimate can always come down; a too-low one is corrected by the lower bound.) */
	if (queued && s->p_wait_ns * 2 >= elapsed)
		s->vrate_ppm = (3 * s->vrate_ppm + x) / 4;
	else if (x > s->vrate_ppm)
		s->vrate_ppm = x;
	s->vrate_ppm = max64(lo, min64(s->vrate_ppm, hi));
}

static void account_rates(struct qos_vbd *v, uint64_t elapsed)
{
	struct rate_slot *r = &v->rates[v->rate_idx++ % RATE_SLOTS];

	r->ops = v->p_ops;
	r->bytes = v->p_bytes;
	r->ns = elapsed;
	v->p_ops = v->p_bytes = 0;
}

static void sched_account(struct qos_sched *s, uint64_t now)
{
	uint64_t elapsed = now - s->period_start_ns;
	uint64_t nper = elapsed / s->p.period_ns;
	uint64_t inc, wsum = 0;
	uint32_t nactive = 0;

	account_window(s);
	account_vrate(s, elapsed);

	/*
	 * The ended period's budget goes to the vbds that had demand in it (or still have requests
	 * in flight or waiting): an idle vbd's share goes to the busy ones. A late tick must not
	 * hand out more than two periods: nobody asked for it then.
	 */
	for (struct list *l = s->vbds.next; l != &s->vbds; l = l->next) {
		struct qos_vbd *v = vbd_of(l, all);

		if (v->granted && now - v->grant_ns >= s->p.period_ns) {
			/* Granted room nobody came for goes back to the device. */
			vbd_uncharge(v, &v->grant_ticket);
			contend_del(v);
		}
		v->active = v->demand || v->inflight || v->waiting || v->granted;
		v->demand = 0;
		if (v->active) {
			nactive++;
			wsum += v->set.weight;
		}
	}
	s->weight_active = wsum;
	s->nactive = nactive;
	inc = mul_div(min64(elapsed, 2 * s->p.period_ns), s->vrate_ppm, PPM);
	for (struct list *l = s->vbds.next; l != &s->vbds; l = l->next) {
		struct qos_vbd *v = vbd_of(l, all);

		if (v->active) {
			int64_t bound = share_ns(s, v->set.weight);

			v->credit_ns += (int64_t)mul_div(inc, v->set.weight, wsum);
			if (v->credit_ns > bound)
				v->credit_ns = bound;
			if (v->credit_ns < -bound)
				v->credit_ns = -bound;
		} else {
			/* Idle: earns nothing; credit and debt both decay by half a period. */
			v->credit_ns /= (int64_t)1 << min64(nper, 62);
		}
		account_rates(v, elapsed);
	}
	s->periods++;
	s->p_n = s->p_sum_e = s->p_sum_cost = s->p_refused = s->p_wait_ns = 0;
	s->p_lone_n = s->p_lone_lat = s->p_lone_cost = 0;
	s->p_sum_cost2 = 0;
	s->p_max_cost = 0;
	s->p_max_inflight = s->inflight_ns;
	s->p_grant_n = s->p_grant_delay = 0;
	s->period_start_ns = now;
	s->next_tick_ns = now + s->p.period_ns;
	sched_fill(s, now);
}

/* Lock held: read the clock, integrate waiting time, run the accounting when a period ended. */
static uint64_t sched_enter(struct qos_sched *s)
{
	uint64_t now = s->clk.now_ns(s->clk.ctx);

	if (now < s->last_evt_ns)
		now = s->last_evt_ns;
	if (s->nwaiting)
		s->p_wait_ns += now - s->last_evt_ns;
	s->last_evt_ns = now;
	if (now >= s->next_tick_ns)
		sched_account(s, now);
	return now;
}

/*
 * ---- public API ----
 */

int qos_sched_new(const struct qos_params *p, const struct qos_clock *clock,
		  struct qos_sched **out, char *why, size_t why_len)
{
	struct qos_params def;
	struct qos_sched *s;
	struct qos_io io4k = { QOS_OP_READ, 0, QOS_PAGE_BYTES };
	struct qos_io wr4k = { QOS_OP_WRITE, 0, QOS_PAGE_BYTES };
	uint64_t crd, cwr;
	int err;

	if (!p) {
		qos_params_default(&def);
		p = &def;
	}
	if (p->period_ns < QOS_PERIOD_MIN_NS || p->period_ns > QOS_PERIOD_MAX_NS) {
		qos_why(why, why_len, "period %llu ns is outside 1 ms..1 s",
			(unsigned long long)p->period_ns);
		return -EINVAL;
	}
	crd = qos_cost_ns(&p->cost, &io4k, 0);
	cwr = qos_cost_ns(&p->cost, &wr4k, 0);
	if (!crd || !cwr || crd > QOS_NS_PER_SEC || cwr > QOS_NS_PER_SEC) {
		qos_why(why, why_len, "cost model gives a 4 KiB random request %llu/%llu ns "
				      "(read/write); it must be 1 ns..1 s",
			(unsigned long long)crd, (unsigned long long)cwr);
		return -EINVAL;
	}
	if (p->vrate_min_pct < 1 || p->vrate_min_pct > 100 || p->vrate_max_pct < 100 ||
	    p->vrate_max_pct > 10000) {
		qos_why(why, why_len, "vrate bounds %u%%..%u%% are not within 1..100 and 100..10000",
			p->vrate_min_pct, p->vrate_max_pct);
		return -EINVAL;
	}
	if (p->qdelay_pct < 1 || p->qdelay_pct > 1000) {
		qos_why(why, why_len, "queueing allowance %u%% is outside 1..1000", p->qdelay_pct);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	err = -pthread_mutex_init(&s->lock, NULL);
	if (err)
		goto err_free;
	s->p = *p;
	s->clk = clock ? *clock : *qos_clock_monotonic();
	list_init(&s->vbds);
	list_init(&s->contenders);
	s->cost4k_ns = crd;
	s->capacity_iops = QOS_NS_PER_SEC / max64(crd, cwr);
	s->vrate_ppm = PPM;
	s->window_ns = p->window_init_ns ? p->window_init_ns : 32 * crd;
	s->window_ns = max64(s->window_ns, crd);
	s->last_evt_ns = s->clk.now_ns(s->clk.ctx);
	s->period_start_ns = s->last_evt_ns;
	s->next_tick_ns = s->last_evt_ns + p->period_ns;
	*out = s;
	return 0;

err_free:
	free(s);
	return err;
}

void qos_sched_free(struct qos_sched *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void qos_sched_tick(struct qos_sched *s)
{
	pthread_mutex_lock(&s->lock);
	sched_enter(s);
	pthread_mutex_unlock(&s->lock);
}

uint64_t qos_sched_capacity_iops(const struct qos_sched *s)
{
	return s->capacity_iops;
}

int qos_settings_check(struct qos_sched *s, const struct qos_vbd *v,
		       const struct qos_vbd_settings *set, char *why, size_t why_len)
{
	int err;

	pthread_mutex_lock(&s->lock);
	err = settings_check_locked(s, v, set, why, why_len);
	pthread_mutex_unlock(&s->lock);
	return err;
}

int qos_vbd_add(struct qos_sched *s, const struct qos_vbd_settings *set, qos_wake_fn wake,
		void *wake_arg, struct qos_vbd **out, char *why, size_t why_len)
{
	struct qos_vbd_settings def;
	struct qos_vbd *v;
	int err;

	if (!set) {
		qos_vbd_settings_default(&def);
		set = &def;
	}
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->s = s;
	v->wake = wake;
	v->wake_arg = wake_arg;
	list_init(&v->wait);
	pthread_mutex_lock(&s->lock);
	err = settings_check_locked(s, NULL, set, why, why_len);
	if (err)
		goto err_unlock;
	vbd_apply(v, set);
	list_add_tail(&s->vbds, &v->all);
	s->nvbd++;
	pthread_mutex_unlock(&s->lock);
	*out = v;
	return 0;

err_unlock:
	pthread_mutex_unlock(&s->lock);
	free(v);
	return err;
}

void qos_vbd_remove(struct qos_vbd *v)
{
	struct qos_sched *s;
	uint64_t now;

	if (!v)
		return;
	s = v->s;
	pthread_mutex_lock(&s->lock);
	now = sched_enter(s);
	if (v->granted)
		vbd_uncharge(v, &v->grant_ticket);
	contend_del(v);
	s->inflight_ns -= min64(s->inflight_ns, v->inflight_ns);
	if (v->active) {
		s->weight_active -= v->set.weight;
		s->nactive--;
	}
	s->resv_total -= v->set.reserve_iops;
	list_del(&v->all);
	s->nvbd--;
	sched_fill(s, now);
	pthread_mutex_unlock(&s->lock);
	free(v);
}

int qos_vbd_set(struct qos_vbd *v, const struct qos_vbd_settings *set, char *why,
		size_t why_len)
{
	struct qos_sched *s = v->s;
	int err;

	pthread_mutex_lock(&s->lock);
	sched_enter(s);
	err = settings_check_locked(s, v, set, why, why_len);
	if (!err)
		vbd_apply(v, set);
	pthread_mutex_unlock(&s->lock);
	return err;
}

static int io_same(const struct qos_io *a, const struct qos_io *b)
{
	return a->op == b->op && a->offset_bytes == b->offset_bytes &&
	       a->len_bytes == b->len_bytes;
}

int qos_vbd_admit(struct qos_vbd *v, const struct qos_io *io, struct qos_ticket *ticket,
		  uint64_t *retry_at_ns)
{
	struct qos_sched *s = v->s;
	uint64_t now, until;

	if ((unsigned)io->op >= QOS_OP_COUNT)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	now = sched_enter(s);
	vbd_activate(v);
	v->demand = 1;
	seg_close(v, now);

	if (v->granted) {
		int same = io_same(io, &v->pend_io);

		if (!same)
			/* Not the request the room was granted for: start over with this one. */
			vbd_uncharge(v, &v->grant_ticket);
		contend_del(v);
		if (same) {
			s->p_grant_n++;
			s->p_grant_delay += now - v->grant_ns;
			*ticket = v->grant_ticket;
			ticket->dispatch_ns = now;
			goto out_go;
		}
	}
	if (vbd_capped(v, now, &until)) {
		/* Parked: a capped vbd must not hold a place among the contenders. */
		contend_del(v);
		v->parked_until_ns = until;
		seg_open(v, now, 1);
		*retry_at_ns = until;
		sched_fill(s, now);
		pthread_mutex_unlock(&s->lock);
		return -EAGAIN;
	}
	v->parked_until_ns = 0;
	/*
	 * The window divides the device among tenants and keeps their queues short. A vbd alone on
	 * the device has nobody to share with (a newcomer gets in by BOOST and then by credit): its
	 * queue depth is its own choice, so it is not held back (work-conserving, and QoS costs a
	 * lone guest nothing). Caps and bursts above still apply.
	 */
	if ((s->inflight_ns < s->window_ns || s->nactive == 1) && !contender_before(s, v, now)) {
		contend_del(v);
		vbd_charge(v, io, now, ticket, 0);
		goto out_go;
	}
	if (!v->inflight && !v->waiting && v->credit_ns >= 0) {
		/* BOOST: a vbd waking with credit gets its first request in at once, even past a
		 * full window or better contenders. Bounded: one request per vbd with nothing in
		 * flight, paid from its credit. */
		vbd_charge(v, io, now, ticket, QOS_TICKET_BOOST);
		goto out_go;
	}
	v->pend_io = *io;
	contend_wait(v, now);
	seg_open(v, now, 0);
	s->p_refused++;
	/* With a wake callback the time is a backstop; without one the vbd must poll, and room
	 * granted to it is held until it does, so it polls at the pace of completions. */
	*retry_at_ns = now + (v->wake ? s->p.period_ns
				      : max64(1000, mul_div(s->cost4k_ns, PPM, s->vrate_ppm)));
	/* Room left for a better contender may go to a better waiter now. */
	sched_fill(s, now);
	pthread_mutex_unlock(&s->lock);
	return -EAGAIN;

out_go:
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void qos_vbd_complete(struct qos_vbd *v, const struct qos_ticket *t)
{
	qos_vbd_complete_at(v, t, 0);
}

void qos_vbd_complete_at(struct qos_vbd *v, const struct qos_ticket *t, uint64_t done_ns)
{
	struct qos_sched *s = v->s;
	uint64_t now, lat, svc, e, end;

	pthread_mutex_lock(&s->lock);
	now = sched_enter(s);
	/* The device's completion, when the caller knows it: later is the host's delay. */
	end = done_ns && done_ns < now ? done_ns : now;
	s->inflight_ns -= min64(s->inflight_ns, t->cost_ns);
	v->inflight_ns -= min64(v->inflight_ns, t->cost_ns);
	if (v->inflight)
		v->inflight--;
	if ((t->flags & QOS_TICKET_BOOST) && v->boost_inflight)
		v->boost_inflight--;
	lat = end > t->dispatch_ns ? end - t->dispatch_ns : 0;
	svc = mul_div(t->cost_ns, PPM, s->vrate_ppm);
	e = lat > svc ? lat - svc : 0;
	s->p_n++;
	s->p_sum_e += e;
	if (t->flags & QOS_TICKET_LONE) {
		s->p_lone_n++;
		s->p_lone_lat += lat;
		s->p_lone_cost += t->cost_ns;
	}
	s->p_sum_cost += t->cost_ns;
	s->p_sum_cost2 += (unsigned __int128)t->cost_ns * t->cost_ns;
	s->p_max_cost = max64(s->p_max_cost, t->cost_ns);
	v->ops++;
	v->bytes += t->len_bytes;
	v->dev_ns += t->cost_ns;
	v->p_ops++;
	v->p_bytes += t->len_bytes;
	sched_fill(s, now);
	pthread_mutex_unlock(&s->lock);
}

void qos_vbd_cancel(struct qos_vbd *v, const struct qos_ticket *t)
{
	struct qos_sched *s = v->s;
	uint64_t now;

	pthread_mutex_lock(&s->lock);
	now = sched_enter(s);
	vbd_uncharge(v, t);
	sched_fill(s, now);
	pthread_mutex_unlock(&s->lock);
}

void qos_vbd_stats(struct qos_vbd *v, struct qos_vbd_stats *o)
{
	struct qos_sched *s = v->s;
	uint64_t now, ops = 0, bytes = 0, ns = 0;

	pthread_mutex_lock(&s->lock);
	now = sched_enter(s);
	memset(o, 0, sizeof(*o));
	o->set = v->set;
	if (!v->active)
		o->state = QOS_STATE_IDLE;
	else if (v->parked_until_ns > now)
		o->state = QOS_STATE_PARKED;
	else if (v->boost_inflight)
		o->state = QOS_STATE_BOOST;
	else
		o->state = v->credit_ns >= 0 ? QOS_STATE_UNDER : QOS_STATE_OVER;
	o->share_ppm = v->active && s->weight_active
			       ? (uint32_t)mul_div(v->set.weight, PPM, s->weight_active)
			       : 0;
	o->credit_ns = v->credit_ns;
	/* Rates over the newest periods that fit in one second (at least one period). */
	for (unsigned i = 0; i < RATE_SLOTS && i < v->rate_idx; i++) {
		const struct rate_slot *r = &v->rates[(v->rate_idx - 1 - i) % RATE_SLOTS];

		if (i && ns + r->ns > QOS_NS_PER_SEC)
			break;
		ops += r->ops;
		bytes += r->bytes;
		ns += r->ns;
	}
	if (ns) {
		o->iops = mul_div(ops, QOS_NS_PER_SEC, ns);
		o->bps = mul_div(bytes, QOS_NS_PER_SEC, ns);
	}
	o->ops = v->ops;
	o->bytes = v->bytes;
	o->dev_ns = v->dev_ns;
	o->throttled_ns = v->throttled_ns;
	o->parked_ns = v->parked_ns;
	if (v->seg_start_ns && now > v->seg_start_ns) {
		o->throttled_ns += now - v->seg_start_ns;
		if (v->seg_cap)
			o->parked_ns += now - v->seg_start_ns;
	}
	o->boosts = v->boosts;
	o->inflight = v->inflight;
	pthread_mutex_unlock(&s->lock);
}

void qos_sched_stats(struct qos_sched *s, struct qos_sched_stats *o)
{
	pthread_mutex_lock(&s->lock);
	sched_enter(s);
	memset(o, 0, sizeof(*o));
	o->period_ns = s->p.period_ns;
	o->periods = s->periods;
	o->vrate_ppm = (uint32_t)s->vrate_ppm;
	o->window_ns = s->window_ns;
	o->grant_delay_ns = s->grant_delay_ns;
	o->inflight_ns = s->inflight_ns;
	o->lat_base_ns = s->lat_base_ns;
	o->lat_target_ns = s->lat_target_ns;
	o->lat_mean_ns = s->lat_mean_ns;
	o->budget_ns = budget_ns(s);
	o->capacity_iops = s->capacity_iops;
	o->reserved_iops = s->resv_total;
	o->weight_active = (uint32_t)s->weight_active;
	o->nvbd = s->nvbd;
	o->nactive = s->nactive;
	o->nwaiting = s->nwaiting;
	pthread_mutex_unlock(&s->lock);
}
