/*
 * qos.h - per-disk credit-weighted I/O scheduling: the scheduler, the cost model, limits.
 *
 * Pure logic with an injectable clock: nothing here does I/O, sleeps or starts threads, so the
 * same code runs in blkbackd's ring threads and in virtual-time tests (qos/qos_sim.h).
 *
 * The model (docs/qos.md has the reasoning):
 *   - One struct qos_sched per physical device (or pool sharing one device); one struct qos_vbd
 *     per virtual disk on it.
 *   - Every request costs device time, in model nanoseconds, from a linear cost model (base per
 *     request + per 4 KiB page, separate for reads and writes and for sequential and random
 *     requests, as blk-iocost). A device delivers vrate model-ns per wall-ns (1.0 when the model
 *     is right); vrate is measured from completions.
 *   - The device is a slot pool, like the pCPUs of Xen's credit scheduler: at most `window`
 *     model-ns of requests are in flight. The window is steered by completion latency so the
 *     device stays busy while its own queue stays short. When it is full, a vbd waits; a
 *     completion grants the freed room to the best waiting vbd and wakes it.
 *   - Credits as in Xen's credit scheduler: every accounting period (30 ms) the device's budget
 *     (vrate x period) is shared among the vbds that had demand, by weight. Dispatch costs
 *     credit. Waiting vbds are served in priority order: reservation due first (mClock), then
 *     by credit per unit of weight, so vbds with credit (UNDER) go before vbds in debt (OVER)
 *     and the device splits by weight. Idle vbds earn nothing (their share goes to the busy
 *     ones) and their credit decays by half each period. Banked credit and debt are bounded by
 *     one period's share.
 *   - A vbd with nothing in flight and credit left is BOOSTed: its request is dispatched at
 *     once even when the device is full (Xen boosts a vCPU waking from a block), so a light
 *     tenant's latency stays near the device's own.
 *   - Caps (IOPS and bytes/s) are hard ceilings enforced per request by a virtual-clock meter
 *     (GCRA): a capped vbd is PARKED until the exact time its next request fits, never longer
 *     than its own request spacing. A burst lets a vbd run at burst_* above its cap for
 *     burst_seconds after a quiet spell (QEMU's *-max and *-max-length).
 *
 * Calling sequence (a blkbackd ring thread; docs/qos.md has the whole wiring):
 *
 *	qos_vbd_add(sched, &settings, wake_ring, ring, &vbd, why, sizeof(why));
 *	for each request on the ring, in order, after copying and validating it:
 *		struct qos_io io = { QOS_OP_READ, sector * 512, bytes };
 *		uint64_t retry_at;
 *		if (qos_vbd_admit(vbd, &io, &req->qos_ticket, &retry_at) == -EAGAIN) {
 *			// leave it on the ring; retry it when wake_ring() fires or at retry_at
 *			break;
 *		}
 *		if (target_submit(q, &req->io) == -EAGAIN) {
 *			qos_vbd_cancel(vbd, &req->qos_ticket);
 *			break;
 *		}
 *	in the target's completion: qos_vbd_complete(vbd, &req->qos_ticket); respond.
 *	on detach, after in-flight I/O finished: qos_vbd_remove(vbd);
 *
 * No timer is needed for the accounting: the first call after a period ends runs it.
 *
 * Threads: every function taking a struct qos_sched or struct qos_vbd may be called from any
 * thread; one mutex per sched serialises them. The critical section is a few dozen arithmetic
 * operations (plus a scan of the contending vbds when the device is full), so the lock is held
 * briefly and only ring threads of the same device contend for it.
 *
 * Errors: functions return 0 or a negative errno; none returns a positive errno. Validation
 * errors come with one sentence in a caller-supplied buffer.
 */
#ifndef SLUICE_QOS_QOS_H
#define SLUICE_QOS_QOS_H

#include <stddef.h>
#include <stdint.h>

#define QOS_NS_PER_SEC 1000000000ull
#define QOS_PAGE_BYTES 4096u

#define QOS_WEIGHT_MIN 1
#define QOS_WEIGHT_MAX 65535
#define QOS_WEIGHT_DEFAULT 256 /**< Xen's CSCHED_DEFAULT_WEIGHT */

#define QOS_PERIOD_DEFAULT_NS (30ull * 1000 * 1000) /**< Xen's default time slice */
#define QOS_PERIOD_MIN_NS (1ull * 1000 * 1000)
#define QOS_PERIOD_MAX_NS (1000ull * 1000 * 1000)

#define QOS_BURST_SECONDS_MAX 3600 /**< an hour; guards against typo'd lengths */
#define QOS_RATE_MAX (1ull << 40)  /**< largest cap/reservation/burst in IOPS or bytes/s */

/**
 * Sequential means the request starts within this distance of where the vbd's previous request
 * ended (blk-iocost's LCOEF_RANDIO_PAGES, 16 MiB).
 */
#define QOS_SEQ_WINDOW_BYTES (16ull << 20)

/*
 * ---- Clock ----
 */

/**
 * A monotonic clock in nanoseconds. now_ns must never go backwards and must be callable from
 * any thread that calls into the object holding the clock. The struct is copied by the objects
 * that take one; ctx must stay valid as long as they live.
 */
struct qos_clock {
	uint64_t (*now_ns)(void *ctx);
	void *ctx;
};

/** CLOCK_MONOTONIC. A static object, valid for the whole program. */
const struct qos_clock *qos_clock_monotonic(void);

/*
 * ---- Requests and the cost model ----
 */

enum qos_op {
	QOS_OP_READ = 0,
	QOS_OP_WRITE,
	QOS_OP_FLUSH,   /**< costs a random write's base, moves no data */
	QOS_OP_DISCARD, /**< costs a random write's base whatever its length */
	QOS_OP_COUNT,
};

/** One request as the scheduler sees it. Copied on every call; the caller keeps ownership. */
struct qos_io {
	enum qos_op op;
	uint64_t offset_bytes; /**< byte offset in the volume (only used to tell sequential) */
	uint64_t len_bytes;    /**< bytes moved (READ/WRITE); the range for DISCARD */
};

/**
 * Linear cost model, in device nanoseconds ("model ns"): a request of B bytes costs
 * base + B * page_ns / 4096, where base is the sequential or random base of its direction.
 * Build it from probe measurements with qos_cost_model_from_calib() or give it in the config.
 */
struct qos_cost_model {
	uint64_t rd_page_ns;      /**< reading one 4 KiB page */
	uint64_t rd_seq_base_ns;  /**< per sequential read, beyond its pages */
	uint64_t rd_rand_base_ns; /**< per random read, beyond its pages */
	uint64_t wr_page_ns;      /**< writing one 4 KiB page */
	uint64_t wr_seq_base_ns;
	uint64_t wr_rand_base_ns;
};

/**
 * A model for a flash-like device doing @iops 4 KiB random requests per second: a quarter of a
 * 4 KiB request's time is its page, the rest is the per-request base; sequential requests cost
 * the same as random ones. qos_params_default() and the simulated device's IOPS[:LAT_US] spec use
 * it. @iops in 1..1e9.
 */
void qos_cost_model_flash(struct qos_cost_model *m, uint64_t iops);

/**
 * Cost of @io in model ns. @seq: 1 if the request is sequential. Lengths above 1 TiB count as
 * 1 TiB (no request is that big; the cap keeps the arithmetic in 64 bits).
 */
uint64_t qos_cost_ns(const struct qos_cost_model *m, const struct qos_io *io, int seq);

/**
 * The calibration probes: six fixed jobs run one at a time on an otherwise idle device, each long
 * enough to reach a steady state (blkctl runs a second each after a short warm-up), with
 * QOS_CALIB_PROBE_QD requests in flight. Each result is the device's time per request at
 * saturation: elapsed wall ns / requests completed (1e9 / IOPS, kept in ns so slow devices lose
 * no precision):
 *   {rd,wr}_rand_ns: 4 KiB random requests;
 *   {rd,wr}_seq_ns:  4 KiB sequential requests;
 *   {rd,wr}_big_ns:  sequential requests of big_bytes (QOS_CALIB_BIG_BYTES).
 */
#define QOS_CALIB_PROBE_QD 32
#define QOS_CALIB_BIG_BYTES (1u << 20)

struct qos_calib {
	uint32_t big_bytes; /**< size of the big probe requests; > 4 KiB, multiple of 4 KiB */
	uint64_t rd_rand_ns;
	uint64_t rd_seq_ns;
	uint64_t rd_big_ns;
	uint64_t wr_rand_ns;
	uint64_t wr_seq_ns;
	uint64_t wr_big_ns;
};

/**
 * Turn probe results into coefficients. For each direction the model is solved exactly at the
 * probes: page = (t(big) - t(4K seq)) / (big/4K - 1); seq_base = t(4K seq) - page;
 * rand_base = t(4K rand) - page. Negative terms (measurement noise) become 0. Returns 0, or
 * -EINVAL (with a sentence in @why when non-NULL) if a time is 0 or above 1 s, or big_bytes is
 * not a multiple of 4 KiB above 4 KiB.
 */
int qos_cost_model_from_calib(const struct qos_calib *c, struct qos_cost_model *out, char *why,
			      size_t why_len);

/*
 * ---- Scheduler parameters ----
 */

struct qos_params {
	uint64_t period_ns;         /**< accounting period, QOS_PERIOD_MIN_NS..QOS_PERIOD_MAX_NS */
	struct qos_cost_model cost; /**< the device's model; every coefficient 0 = not usable */
	uint32_t vrate_min_pct;     /**< lowest vrate the estimate may reach, 1..100 */
	uint32_t vrate_max_pct;     /**< highest vrate, 100..10000 */
	/**
	 * Latency budget for the window: the mean completion latency beyond a request's own
	 * service time that the scheduler lets the device queue reach before it shrinks the window.
	 * 0 = automatic: the device's base latency (the mean of requests that found the device
	 * empty, over the last 4 periods that had some), plus the size-biased mean service time
	 * (what a request waits behind the one in service), plus qdelay_pct percent of base + mean
	 * service time (at least QOS_QDELAY_MIN_NS).
	 */
	uint64_t lat_target_ns;
	uint32_t qdelay_pct; /**< automatic budget's queueing allowance, 1..1000 */
	/** First window in model ns; 0 = 32 random 4 KiB reads. Adapted from then on. */
	uint64_t window_init_ns;
};

#define QOS_QDELAY_DEFAULT_PCT 25
#define QOS_QDELAY_MIN_NS (10ull * 1000)

/**
 * Fill @p with the defaults: 30 ms period, qos_cost_model_flash(50000), vrate 10%..1000%,
 * automatic latency target with 25% queueing allowance, automatic initial window.
 */
void qos_params_default(struct qos_params *p);

/*
 * ---- Per-vbd settings ----
 */

struct qos_vbd_settings {
	uint32_t weight;        /**< share of a contended device, 1..65535 (256 by default) */
	uint64_t cap_iops;      /**< hard ceiling in requests per second; 0 = none */
	uint64_t cap_bps;       /**< hard ceiling in bytes per second; 0 = none */
	uint64_t reserve_iops;  /**< guaranteed minimum requests per second; 0 = none */
	uint64_t burst_iops;    /**< rate allowed above cap_iops during a burst; 0 = none */
	uint64_t burst_bps;     /**< rate allowed above cap_bps during a burst; 0 = none */
	uint32_t burst_seconds; /**< how long a burst at burst_* may last; 1..3600 with a burst */
};

/** Defaults: weight 256, no cap, no reservation, no burst. */
void qos_vbd_settings_default(struct qos_vbd_settings *s);

/*
 * ---- Scheduler ----
 */

struct qos_sched;
struct qos_vbd;

/**
 * Create a scheduler for one device. @p is copied (NULL = qos_params_default()); @clock is
 * copied (NULL = qos_clock_monotonic()). Returns 0 and *out, -EINVAL (with a sentence in @why
 * when non-NULL) for parameters out of range or a cost model whose 4 KiB random read or write
 * costs 0, or -ENOMEM. Free with qos_sched_free().
 */
int qos_sched_new(const struct qos_params *p, const struct qos_clock *clock,
		  struct qos_sched **out, char *why, size_t why_len);

/** Free @s. Every vbd must have been removed first. NULL is a no-op. */
void qos_sched_free(struct qos_sched *s);

/**
 * Run the accounting (credits, window, vrate) for every period that ended by the clock's now.
 * admit/complete/cancel run it themselves when a period has ended, so calling this is only
 * needed to advance an idle scheduler (stats) or in tests.
 */
void qos_sched_tick(struct qos_sched *s);

/**
 * The device's capacity in 4 KiB random requests per second at the model's rate (the costlier
 * of read and write). Reservations of all vbds together may not exceed it.
 */
uint64_t qos_sched_capacity_iops(const struct qos_sched *s);

/**
 * Check @set for a vbd of @s without applying it. @v is the vbd being changed (its current
 * reservation does not count against the device) or NULL for a new one. Returns 0, or -EINVAL
 * with one sentence in @why (when non-NULL): weight outside 1..65535; a rate above
 * QOS_RATE_MAX; a reservation above cap_iops; reservations of all vbds above the device's
 * capacity; a burst without the matching cap or not above it; burst_seconds without a burst
 * or outside 1..3600.
 */
int qos_settings_check(struct qos_sched *s, const struct qos_vbd *v,
		       const struct qos_vbd_settings *set, char *why, size_t why_len);

/**
 * Wake callback: the vbd was granted room on the device (or should call qos_vbd_admit() again
 * for another reason). Called with the scheduler's lock held, from whichever thread completed a
 * request or ran the accounting: it must be quick and non-blocking (write an eventfd, set a
 * flag) and must not call into qos. It may be called after the vbd's thread stopped waiting;
 * a spurious qos_vbd_admit() is harmless.
 */
typedef void (*qos_wake_fn)(void *arg);

/**
 * Add a vbd to @s with settings @set (NULL = defaults). @wake is called with @wake_arg as
 * described for qos_wake_fn. It may be NULL (tools, tests): the vbd then polls, and a refusal
 * for a full device gives a retry time one 4 KiB service time away instead of a period.
 * Returns 0 and *out; -EINVAL with a sentence in @why as qos_settings_check(); -ENOMEM.
 */
int qos_vbd_add(struct qos_sched *s, const struct qos_vbd_settings *set, qos_wake_fn wake,
		void *wake_arg, struct qos_vbd **out, char *why, size_t why_len);

/**
 * Remove and free @v. The caller must have stopped every thread that calls into @v; requests
 * still in flight are forgotten (their device room is returned), so their qos_vbd_complete()
 * must not be called afterwards. NULL is a no-op.
 */
void qos_vbd_remove(struct qos_vbd *v);

/**
 * Change @v's settings online. Weight changes shift the split at once and the budget at the
 * next period; caps, bursts and reservations apply to the next request. Returns 0, or -EINVAL
 * with a sentence in @why as qos_settings_check() (nothing changes then).
 */
int qos_vbd_set(struct qos_vbd *v, const struct qos_vbd_settings *set, char *why,
		size_t why_len);

/**
 * What an admitted request carries until it completes: the caller stores it in its per-request
 * context (no allocation) and hands it back to qos_vbd_complete() or qos_vbd_cancel().
 */
struct qos_ticket {
	uint64_t cost_ns;     /**< device time charged, model ns */
	uint64_t dispatch_ns; /**< clock time of the admission */
	uint64_t len_bytes;   /**< bytes of the request (achieved bytes/s) */
	uint32_t flags;       /**< QOS_TICKET_* */
};

#define QOS_TICKET_BOOST 0x1u /**< dispatched by BOOST past a full window */
#define QOS_TICKET_RESV 0x2u  /**< consumed a reservation token */
#define QOS_TICKET_CAP 0x4u   /**< charged to the cap meters */
#define QOS_TICKET_LONE 0x8u  /**< dispatched to an empty device: its latency is unqueued */

/**
 * Ask to dispatch @io for @v now.
 * Returns:
 *   0        dispatch it; *ticket is filled and must go back to qos_vbd_complete() (or
 *            qos_vbd_cancel() if the request is not sent after all).
 *   -EAGAIN  not now: leave the request where it is (on the ring) and call again at
 *            *retry_at_ns (clock time, absolute) at the latest. A vbd held back by its cap is
 *            PARKED and the time is exact. A vbd waiting for room on a full device is also
 *            woken through its wake callback as soon as room is granted to it; its retry time
 *            is then a backstop one period away (without a callback: one 4 KiB service time).
 *            A granted room is held for the vbd for one period; if it does not call back in
 *            time, the room goes to others.
 *   -EINVAL  @io's op is unknown (nothing is charged).
 * Requests of one vbd should be admitted in ring order: after -EAGAIN, retry the same request.
 */
int qos_vbd_admit(struct qos_vbd *v, const struct qos_io *io, struct qos_ticket *ticket,
		  uint64_t *retry_at_ns);

/**
 * The request admitted with @ticket completed (successfully or not: the device time was spent).
 * Accounts its latency (clock now minus ticket->dispatch_ns) and device time, frees its room
 * on the device and grants the room to waiting vbds (calling their wake callbacks).
 */
void qos_vbd_complete(struct qos_vbd *v, const struct qos_ticket *ticket);

/**
 * As qos_vbd_complete(), for a caller that knows when the device completed the request
 * (@done_ns, clock time; 0 = now) and answers it later: the latency the scheduler steers by is
 * the device's, without the caller's own delay. Used with a simulated device, whose completion
 * time is known in advance.
 */
void qos_vbd_complete_at(struct qos_vbd *v, const struct qos_ticket *ticket, uint64_t done_ns);

/**
 * The request admitted with @ticket was never sent (for instance the target queue was full):
 * give back its device room, credit, reservation token and cap allowance.
 */
void qos_vbd_cancel(struct qos_vbd *v, const struct qos_ticket *ticket);

/*
 * ---- Statistics ----
 */

enum qos_state {
	QOS_STATE_IDLE = 0, /**< no demand in the last period */
	QOS_STATE_BOOST,    /**< a request dispatched by BOOST is in flight */
	QOS_STATE_UNDER,    /**< active with credit >= 0 */
	QOS_STATE_OVER,     /**< active and in debt */
	QOS_STATE_PARKED,   /**< held back by its cap until a known time */
};

/** "idle", "boost", "under", "over", "parked". */
const char *qos_state_name(enum qos_state st);

struct qos_vbd_stats {
	struct qos_vbd_settings set;
	enum qos_state state;
	uint32_t share_ppm;    /**< weight / weight of all active vbds, parts per million */
	int64_t credit_ns;     /**< credit (model ns); negative = debt */
	uint64_t iops;         /**< completions per second over about the last second */
	uint64_t bps;          /**< bytes per second over about the last second */
	uint64_t ops;          /**< requests completed since added */
	uint64_t bytes;        /**< bytes completed since added */
	uint64_t dev_ns;       /**< device time used since added, model ns */
	uint64_t throttled_ns; /**< time with a request held back (device full or cap) */
	uint64_t parked_ns;    /**< part of throttled_ns held back by a cap */
	uint64_t boosts;       /**< requests dispatched by BOOST */
	uint32_t inflight;     /**< requests admitted and not completed */
};

void qos_vbd_stats(struct qos_vbd *v, struct qos_vbd_stats *out);

struct qos_sched_stats {
	uint64_t period_ns;
	uint64_t periods;        /**< accounting periods run */
	uint32_t vrate_ppm;      /**< measured model-ns per wall-ns, parts per million */
	uint64_t window_ns;      /**< room on the device, model ns in flight */
	uint64_t inflight_ns;    /**< model ns in flight now (granted rooms included) */
	uint64_t lat_base_ns;    /**< unqueued latency beyond service time (lone requests) */
	uint64_t lat_target_ns;  /**< the budget the window is steered to */
	uint64_t lat_mean_ns;    /**< mean latency beyond service time, last period */
	uint64_t grant_delay_ns; /**< smoothed wait of granted room for its vbd (in the window) */
	uint64_t budget_ns;      /**< credit shared out per period (vrate x period) */
	uint64_t capacity_iops;  /**< as qos_sched_capacity_iops() */
	uint64_t reserved_iops;  /**< sum of all reservations */
	uint32_t weight_active;  /**< sum of weights of active vbds */
	uint32_t nvbd;
	uint32_t nactive;
	uint32_t nwaiting;       /**< vbds waiting for room */
};

void qos_sched_stats(struct qos_sched *s, struct qos_sched_stats *out);

#endif
