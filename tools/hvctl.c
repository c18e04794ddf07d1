/*
 * hvctl - the sim's toolstack (what xl is to Xen): create, list and destroy domains of the
 * hvsimd running in --dir. Every failure is one line on stderr and a non-zero exit.
 */
#define LOG_TAG "hvctl"
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "hv/hvsim_msg.h"
#include "hv/hvsim_proto.h"

static const char *dir;

static void usage(FILE *f)
{
	fprintf(f, "usage: hvctl --dir DIR domain create NAME [--mem SIZE]   print the new domid\n"
		   "       hvctl --dir DIR domain list [--json]\n"
		   "       hvctl --dir DIR domain destroy NAME|ID\n"
		   "SIZE is like 512M or 2G (default 256M, 16M..16G).\n");
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
	va_list ap;

	fputs("hvctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int connect_hv(struct hvsim_chan *c)
{
	char path[512];
	int rc;

	snprintf(path, sizeof(path), "%s/hv.sock", dir);
	c->notice = NULL;
	c->arg = NULL;
	rc = hvsim_chan_connect(c, path);
	if (rc == -ENOENT || rc == -ECONNREFUSED)
		die("hvsimd is not running in %s (%s: %s)", dir, path, strerror(-rc));
	else if (rc)
		die("cannot connect to %s: %s", path, strerror(-rc));
	return rc;
}

static int call_failed(const char *what, int rc)
{
	if (rc == -EPIPE)
		return die("%s: hvsimd closed the connection", what);
	if (rc == -EPROTO)
		return die("%s: unexpected reply from hvsimd", what);
	return die("%s: %s", what, strerror(-rc));
}

/* Fetch every domain. Returns 0 with *out malloc'd (*n entries) or 1 after printing why. */
static int list_all(struct hvsim_chan *c, struct hvsim_dom_info **out, uint32_t *n)
{
	union {
		struct hvsim_dom_list_rep r;
		char buf[HVSIM_MSG_MAX];
	} u;
	struct hvsim_domid_msg req = {.domid = 0};
	struct hvsim_dom_info *all = NULL;
	uint32_t total = 0, got;
	int rc;

	for (;;) {
		struct hvsim_dom_info *tmp;

		rc = hvsim_chan_call(c, HVSIM_DOMAIN_LIST, &req, sizeof(req), NULL, 0, &u,
				     sizeof(u), &got, NULL, 0);
		if (rc)
			goto err;
		if (got < sizeof(u.r) || u.r.count > HVSIM_LIST_MAX ||
		    got != sizeof(u.r) + u.r.count * sizeof(struct hvsim_dom_info)) {
			rc = -EPROTO;
			goto err;
		}
		tmp = realloc(all, (total + u.r.count + 1) * sizeof(*all));
		if (!tmp) {
			rc = -ENOMEM;
			goto err;
		}
		all = tmp;
		memcpy(all + total, u.r.dom, u.r.count * sizeof(*all));
		total += u.r.count;
		if (!u.r.more || !u.r.count)
			break;
		req.domid = u.r.dom[u.r.count - 1].domid + 1;
	}
	for (uint32_t i = 0; i < total; i++)
		all[i].name[HVSIM_NAME_MAX] = '\0';
	*out = all;
	*n = total;
	return 0;

err:
	free(all);
	return call_failed("domain list", rc);
}

static int cmd_create(struct hvsim_chan *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"mem", required_argument, NULL, 'm'},
	    {NULL, 0, NULL, 0},
	};
	struct hvsim_dom_create req = {.mem_bytes = HVSIM_MEM_DEFAULT};
	struct hvsim_domid_msg rep;
	const char *name;
	int opt, rc;

	optind = 0; /* 0: glibc re-initialises getopt for the subcommand */
	while ((opt = getopt_long(argc, argv, "m:", opts, NULL)) != -1) {
		if (opt != 'm') {
			usage(stderr);
			return 2;
		}
		if (util_parse_size(optarg, &req.mem_bytes))
			return die("bad size '%s' (use e.g. 512M or 2G)", optarg);
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	name = argv[optind];
	if (strlen(name) > HVSIM_NAME_MAX)
		return die("domain name '%s' is longer than %u characters", name, HVSIM_NAME_MAX);
	if (req.mem_bytes < HVSIM_MEM_MIN || req.mem_bytes > HVSIM_MEM_MAX || req.mem_bytes % 4096)
		return die("memory must be 16M..16G and a multiple of 4K");
	snprintf(req.name, sizeof(req.name), "%s", name);
	rc = connect_hv(c);
	if (rc)
		return 1;
	rc = hvsim_chan_call(c, HVSIM_DOMAIN_CREATE, &req, sizeof(req), NULL, 0, &rep, sizeof(rep),
			     NULL, NULL, 0);
	if (rc == -EEXIST)
		return die("a domain named '%s' exists", name);
	if (rc == -EINVAL)
		return die("invalid domain name '%s' (1-%u of A-Z a-z 0-9 _ . -, not all digits)",
			   name, HVSIM_NAME_MAX);
	if (rc == -ENOSPC)
		return die("too many domains (at most %u)", HVSIM_MAX_DOMAINS);
	if (rc)
		return call_failed("domain create", rc);
	printf("%u\n", rep.domid);
	return 0;
}

static const char *guest_state(const struct hvsim_dom_info *d)
{
	if (d->domid == 0)
		return "-";
	if (d->flags & HVSIM_DOM_GUEST_ATTACHED)
		return "attached";
	if (d->flags & HVSIM_DOM_MEM_REGISTERED)
		return "detached";
	return "none";
}

static int cmd_list(struct hvsim_chan *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {NULL, 0, NULL, 0},
	};
	struct hvsim_dom_info *doms;
	int opt, json = 0;
	uint32_t n;

	optind = 0; /* 0: glibc re-initialises getopt for the subcommand */
	while ((opt = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (opt != 'j') {
			usage(stderr);
			return 2;
		}
		json = 1;
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (connect_hv(c))
		return 1;
	if (list_all(c, &doms, &n))
		return 1;

	if (json) {
		json_object *arr = json_object_new_array();

		for (uint32_t i = 0; i < n; i++) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "domid", json_object_new_int(doms[i].domid));
			json_object_object_add(o, "name", json_object_new_string(doms[i].name));
			json_object_object_add(o, "mem_bytes",
					       json_object_new_int64((int64_t)doms[i].mem_bytes));
			json_object_object_add(o, "guest",
					       json_object_new_string(guest_state(&doms[i])));
			json_object_object_add(o, "ports", json_object_new_int(doms[i].nr_ports));
			json_object_array_add(arr, o);
		}
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(arr);
	} else {
		printf("%-6s %-24s %8s %-9s %s\n", "ID", "NAME", "MEMORY", "GUEST", "PORTS");
		for (uint32_t i = 0; i < n; i++) {
			char mem[32];

			if (doms[i].domid)
				util_fmt_size(doms[i].mem_bytes, mem, sizeof(mem));
			else
				snprintf(mem, sizeof(mem), "-");
			printf("%-6u %-24s %8s %-9s %u\n", doms[i].domid, doms[i].name, mem,
			       guest_state(&doms[i]), doms[i].nr_ports);
		}
	}
	free(doms);
	return 0;
}

static int cmd_destroy(struct hvsim_chan *c, int argc, char **argv)
{
	struct hvsim_domid_msg req = {0};
	struct hvsim_dom_info *doms;
	const char *arg;
	uint64_t id;
	uint32_t n;
	int rc;

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	arg = argv[1];
	if (connect_hv(c))
		return 1;
	if (util_parse_u64(arg, 0, UINT32_MAX, &id) == 0) {
		req.domid = (uint32_t)id;
	} else {
		if (list_all(c, &doms, &n))
			return 1;
		rc = -ESRCH;
		for (uint32_t i = 0; i < n; i++) {
			if (!strcmp(doms[i].name, arg)) {
				req.domid = doms[i].domid;
				rc = 0;
			}
		}
		free(doms);
		if (rc)
			return die("no domain named '%s'", arg);
	}
	if (req.domid == 0)
		return die("domain 0 (Domain-0) cannot be destroyed");
	rc = hvsim_chan_call(c, HVSIM_DOMAIN_DESTROY, &req, sizeof(req), NULL, 0, NULL, 0, NULL,
			     NULL, 0);
	if (rc == -ESRCH)
		return die("no domain %s", arg);
	if (rc)
		return call_failed("domain destroy", rc);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct hvsim_chan c = {.fd = -1};
	const char *cmd;
	int opt, rc;

	/* "+": stop at the first word, so the subcommand's options are its own. */
	while ((opt = getopt_long(argc, argv, "+d:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!dir) {
		fprintf(stderr, "hvctl: --dir DIR is required (the directory hvsimd runs in)\n");
		return 2;
	}
	if (argc - optind < 2 || strcmp(argv[optind], "domain")) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind + 1];
	argc -= optind + 1;
	argv += optind + 1;
	if (!strcmp(cmd, "create"))
		rc = cmd_create(&c, argc, argv);
	else if (!strcmp(cmd, "list"))
		rc = cmd_list(&c, argc, argv);
	else if (!strcmp(cmd, "destroy"))
		rc = cmd_destroy(&c, argc, argv);
	else
		rc = die("unknown command 'domain %s' (create, list, destroy)", cmd);
	hvsim_chan_close(&c);
	return rc;
}
