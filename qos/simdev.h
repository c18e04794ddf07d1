/*
 * simdev.h - a simulated block device for testing QoS on any machine, in real or virtual time.
 *
 * The device is a single FIFO server with a linear cost model (the same form as the
 * scheduler's, struct qos_cost_model) followed by a fixed latency: a request submitted at t
 * starts service at max(t, end of the previous service), is served for its cost (scaled by the
 * speed), and completes lat_ns after its service ends. So the device completes at most
 * 1e9 / cost(4 KiB random) 4 KiB requests per second, a lone request takes cost + lat_ns, and
 * requests beyond the ones the latency hides queue up in front of the server, as on a real disk.
 * Sequential requests (start within 16 MiB of where the previous request to the device ended)
 * cost their direction's sequential base.
 *
 * blkbackd --sim-device IOPS[:LAT_US] gives every volume of a pool one shared simdev: it still
 * does the real I/O, and delivers each completion no earlier than qos_simdev_submit() said.
 * Offsets are device offsets: callers sharing a simdev between volumes should place volumes
 * apart (for instance volume index << 40) so that sequential streams of different volumes
 * interleave as they would on one disk.
 *
 * Thread-safe: one mutex per device; submit holds it for a few arithmetic operations.
 */
#ifndef SLUICE_QOS_SIMDEV_H
#define SLUICE_QOS_SIMDEV_H

#include <stddef.h>
#include <stdint.h>

#include "qos/qos.h"

#define QOS_SIMDEV_LAT_DEFAULT_NS (100ull * 1000) /**< when the spec gives no LAT_US */

struct qos_simdev_params {
	struct qos_cost_model cost; /**< true device time of each request at speed 100% */
	uint64_t lat_ns;            /**< fixed latency after service */
};

struct qos_simdev;

/**
 * A flash-like device: @iops 4 KiB random requests per second (qos_cost_model_flash(), which
 * defines what a "4 KiB-equivalent" of a bigger request is) and @lat_ns of fixed latency.
 */
void qos_simdev_params_flash(struct qos_simdev_params *p, uint64_t iops, uint64_t lat_ns);

/**
 * Parse "IOPS[:LAT_US]" (e.g. "20000" or "100000:80"): IOPS 1..1e9, LAT_US 0..1e7 (default
 * 100). Returns 0, or -EINVAL with a sentence in @why (when non-NULL).
 */
int qos_simdev_parse(const char *spec, struct qos_simdev_params *out, char *why, size_t why_len);

/**
 * Create a device. @p is copied; @clock is copied (NULL = qos_clock_monotonic()).
 * Returns 0, -EINVAL (a 4 KiB random request would cost 0 ns) or -ENOMEM.
 */
int qos_simdev_new(const struct qos_simdev_params *p, const struct qos_clock *clock,
		   struct qos_simdev **out);

void qos_simdev_free(struct qos_simdev *d); /**< NULL is a no-op */

/**
 * Submit @io at the clock's now. Returns the clock time at which it completes (absolute ns);
 * *service_ns (when non-NULL) gets the device time it occupies the server (its true cost).
 */
uint64_t qos_simdev_submit(struct qos_simdev *d, const struct qos_io *io, uint64_t *service_ns);

/**
 * Change the device's speed from now on: 100 = nominal, 50 = every request takes twice as long.
 * @pct 1..10000 (clamped).
 */
void qos_simdev_set_speed(struct qos_simdev *d, uint32_t pct);

struct qos_simdev_stats {
	uint64_t ops;     /**< requests submitted */
	uint64_t bytes;   /**< bytes of READ/WRITE requests submitted */
	uint64_t busy_ns; /**< server time booked */
};

void qos_simdev_stats(struct qos_simdev *d, struct qos_simdev_stats *out);

#endif
