/*
 * qos_sim.h - a virtual-time discrete-event simulation of vbds driving the scheduler against a
 * simulated device. The unit tests and `make bench-qos` both run their scenarios through it.
 *
 * Each vbd runs a closed-loop workload: qd request slots; a slot issues a request, waits for it
 * to complete, pauses think_ns and issues the next. Requests of a vbd queue in arrival order (its
 * "ring") and are admitted by qos_vbd_admit() from the head, exactly as a blkbackd ring thread
 * does: admitted ones go to the simdev, a refusal leaves the head in place and retries at the
 * returned time or when the wake callback fires. With no_qos the scheduler is bypassed.
 *
 * Time is virtual: the clock the scheduler and the device see is the simulation's, so results
 * are exact and repeatable (same config and seed -> same numbers) and a second of simulated
 * time takes a fraction of a second to run. One simulation is used by one thread.
 */
#ifndef SLUICE_QOS_QOS_SIM_H
#define SLUICE_QOS_QOS_SIM_H

#include <stdint.h>

#include "qos/qos.h"
#include "qos/simdev.h"

#define QOS_SIM_MAX_VBD 16

struct qos_sim_workload {
	enum qos_op op;      /**< QOS_OP_READ or QOS_OP_WRITE */
	uint32_t bs_bytes;   /**< request size, > 0 */
	int seq;             /**< 1: sequential through the volume; 0: uniform random, bs-aligned */
	uint32_t qd;         /**< requests kept outstanding, 1..4096 */
	uint64_t think_ns;   /**< pause between a completion and that slot's next request */
	int think_random;    /**< 1: each pause uniform in 0..2 x think_ns (random arrivals) */
	uint64_t start_ns;   /**< virtual time of the first requests */
	uint64_t stop_ns;    /**< no new request from this time on; 0 = never */
	uint64_t vol_bytes;  /**< volume size the offsets fall in; 0 = 1 GiB */
};

struct qos_sim_vbd_cfg {
	struct qos_vbd_settings set; /**< weight 0 here means qos_vbd_settings_default() */
	struct qos_sim_workload wl;
};

struct qos_sim_cfg {
	struct qos_simdev_params dev;
	struct qos_params sched;   /**< period_ns 0 here means qos_params_default() */
	int no_qos;                /**< bypass the scheduler (the baseline) */
	uint64_t measure_from_ns;  /**< results count completions from this time on */
	uint64_t series_ns;        /**< width of the per-vbd completion time series; 0 = none */
	uint64_t seed;             /**< random offsets */
	unsigned nvbd;             /**< 1..QOS_SIM_MAX_VBD */
	struct qos_sim_vbd_cfg vbd[QOS_SIM_MAX_VBD];
};

struct qos_sim;

/**
 * Build a simulation at virtual time 0: device, scheduler (unless no_qos), vbds. @cfg is
 * copied. Returns 0, -EINVAL (bad workload or scheduler parameters or vbd settings; a sentence
 * in @why when non-NULL) or -ENOMEM.
 */
int qos_sim_new(const struct qos_sim_cfg *cfg, struct qos_sim **out, char *why, size_t why_len);

void qos_sim_free(struct qos_sim *sim); /**< NULL is a no-op */

typedef void (*qos_sim_fn)(struct qos_sim *sim, void *arg);

/**
 * Call @fn(sim, @arg) at virtual time @t_ns (for example to change a weight, stop a workload
 * or slow the device). Returns 0 or -ENOMEM.
 */
int qos_sim_at(struct qos_sim *sim, uint64_t t_ns, qos_sim_fn fn, void *arg);

/** Run every event before virtual time @until_ns; the clock then reads @until_ns. 0 or -ENOMEM. */
int qos_sim_run(struct qos_sim *sim, uint64_t until_ns);

uint64_t qos_sim_now(const struct qos_sim *sim);

/** The parts, valid until qos_sim_free(); the scheduler and vbd are NULL with no_qos. */
struct qos_sched *qos_sim_sched(struct qos_sim *sim);
struct qos_vbd *qos_sim_vbd(struct qos_sim *sim, unsigned i);
struct qos_simdev *qos_sim_dev(struct qos_sim *sim);

/** Replace vbd @i's workload from now on (slots beyond the new qd finish and stop). */
void qos_sim_set_workload(struct qos_sim *sim, unsigned i, const struct qos_sim_workload *wl);

/** Start counting results afresh from now (as measure_from_ns). */
void qos_sim_measure_restart(struct qos_sim *sim);

struct qos_sim_result {
	uint64_t ops;         /**< requests completed in the measurement span */
	uint64_t bytes;
	uint64_t dev_ns;      /**< true device time of those requests (the simdev's) */
	uint64_t span_ns;     /**< measurement span: from its start to now */
	double iops;          /**< ops per second of span */
	double bps;           /**< bytes per second of span */
	uint64_t lat_mean_ns; /**< request latency: from issue (slot ready) to completion */
	uint64_t lat_p50_ns;  /**< percentiles within 1.6% (log-linear histogram) */
	uint64_t lat_p99_ns;
	uint64_t lat_max_ns;
	uint64_t max_stall_ns; /**< longest time with a request outstanding and none completing */
};

void qos_sim_result(struct qos_sim *sim, unsigned i, struct qos_sim_result *out);

/**
 * Completions of vbd @i per series_ns bucket since time 0: *n buckets. The array is the
 * simulation's, valid until the next qos_sim_run() or qos_sim_free().
 */
const uint64_t *qos_sim_series(struct qos_sim *sim, unsigned i, unsigned *n);

/**
 * Weighted Jain fairness index of achieved throughputs @t against weights @w over @n vbds:
 * x_i = t_i / w_i, J = (sum x)^2 / (n * sum x^2). 1 is a perfect weighted split, 1/n the worst.
 */
double qos_jain_weighted(const double *t, const double *w, unsigned n);

#endif
