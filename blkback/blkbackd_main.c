/*
 * blkbackd_main.c - the blkbackd command: parse the command line, run the daemon in the
 * foreground until SIGTERM or SIGINT, exit 0 after an orderly shutdown.
 */
#define LOG_TAG "blkbackd"
#include "blkback/blkback.h"
#include "common/log.h"
#include "common/util.h"
#include "qos/simdev.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: blkbackd --hv-dir DIR --pool POOLDIR [options]\n"
		"Serve the pool's volumes to Xen guests through the blkif protocol.\n"
		"  --hv-dir DIR             the hypervisor sim's directory (hvsimd --dir)\n"
		"  --pool POOLDIR           the pool (volumes, control socket)\n"
		"  --hv sim|xen             hypervisor interface (default sim)\n"
		"  --engine io_uring|libaio asynchronous I/O engine (default io_uring)\n"
		"  --max-ring-page-order N  largest ring a frontend may use, 0..4 (default 4)\n"
		"  --max-queues N           rings per disk a frontend may use (default: CPUs)\n"
		"  --max-indirect-segments N  segments of an indirect request, 0 (off) or 12..256\n"
		"                           (default 256)\n"
		"  --no-persistent          do not offer persistent grants\n"
		"  --poll-us N              spin up to N microseconds for work before a ring\n"
		"                           thread sleeps (default 0: off)\n"
		"  --no-direct              do not open volumes with O_DIRECT\n"
		"  --no-qos                 no I/O scheduling (weights, caps, reservations off)\n"
		"  --sim-device IOPS[:LAT_US]  every volume shares one simulated device doing IOPS\n"
		"                           4 KiB requests/s with LAT_US latency (default 100);\n"
		"                           data still lands in the files\n"
		"  --log-level LEVEL        err, warn, info (default) or debug\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "hv-dir", required_argument, NULL, 'd' },
		{ "pool", required_argument, NULL, 'p' },
		{ "hv", required_argument, NULL, 'H' },
		{ "engine", required_argument, NULL, 'e' },
		{ "max-ring-page-order", required_argument, NULL, 'o' },
		{ "max-queues", required_argument, NULL, 'q' },
		{ "no-direct", no_argument, NULL, 'n' },
		{ "max-indirect-segments", required_argument, NULL, 'i' },
		{ "no-persistent", no_argument, NULL, 'P' },
		{ "poll-us", required_argument, NULL, 'u' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "no-qos", no_argument, NULL, 'Q' },
		{ "sim-device", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct blkback_opts o;
	struct sigaction sa;
	struct blkback *bb;
	uint64_t v;
	int c, rc;

	log_set_prog("blkbackd");
	blkback_opts_default(&o);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o.hv_dir = optarg;
			break;
		case 'p':
			o.pool = optarg;
			break;
		case 'H':
			if (hv_kind_parse(optarg, &o.hv_kind) < 0) {
				fprintf(stderr, "blkbackd: --hv must be sim or xen, not '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'e':
			if (target_engine_parse(optarg, &o.engine) < 0) {
				fprintf(stderr,
					"blkbackd: --engine must be io_uring or libaio, not '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'o':
			if (util_parse_u64(optarg, 0, 4, &v) < 0) {
				fprintf(stderr, "blkbackd: --max-ring-page-order must be 0..4\n");
				return 2;
			}
			o.max_ring_page_order = (unsigned)v;
			break;
		case 'q':
			if (util_parse_u64(optarg, 1, 32, &v) < 0) {
				fprintf(stderr, "blkbackd: --max-queues must be 1..32\n");
				return 2;
			}
			o.max_queues = (unsigned)v;
			break;
		case 'n':
			o.no_direct = 1;
			break;
		case 'i':
			if (util_parse_u64(optarg, 0, 256, &v) < 0 || (v > 0 && v < 12)) {
				fprintf(stderr,
					"blkbackd: --max-indirect-segments must be 0 or 12..256\n");
				return 2;
			}
			o.max_indirect_segs = (unsigned)v;
			break;
		case 'P':
			o.persistent = 0;
			break;
		case 'u':
			if (util_parse_u64(optarg, 0, 10000, &v) < 0) {
				fprintf(stderr, "blkbackd: --poll-us must be 0..10000\n");
				return 2;
			}
			o.poll_us = (unsigned)v;
			break;
		case 'Q':
			o.no_qos = 1;
			break;
		case 'S': {
			struct qos_simdev_params sp;
			char why[160];

			if (qos_simdev_parse(optarg, &sp, why, sizeof(why)) < 0) {
				fprintf(stderr, "blkbackd: --sim-device %s: %s\n", optarg, why);
				return 2;
			}
			o.sim_device = optarg;
			break;
		}
		case 'l':
			if (log_set_level(optarg) < 0) {
				fprintf(stderr, "blkbackd: unknown log level '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "blkbackd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!o.pool) {
		fprintf(stderr, "blkbackd: --pool is required\n");
		usage(stderr);
		return 2;
	}
	if (o.hv_kind == HV_KIND_SIM && !o.hv_dir) {
		fprintf(stderr, "blkbackd: --hv-dir is required with the sim\n");
		usage(stderr);
		return 2;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = blkback_new(&bb, &o);
	if (rc < 0)
		return 1;
	rc = blkback_run(bb, &stop_flag);
	blkback_free(bb);
	return rc < 0 ? 1 : 0;
}
