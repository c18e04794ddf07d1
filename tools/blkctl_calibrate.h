/*
 * blkctl_calibrate.h - `blkctl calibrate VOL`: measure the device under a volume and save the
 * pool's QoS cost model (blkback/qos_model.h). Private to tools/blkctl*.c.
 */
#ifndef SLUICE_TOOLS_BLKCTL_CALIBRATE_H
#define SLUICE_TOOLS_BLKCTL_CALIBRATE_H

/** Synopsis and help text for blkctl's command table. */
#define BLKCTL_CALIBRATE_ARGS "VOL [--seconds N] [--size SIZE] [--buffered] [--json]"
#define BLKCTL_CALIBRATE_HELP                                                                      \
	"Measure the device that holds VOL and save the pool's QoS cost model in\n"                \
	"POOLDIR/qos/device.json. Six probes (4K random, 4K sequential and 1M sequential, reads\n" \
	"and writes, 32 requests in flight) run with O_DIRECT against a scratch file of SIZE\n"    \
	"(default 1G) made next to the volume's data; the volume itself is never read or\n"        \
	"written, and the scratch file is gone when blkctl exits, however it exits.\n"             \
	"--seconds N per probe (1..60, default 1), after a short warm-up. --buffered measures\n"   \
	"through the page cache where the file system refuses O_DIRECT (tmpfs). --json prints\n"   \
	"one object: probes, model, capacity and the path written. A running blkbackd uses the\n"  \
	"new model from its next start.\n"

/**
 * Run `blkctl calibrate` on @pool: @argv[0] is "calibrate", then VOL and the options above.
 * Prints the model (or one JSON object with --json) on stdout and progress on stderr; every
 * failure is one "blkctl: " line on stderr. Returns the exit status: 0, 1 (failed), 2 (a
 * command line it does not understand).
 */
int blkctl_calibrate(const char *pool, int argc, char **argv);

#endif
