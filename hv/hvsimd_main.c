/*
 * hvsimd - the userspace hypervisor: xenstore, domains, grant tables and event channels for
 * one directory. Runs in the foreground, logs to stderr, exits cleanly on SIGTERM/SIGINT.
 */
#define LOG_TAG "hvsimd"
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "hv/hvsim.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: hvsimd --dir DIR [--log-level err|warn|info|debug]\n"
		   "Run the simulated hypervisor: DIR/xenstore.sock (xenstore, dom0), DIR/hv.sock\n"
		   "(hv control, dom0), and per guest DIR/domains/<domid>/{xenstore,hv}.sock.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct sigaction sa = {.sa_handler = on_signal};
	const char *dir = NULL;
	struct hvsim *s;
	int c, rc;

	log_set_prog("hvsimd");
	while ((c = getopt_long(argc, argv, "d:l:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'l':
			if (log_set_level(optarg)) {
				fprintf(stderr, "hvsimd: unknown log level '%s'\n", optarg);
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
	if (!dir || optind != argc) {
		usage(stderr);
		return 2;
	}

	/* Sockets are ours alone: the dom0 ones are privileged, a guest's act as that guest. */
	umask(077);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	rc = hvsim_new(&s, dir);
	if (rc == -EBUSY) {
		fprintf(stderr, "hvsimd: another hvsimd is running in %s\n", dir);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "hvsimd: cannot start in %s: %s\n", dir, strerror(-rc));
		return 1;
	}
	rc = hvsim_run(s, &stop);
	hvsim_free(s);
	if (rc) {
		fprintf(stderr, "hvsimd: event loop failed: %s\n", strerror(-rc));
		return 1;
	}
	return 0;
}
