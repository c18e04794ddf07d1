/*
 * blkctl - manage a pool's volumes and what blkbackd serves from them:
 *   blkctl [--pool POOLDIR] COMMAND ...   (or BLKCTL_POOL=POOLDIR)
 * Volumes are files in the pool (blkback/pool.h) and are created, listed and deleted here;
 * attach, detach, online resize and stats go to the running blkbackd over its control socket
 * (blkback/ctl.h). When no blkbackd runs, resize and delete work offline under the daemon's
 * lock, so none can start halfway through.
 *
 * Every failure is one line on stderr starting "blkctl: ": exit status 2 for a command line
 * blkctl does not understand, 1 for everything else.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkback/pool.h"
#include "common/log.h"
#include "common/util.h"
#include "tools/blkctl.h"
#include "tools/blkctl_calibrate.h"

#define EXIT_USAGE 2

static const char *pool;

struct cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *args; /**< synopsis after the command name */
	const char *help; /**< what `blkctl COMMAND --help` adds */
};

/* A command line we do not understand: one line naming the fix, exit 2. */
static int usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("blkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, " (see blkctl %s --help)\n", cmd);
	else
		fputs(" (see blkctl --help)\n", stderr);
	return EXIT_USAGE;
}

static void cmd_usage(const struct cmd *c, FILE *f)
{
	fprintf(f, "usage: blkctl [--pool POOLDIR] %s %s\n%s", c->name, c->args, c->help);
}

/** The command being run: its name and help go into parse_opts' messages. */
static const struct cmd *cur_cmd;

/*
 * Parse a subcommand's options (at most 14, ending with a NULL entry; --help is added) with
 * getopt_long, which lets options and arguments mix. Plain flags set an int through their
 * option's flag pointer; @set (NULL when there is none) is called for every other option found
 * and returns non-zero to reject it. Returns 0 with optind at the first positional argument, -1
 * after printing the command's help, or 2 after a one-line usage error.
 */
static int parse_opts(int argc, char **argv, const struct option *longopts,
		      int (*set)(int opt, const char *arg))
{
	struct option all[16];
	size_t n = 0;
	int opt;

	for (; longopts && longopts[n].name; n++)
		all[n] = longopts[n];
	all[n++] = (struct option){"help", no_argument, NULL, 'h'};
	all[n] = (struct option){NULL, 0, NULL, 0};

	optind = 0; /* 0: glibc re-initialises getopt for the subcommand */
	opterr = 0; /* our own one-line messages */
	while ((opt = getopt_long(argc, argv, "h", all, NULL)) != -1) {
		if (opt == 'h') {
			cmd_usage(cur_cmd, stdout);
			return -1;
		}
		if (opt == '?') {
			const char *bad = argv[optind - 1];

			if (optopt && optopt != '?') {
				for (size_t i = 0; i < n; i++)
					if (all[i].val == optopt && all[i].has_arg)
						return usage_err(cur_cmd->name, "%s needs a value",
								 bad);
			}
			return usage_err(cur_cmd->name, "unknown option '%s' for %s", bad,
					 cur_cmd->name);
		}
		/* 0: a plain flag, which getopt_long set through the option's flag pointer. */
		if (opt != 0 && (!set || set(opt, optarg)))
			return EXIT_USAGE;
	}
	return 0;
}

/* Exit status after parse_opts asked to stop: help printed (-1) is success. */
static int opts_status(int rc)
{
	return rc < 0 ? 0 : rc;
}

/*
 * ---- Checks shared by the commands ----
 */

static int check_vol_name(const char *name)
{
	if (pool_vol_name_ok(name))
		return 0;
	return die("'%s' is not a valid volume name (1-%d of A-Z a-z 0-9 _ . -, not starting "
		   "with '.')",
		   name, POOL_VOL_NAME_MAX);
}

static int parse_vol_size(const char *s, uint64_t *out)
{
	int rc = util_parse_size(s, out);

	if (rc == -ERANGE)
		return die("size '%s' is too large", s);
	if (rc < 0)
		return die("bad size '%s' (use bytes or a number with K, M, G or T, e.g. 20G)", s);
	if (*out == 0 || *out % 512)
		return die("size must be a positive multiple of 512 bytes, not %s", s);
	if (*out > (uint64_t)INT64_MAX)
		return die("size '%s' is too large", s);
	return 0;
}

static int check_vdev(const char *vdev, uint32_t *devid)
{
	if (blkctl_vdev_devid(vdev, devid) == 0)
		return 0;
	return die("'%s' is not a Xen virtual disk name (xvda .. xvdz, xvdaa, ...)", vdev);
}

/* The pool directory must exist for every command but create. */
static int check_pool(void)
{
	struct stat st;

	if (stat(pool, &st) < 0) {
		if (errno == ENOENT)
			return die("no pool at %s (blkctl create makes one)", pool);
		return die("cannot use pool %s: %s", pool, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return die("pool %s is not a directory", pool);
	return 0;
}

/* One line for a pool operation that failed with @rc on volume @name. */
static int pool_failed(const char *what, const char *name, int rc)
{
	switch (rc) {
	case -ENOENT:
		return die("no volume named '%s' in pool %s", name, pool);
	case -EEXIST:
		return die("a volume named '%s' exists in pool %s", name, pool);
	case -EACCES:
	case -EPERM:
	case -EROFS:
		return die("no permission to %s volume '%s' in pool %s: %s", what, name, pool,
			   strerror(-rc));
	case -EINVAL:
		return die("volume '%s' in pool %s has unreadable metadata (%s/vols/%s.json)", name,
			   pool, pool, name);
	case -EFBIG:
		return die("cannot %s volume '%s': larger than the file system of pool %s allows",
			   what, name, pool);
	default:
		return die("cannot %s volume '%s' in pool %s: %s", what, name, pool, strerror(-rc));
	}
}

static int get_vol(const char *name, struct pool_vol *v)
{
	int rc = pool_vol_get(pool, name, v);

	return rc < 0 ? pool_failed("read", name, rc) : 0;
}

/*
 * ---- The daemon ----
 */

static int daemon_failed(int rc)
{
	if (rc == -EACCES || rc == -EPERM)
		return die("no permission to use blkbackd's control socket in pool %s", pool);
	if (rc == -EAGAIN)
		return die("blkbackd on pool %s is starting or stopping; try again", pool);
	return die("cannot reach blkbackd on pool %s: %s", pool, strerror(-rc));
}

static int not_running(void)
{
	return die("blkbackd is not running on pool %s (start: blkbackd --hv-dir DIR --pool %s)",
		   pool, pool);
}

/* Connect when blkbackd runs; offline, hold its lock. Returns 0 or 1 after saying why. */
static int open_daemon(struct blkctl_daemon *d)
{
	int rc = blkctl_daemon_open(pool, d);

	return rc < 0 ? daemon_failed(rc) : 0;
}

/* Connect to blkbackd, which must be running. Returns 0 or 1 after saying why. */
static int need_daemon(struct blkctl_daemon *d)
{
	if (open_daemon(d))
		return 1;
	if (d->fd < 0) {
		blkctl_daemon_close(d);
		return not_running();
	}
	return 0;
}

/*
 * Send @req (consumed) and return the answer in *ans. On a refusal or a failure, says why
 * (the daemon's own sentence) and returns 1.
 */
static int call(struct blkctl_daemon *d, json_object *req, json_object **ans)
{
	json_object *o, *f;
	int rc;

	rc = blkctl_call(d, req, &o);
	json_object_put(req);
	if (rc == -EPIPE)
		return die("blkbackd on pool %s closed the connection", pool);
	if (rc == -ETIMEDOUT)
		return die("blkbackd on pool %s did not answer within %d s", pool,
			   BLKCTL_REPLY_TIMEOUT_MS / 1000);
	if (rc == -EPROTO)
		return die("blkbackd on pool %s sent an answer blkctl does not understand", pool);
	if (rc < 0)
		return die("talking to blkbackd on pool %s: %s", pool, strerror(-rc));
	json_object_object_get_ex(o, "ok", &f);
	if (!json_object_get_boolean(f)) {
		const char *why = "refused without a reason";

		if (json_object_object_get_ex(o, "error", &f) &&
		    json_object_is_type(f, json_type_string))
			why = json_object_get_string(f);
		die("%s", why);
		json_object_put(o);
		return 1;
	}
	*ans = o;
	return 0;
}

static json_object *request(const char *cmd)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "cmd", json_object_new_string(cmd));
	return o;
}

static void req_str(json_object *o, const char *key, const char *val)
{
	json_object_object_add(o, key, json_object_new_string(val));
}

static int64_t ans_int(json_object *o, const char *key)
{
	json_object *f;

	if (!json_object_object_get_ex(o, key, &f))
		return 0;
	return json_object_get_int64(f);
}

static const char *ans_str(json_object *o, const char *key)
{
	json_object *f;

	if (!json_object_object_get_ex(o, key, &f) || !json_object_is_type(f, json_type_string))
		return "";
	return json_object_get_string(f);
}

static int ans_bool(json_object *o, const char *key)
{
	json_object *f;

	return json_object_object_get_ex(o, key, &f) && json_object_get_boolean(f);
}

static double ans_double(json_object *o, const char *key)
{
	json_object *f;

	if (!json_object_object_get_ex(o, key, &f))
		return 0;
	return json_object_get_double(f);
}

/* The "vbds" array of an answer (an empty one when missing). */
static json_object *ans_vbds(json_object *ans)
{
	json_object *f;

	if (json_object_object_get_ex(ans, "vbds", &f) && json_object_is_type(f, json_type_array))
		return f;
	return NULL;
}

static size_t vbds_len(json_object *arr)
{
	return arr ? json_object_array_length(arr) : 0;
}

/*
 * ---- create ----
 */

static const char *create_size, *create_store;

static int create_opt(int opt, const char *arg)
{
	if (opt == 'S')
		create_store = arg;
	else
		create_size = arg;
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"store", required_argument, NULL, 'S'},
	    {NULL, 0, NULL, 0},
	};
	char sz[32];
	const char *name;
	uint64_t size;
	int rc;

	create_size = create_store = NULL;
	rc = parse_opts(argc, argv, opts, create_opt);
	if (rc)
		return opts_status(rc);
	if (optind != argc - 1)
		return usage_err("create", "create needs one volume name");
	if (!create_size)
		return usage_err("create", "create needs --size SIZE");
	name = argv[optind];
	if (check_vol_name(name) || parse_vol_size(create_size, &size))
		return 1;
	if (create_store && strcmp(create_store, POOL_STORE_DEDUP) == 0) {
		if (blkctl_dedup_create(pool, name, size))
			return 1;
		printf("created dedup volume %s (%s)\n", name, util_fmt_size(size, sz, sizeof(sz)));
		return 0;
	}
	if (create_store && strcmp(create_store, "raw") != 0)
		return usage_err("create", "--store is raw or dedup");
	rc = pool_vol_create(pool, name, size);
	if (rc == -ENOENT || rc == -ENOTDIR)
		return die("cannot create pool %s: %s", pool, strerror(-rc));
	if (rc < 0)
		return pool_failed("create", name, rc);
	printf("created volume %s (%s)\n", name, util_fmt_size(size, sz, sizeof(sz)));
	return 0;
}

/*
 * ---- delete ----
 */

/* Domain name of @domid from a stats answer's vbds, or NULL. */
static const char *domain_name(json_object *stats_vbds, int64_t domid)
{
	for (size_t i = 0; i < vbds_len(stats_vbds); i++) {
		json_object *e = json_object_array_get_idx(stats_vbds, i);

		if (ans_int(e, "domid") == domid && ans_str(e, "domain")[0])
			return ans_str(e, "domain");
	}
	return NULL;
}

/*
 * "DOMAIN:VDEV,..." of the "attached" answer @vbds into @buf: who uses a volume. Domains are
 * named from @stats_vbds where it knows them, else by id.
 */
static void fmt_users(json_object *vbds, json_object *stats_vbds, char *buf, size_t len)
{
	size_t off = 0;

	snprintf(buf, len, "-");
	for (size_t i = 0; i < vbds_len(vbds) && off < len; i++) {
		json_object *e = json_object_array_get_idx(vbds, i);
		const char *dom = domain_name(stats_vbds, ans_int(e, "domid"));
		int n;

		if (dom)
			n = snprintf(buf + off, len - off, "%s%s:%s", i ? "," : "", dom,
				     ans_str(e, "vdev"));
		else
			n = snprintf(buf + off, len - off, "%s%" PRId64 ":%s", i ? "," : "",
				     ans_int(e, "domid"), ans_str(e, "vdev"));
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

static int cmd_delete(int argc, char **argv)
{
	struct blkctl_daemon d;
	struct pool_vol v;
	const char *name;
	json_object *req, *ans;
	int rc;

	rc = parse_opts(argc, argv, NULL, NULL);
	if (rc)
		return opts_status(rc);
	if (optind != argc - 1)
		return usage_err("delete", "delete needs one volume name");
	name = argv[optind];
	if (check_vol_name(name) || check_pool() || get_vol(name, &v))
		return 1;
	if (strcmp(v.store, POOL_STORE_DEDUP) == 0) {
		if (blkctl_dedup_delete(pool, name))
			return 1;
		printf("deleted volume %s\n", name);
		return 0;
	}
	if (open_daemon(&d))
		return 1;
	if (d.fd >= 0) {
		json_object *stats = NULL;
		char users[256];

		req = request("attached");
		req_str(req, "vol", name);
		if (call(&d, req, &ans)) {
			blkctl_daemon_close(&d);
			return 1;
		}
		if (vbds_len(ans_vbds(ans)) > 0) {
			/* Only to name the domains in the refusal: without it, ids do. */
			req = request("stats");
			if (blkctl_call(&d, req, &stats) < 0)
				stats = NULL;
			json_object_put(req);
			fmt_users(ans_vbds(ans), stats ? ans_vbds(stats) : NULL, users,
				  sizeof(users));
			json_object_put(stats);
			json_object_put(ans);
			blkctl_daemon_close(&d);
			return die("volume '%s' is attached (%s); detach it first", name, users);
		}
		json_object_put(ans);
	}
	/* Offline we hold the daemon's lock: nothing can attach the volume meanwhile. */
	rc = pool_vol_delete(pool, name);
	blkctl_daemon_close(&d);
	if (rc < 0)
		return pool_failed("delete", name, rc);
	printf("deleted volume %s\n", name);
	return 0;
}

/*
 * ---- list ----
 */

static int json_flag;

/*
 * Who uses each volume, from the daemon: an array (one per volume, in @vols order) of arrays of
 * {"domid","domain","vdev"}. Returns 0 or 1 after saying why.
 */
static int list_users(struct blkctl_daemon *d, const struct pool_vol *vols, unsigned n,
		      json_object **out)
{
	json_object *stats, *all, *req, *ans;

	if (call(d, request("stats"), &stats))
		return 1;
	all = json_object_new_array();
	for (unsigned i = 0; i < n; i++) {
		json_object *users = json_object_new_array();
		json_object *vbds;

		req = request("attached");
		req_str(req, "vol", vols[i].name);
		if (call(d, req, &ans)) {
			json_object_put(users);
			json_object_put(all);
			json_object_put(stats);
			return 1;
		}
		vbds = ans_vbds(ans);
		for (size_t j = 0; j < vbds_len(vbds); j++) {
			json_object *e = json_object_array_get_idx(vbds, j);
			json_object *u = json_object_new_object();
			int64_t domid = ans_int(e, "domid");
			const char *dom = domain_name(ans_vbds(stats), domid);

			json_object_object_add(u, "domid", json_object_new_int64(domid));
			if (dom)
				json_object_object_add(u, "domain", json_object_new_string(dom));
			json_object_object_add(u, "vdev",
					       json_object_new_string(ans_str(e, "vdev")));
			json_object_array_add(users, u);
		}
		json_object_put(ans);
		json_object_array_add(all, users);
	}
	json_object_put(stats);
	*out = all;
	return 0;
}

static void print_list_json(const struct pool_vol *vols, unsigned n, json_object *users)
{
	json_object *arr = json_object_new_array();

	for (unsigned i = 0; i < n; i++) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(vols[i].name));
		json_object_object_add(o, "size",
				       json_object_new_int64((int64_t)vols[i].size_bytes));
		json_object_object_add(o, "store", json_object_new_string(vols[i].store));
		json_object_object_add(o, "created", json_object_new_int64(vols[i].created));
		if (users)
			json_object_object_add(
			    o, "attached", json_object_get(json_object_array_get_idx(users, i)));
		json_object_array_add(arr, o);
	}
	blkctl_dedup_annotate(pool, arr);
	puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
}

static void print_list_table(const struct pool_vol *vols, unsigned n, json_object *users)
{
	if (users)
		printf("%-24s %10s %-6s %s\n", "NAME", "SIZE", "STORE", "ATTACHED");
	else
		printf("%-24s %10s %s\n", "NAME", "SIZE", "STORE");
	for (unsigned i = 0; i < n; i++) {
		char sz[32], att[512] = "-";

		util_fmt_size(vols[i].size_bytes, sz, sizeof(sz));
		if (users) {
			json_object *u = json_object_array_get_idx(users, i);
			size_t off = 0;

			for (size_t j = 0; j < vbds_len(u) && off < sizeof(att); j++) {
				json_object *e = json_object_array_get_idx(u, j);
				const char *dom = ans_str(e, "domain");
				int w;

				if (dom[0])
					w = snprintf(att + off, sizeof(att) - off, "%s%s:%s",
						     j ? "," : "", dom, ans_str(e, "vdev"));
				else
					w = snprintf(att + off, sizeof(att) - off,
						     "%s%" PRId64 ":%s", j ? "," : "",
						     ans_int(e, "domid"), ans_str(e, "vdev"));
				if (w < 0)
					break;
				off += (size_t)w;
			}
			printf("%-24s %10s %-6s %s\n", vols[i].name, sz, vols[i].store, att);
		} else {
			printf("%-24s %10s %s\n", vols[i].name, sz, vols[i].store);
		}
	}
}

static int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, &json_flag, 1},
	    {NULL, 0, NULL, 0},
	};
	struct pool_vol *vols = NULL;
	json_object *users = NULL;
	struct blkctl_daemon d;
	unsigned n = 0;
	int rc;

	json_flag = 0;
	rc = parse_opts(argc, argv, opts, NULL);
	if (rc)
		return opts_status(rc);
	if (optind != argc)
		return usage_err("list", "list takes no arguments besides --json");
	if (check_pool())
		return 1;
	rc = pool_vol_list(pool, &vols, &n);
	if (rc == -ENOENT) {
		n = 0; /* a pool whose daemon never had a volume: empty, not an error */
	} else if (rc < 0) {
		if (rc == -EACCES || rc == -EPERM)
			return die("no permission to read pool %s", pool);
		return die("cannot list pool %s: %s", pool, strerror(-rc));
	}
	if (open_daemon(&d)) {
		free(vols);
		return 1;
	}
	/* Attachments are known to the daemon only; offline, the column is left out. */
	if (d.fd >= 0 && list_users(&d, vols, n, &users)) {
		blkctl_daemon_close(&d);
		free(vols);
		return 1;
	}
	blkctl_daemon_close(&d);
	if (json_flag)
		print_list_json(vols, n, users);
	else
		print_list_table(vols, n, users);
	json_object_put(users);
	free(vols);
	return 0;
}

/*
 * ---- attach / detach ----
 */

static int ro_flag;

/*
 * QoS settings given as options (attach, set): the control protocol's field names. The daemon
 * checks them against the device (qos_settings_check); here only the numbers' syntax.
 */
#define QOS_OPTS                                                                                   \
	{"weight", required_argument, NULL, 'w'}, {"cap-iops", required_argument, NULL, 'c'},     \
	    {"cap-bps", required_argument, NULL, 'C'},                                             \
	    {"reserve-iops", required_argument, NULL, 'R'},                                        \
	    {"burst-iops", required_argument, NULL, 'b'},                                          \
	    {"burst-bps", required_argument, NULL, 'B'},                                           \
	    {"burst-seconds", required_argument, NULL, 's'}

static json_object *qos_fields; /* the options given, as request fields */

static int qos_opt(int opt, const char *arg)
{
	static const struct {
		int opt;
		const char *field, *flag;
		int bytes;
	} map[] = {
	    {'w', "weight", "--weight", 0},
	    {'c', "cap_iops", "--cap-iops", 0},
	    {'C', "cap_bps", "--cap-bps", 1},
	    {'R', "reserve_iops", "--reserve-iops", 0},
	    {'b', "burst_iops", "--burst-iops", 0},
	    {'B', "burst_bps", "--burst-bps", 1},
	    {'s', "burst_seconds", "--burst-seconds", 0},
	};
	uint64_t v;

	for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
		if (map[i].opt != opt)
			continue;
		if (map[i].bytes ? util_parse_size(arg, &v) < 0
				 : util_parse_u64(arg, 0, INT64_MAX, &v) < 0)
			return usage_err(cur_cmd->name, "%s needs a whole number%s, not '%s'",
					 map[i].flag,
					 map[i].bytes ? " of bytes (K, M, G allowed)" : "", arg);
		if (v > INT64_MAX)
			return usage_err(cur_cmd->name, "%s %s is too large", map[i].flag, arg);
		json_object_object_add(qos_fields, map[i].field, json_object_new_int64((int64_t)v));
		return 0;
	}
	return 1;
}

static void qos_fields_reset(void)
{
	json_object_put(qos_fields);
	qos_fields = json_object_new_object();
}

/* Copy the QoS options given into request @req. */
static void qos_fields_add(json_object *req)
{
	json_object_object_foreach(qos_fields, key, val)
		json_object_object_add(req, key, json_object_get(val));
}


static int cmd_attach(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"ro", no_argument, &ro_flag, 1},
	    QOS_OPTS,
	    {NULL, 0, NULL, 0},
	};
	const char *name, *dom, *vdev;
	struct blkctl_daemon d;
	struct pool_vol v;
	json_object *req, *ans;
	uint32_t devid;
	int rc;

	ro_flag = 0;
	qos_fields_reset();
	rc = parse_opts(argc, argv, opts, qos_opt);
	if (rc)
		return opts_status(rc);
	if (optind != argc - 3)
		return usage_err("attach", "attach needs VOL DOMAIN VDEV");
	name = argv[optind];
	dom = argv[optind + 1];
	vdev = argv[optind + 2];
	if (check_vol_name(name) || check_vdev(vdev, &devid) || check_pool() || get_vol(name, &v))
		return 1;
	if (need_daemon(&d))
		return 1;
	req = request("attach");
	req_str(req, "vol", name);
	req_str(req, "domain", dom);
	req_str(req, "vdev", vdev);
	json_object_object_add(req, "ro", json_object_new_boolean(ro_flag));
	qos_fields_add(req);
	rc = call(&d, req, &ans);
	blkctl_daemon_close(&d);
	if (rc)
		return 1;
	printf("attached %s to domain %s (domid %" PRId64 ") as %s (devid %" PRId64 ")%s\n", name,
	       dom, ans_int(ans, "domid"), vdev, ans_int(ans, "devid"),
	       ro_flag ? ", read-only" : "");
	json_object_put(ans);
	return 0;
}

static int cmd_detach(int argc, char **argv)
{
	const char *dom, *vdev;
	struct blkctl_daemon d;
	json_object *req, *ans;
	uint32_t devid;
	int rc;

	rc = parse_opts(argc, argv, NULL, NULL);
	if (rc)
		return opts_status(rc);
	if (optind != argc - 2)
		return usage_err("detach", "detach needs DOMAIN VDEV");
	dom = argv[optind];
	vdev = argv[optind + 1];
	if (check_vdev(vdev, &devid) || check_pool() || need_daemon(&d))
		return 1;
	req = request("detach");
	req_str(req, "domain", dom);
	req_str(req, "vdev", vdev);
	rc = call(&d, req, &ans);
	blkctl_daemon_close(&d);
	if (rc)
		return 1;
	json_object_put(ans);
	printf("detached %s from domain %s\n", vdev, dom);
	return 0;
}

/*
 * ---- resize ----
 */

static int shrink_flag;

/* Resize with no daemon running (we hold its lock): the data file, then the metadata. */
static int resize_offline(const char *name, uint64_t size)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, rc;

	rc = pool_vol_path(pool, name, path, sizeof(path));
	if (rc < 0)
		return pool_failed("resize", name, rc);
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ELOOP)
		return die("volume '%s' is a symbolic link; resize it with blkbackd running", name);
	if (fd < 0)
		return pool_failed("resize", name, -errno);
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return pool_failed("resize", name, rc);
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return die("volume '%s' is not a regular file; resize it with blkbackd running",
			   name);
	}
	/* Data file first: metadata bigger than the file would promise sectors that are not there.
	 */
	if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0) {
		rc = errno == EFBIG || errno == EINVAL ? -EFBIG : -errno;
		close(fd);
		return pool_failed("resize", name, rc);
	}
	close(fd);
	rc = pool_vol_set_size(pool, name, size);
	if (rc < 0)
		return pool_failed("resize", name, rc);
	return 0;
}

static int cmd_resize(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"shrink", no_argument, &shrink_flag, 1},
	    {NULL, 0, NULL, 0},
	};
	char old_s[32], new_s[32];
	struct blkctl_daemon d;
	struct pool_vol v;
	const char *name;
	json_object *req, *ans;
	uint64_t size, old;
	int rc;

	shrink_flag = 0;
	rc = parse_opts(argc, argv, opts, NULL);
	if (rc)
		return opts_status(rc);
	if (optind != argc - 2)
		return usage_err("resize", "resize needs VOL SIZE");
	name = argv[optind];
	if (check_vol_name(name) || parse_vol_size(argv[optind + 1], &size) || check_pool() ||
	    get_vol(name, &v))
		return 1;
	util_fmt_size(v.size_bytes, old_s, sizeof(old_s));
	util_fmt_size(size, new_s, sizeof(new_s));
	if (size < v.size_bytes && !shrink_flag)
		return die(
		    "%s is smaller than volume '%s' (%s): refusing to shrink without --shrink "
		    "(data past the new end is lost)",
		    argv[optind + 1], name, old_s);
	if (strcmp(v.store, POOL_STORE_DEDUP) == 0)
		return blkctl_dedup_resize(pool, name, size, shrink_flag);
	if (open_daemon(&d))
		return 1;
	if (d.fd >= 0) {
		req = request("resize");
		req_str(req, "vol", name);
		json_object_object_add(req, "size", json_object_new_int64((int64_t)size));
		json_object_object_add(req, "shrink", json_object_new_boolean(shrink_flag));
		rc = call(&d, req, &ans);
		blkctl_daemon_close(&d);
		if (rc)
			return 1;
		old = (uint64_t)ans_int(ans, "old_size");
		json_object_put(ans);
		util_fmt_size(old, old_s, sizeof(old_s));
		printf("resized volume %s from %s to %s (online)\n", name, old_s, new_s);
		return 0;
	}
	rc = resize_offline(name, size);
	blkctl_daemon_close(&d);
	if (rc)
		return rc;
	printf("resized volume %s from %s to %s (offline)\n", name, old_s, new_s);
	return 0;
}

/*
 * ---- stats ----
 */

static const char *const lat_keys[] = {"rd_lat_p50_us", "rd_lat_p99_us", "wr_lat_p50_us",
				       "wr_lat_p99_us"};

/* A latency in microseconds, short: "87us", "1.2ms", "3.40s". */
static char *fmt_lat(double us, char *buf, size_t len)
{
	if (us < 1000.0)
		snprintf(buf, len, "%.0fus", us);
	else if (us < 1000000.0)
		snprintf(buf, len, "%.1fms", us / 1000.0);
	else
		snprintf(buf, len, "%.2fs", us / 1000000.0);
	return buf;
}

static void print_stats_table(json_object *vbds)
{
	static const char *const counters[] = {"rd_req",  "wr_req",  "f_req",  "ds_req",  "oo_req",
					       "rd_sect", "wr_sect", "errors", "inflight"};

	printf("%-16s %-6s %-16s %-12s", "DOMAIN", "VDEV", "VOL", "STATE");
	for (size_t i = 0; i < ARRAY_SIZE(counters); i++)
		printf(" %10s", counters[i]);
	printf(" %8s %8s %8s %8s\n", "rd_p50", "rd_p99", "wr_p50", "wr_p99");
	for (size_t i = 0; i < vbds_len(vbds); i++) {
		json_object *e = json_object_array_get_idx(vbds, i);
		char dom[40], vol[80];

		if (ans_str(e, "domain")[0])
			snprintf(dom, sizeof(dom), "%s", ans_str(e, "domain"));
		else
			snprintf(dom, sizeof(dom), "%" PRId64, ans_int(e, "domid"));
		snprintf(vol, sizeof(vol), "%s%s", ans_str(e, "vol"),
			 ans_bool(e, "ro") ? " (ro)" : "");
		printf("%-16s %-6s %-16s %-12s", dom, ans_str(e, "vdev"), vol, ans_str(e, "state"));
		for (size_t c = 0; c < ARRAY_SIZE(counters); c++)
			printf(" %10" PRId64, ans_int(e, counters[c]));
		for (size_t l = 0; l < ARRAY_SIZE(lat_keys); l++) {
			/* No request of that kind yet: no latency, rather than a made-up 0. */
			int none = ans_int(e, l < 2 ? "rd_req" : "wr_req") == 0;
			char buf[32];

			printf(" %8s",
			       none ? "-" : fmt_lat(ans_double(e, lat_keys[l]), buf, sizeof(buf)));
		}
		putchar('\n');
	}
}

static int cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, &json_flag, 1},
	    {NULL, 0, NULL, 0},
	};
	struct blkctl_daemon d;
	json_object *req, *ans, *vbds;
	uint32_t devid;
	int rc;

	json_flag = 0;
	rc = parse_opts(argc, argv, opts, NULL);
	if (rc)
		return opts_status(rc);
	if (optind != argc && optind != argc - 2)
		return usage_err("stats", "stats takes no disk or both DOMAIN and VDEV");
	if (optind == argc - 2 && check_vdev(argv[optind + 1], &devid))
		return 1;
	if (check_pool() || need_daemon(&d))
		return 1;
	req = request("stats");
	if (optind == argc - 2) {
		req_str(req, "domain", argv[optind]);
		req_str(req, "vdev", argv[optind + 1]);
	}
	rc = call(&d, req, &ans);
	blkctl_daemon_close(&d);
	if (rc)
		return 1;
	vbds = ans_vbds(ans);
	if (json_flag) {
		/*
		 * Latencies are measured in ns and given in us: three decimals say all there is,
		 * where json-c's round trip of a double would print seventeen digits.
		 */
		json_c_set_serialization_double_format("%.3f", JSON_C_OPTION_GLOBAL);
		for (size_t i = 0; i < vbds_len(vbds); i++) {
			json_object *e = json_object_array_get_idx(vbds, i);

			for (size_t l = 0; l < ARRAY_SIZE(lat_keys); l++) {
				json_object *f;

				if (json_object_object_get_ex(e, lat_keys[l], &f) &&
				    json_object_is_type(f, json_type_double))
					json_object_object_add(
					    e, lat_keys[l],
					    json_object_new_double(json_object_get_double(f)));
			}
		}
		json_object *empty = vbds ? NULL : json_object_new_array();

		puts(json_object_to_json_string_ext(
		    vbds ? vbds : empty, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					     JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(empty);
	} else {
		print_stats_table(vbds);
	}
	json_object_put(ans);
	return 0;
}

/*
 * ---- QoS: set, qos ----
 */

/* "none" for an unset limit, else the number with @unit. */
static const char *fmt_limit(int64_t v, const char *unit, char *buf, size_t len)
{
	if (v <= 0)
		return "none";
	snprintf(buf, len, "%" PRId64 "%s", v, unit);
	return buf;
}

/* "LABEL 2000 IOPS and 1048576 B/s", "LABEL 2000 IOPS", or "no LABEL" when both are 0. */
static const char *fmt_pair(const char *label, int64_t iops, int64_t bps, char *buf, size_t len)
{
	if (iops > 0 && bps > 0)
		snprintf(buf, len, "%s %" PRId64 " IOPS and %" PRId64 " B/s", label, iops, bps);
	else if (iops > 0)
		snprintf(buf, len, "%s %" PRId64 " IOPS", label, iops);
	else if (bps > 0)
		snprintf(buf, len, "%s %" PRId64 " B/s", label, bps);
	else
		snprintf(buf, len, "no %s", label);
	return buf;
}

static void print_settings(const char *who, json_object *s)
{
	char cap[96], resv[64], burst[128];

	fmt_pair("cap", ans_int(s, "cap_iops"), ans_int(s, "cap_bps"), cap, sizeof(cap));
	fmt_pair("reservation", ans_int(s, "reserve_iops"), 0, resv, sizeof(resv));
	fmt_pair("burst", ans_int(s, "burst_iops"), ans_int(s, "burst_bps"), burst, sizeof(burst));
	if (ans_int(s, "burst_iops") > 0 || ans_int(s, "burst_bps") > 0)
		snprintf(burst + strlen(burst), sizeof(burst) - strlen(burst), " for %" PRId64 " s",
			 ans_int(s, "burst_seconds"));
	printf("%s: weight %" PRId64 ", %s, %s, %s\n", who, ans_int(s, "weight"), cap, resv, burst);
}

static int cmd_set(int argc, char **argv)
{
	static const struct option opts[] = {
	    QOS_OPTS,
	    {NULL, 0, NULL, 0},
	};
	struct blkctl_daemon d;
	json_object *req, *ans, *set;
	uint32_t devid;
	char who[160];
	int rc;

	qos_fields_reset();
	rc = parse_opts(argc, argv, opts, qos_opt);
	if (rc)
		return opts_status(rc);
	if (optind != argc - 2)
		return usage_err("set", "set needs DOMAIN VDEV and at least one setting");
	if (json_object_object_length(qos_fields) == 0)
		return usage_err("set", "set needs at least one of --weight, --cap-iops, "
					"--cap-bps, --reserve-iops, --burst-iops, --burst-bps, "
					"--burst-seconds");
	if (check_vdev(argv[optind + 1], &devid) || check_pool() || need_daemon(&d))
		return 1;
	req = request("set");
	req_str(req, "domain", argv[optind]);
	req_str(req, "vdev", argv[optind + 1]);
	qos_fields_add(req);
	rc = call(&d, req, &ans);
	blkctl_daemon_close(&d);
	if (rc)
		return 1;
	snprintf(who, sizeof(who), "%s %s", argv[optind], argv[optind + 1]);
	if (json_object_object_get_ex(ans, "settings", &set))
		print_settings(who, set);
	json_object_put(ans);
	return 0;
}

/* Bytes per second, short: "512B/s", "4.0MB/s". */
static char *fmt_bps(int64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"B/s", "KB/s", "MB/s", "GB/s"};
	double x = (double)v;
	size_t u = 0;

	while (x >= 1000.0 && u + 1 < ARRAY_SIZE(units)) {
		x /= 1000.0;
		u++;
	}
	snprintf(buf, len, u ? "%.1f%s" : "%.0f%s", x, units[u]);
	return buf;
}

static void print_qos_table(json_object *ans)
{
	json_object *dev = NULL, *vbds = ans_vbds(ans);

	json_object_object_get_ex(ans, "device", &dev);
	if (!ans_bool(ans, "enabled")) {
		printf("QoS is off (blkbackd --no-qos)\n");
	} else if (dev) {
		printf("device: %" PRId64 " IOPS capacity (4 KiB random), vrate %.1f%%, reserved "
		       "%" PRId64 " IOPS, period %.0f ms; model: %s\n",
		       ans_int(dev, "capacity_iops"), (double)ans_int(dev, "vrate_ppm") / 10000.0,
		       ans_int(dev, "reserved_iops"), (double)ans_int(dev, "period_ns") / 1e6,
		       ans_str(dev, "model"));
	}
	printf("%-16s %-6s %6s %9s %10s %9s %7s %9s %8s %10s %10s %-12s\n", "DOMAIN", "VDEV",
	       "WEIGHT", "CAP_IOPS", "CAP_BPS", "RESV_IOPS", "SHARE", "CREDIT", "IOPS", "BPS",
	       "THROTTLED", "STATE");
	for (size_t i = 0; i < vbds_len(vbds); i++) {
		json_object *e = json_object_array_get_idx(vbds, i);
		char dom[40], a[32], b[32], c[32], bps[32], share[16], credit[24], thr[24];

		if (ans_str(e, "domain")[0])
			snprintf(dom, sizeof(dom), "%s", ans_str(e, "domain"));
		else
			snprintf(dom, sizeof(dom), "%" PRId64, ans_int(e, "domid"));
		snprintf(share, sizeof(share), "%.1f%%", ans_double(e, "share_pct"));
		snprintf(credit, sizeof(credit), "%.2fms", (double)ans_int(e, "credit_ns") / 1e6);
		snprintf(thr, sizeof(thr), "%.2fs", (double)ans_int(e, "throttled_ns") / 1e9);
		printf("%-16s %-6s %6" PRId64 " %9s %10s %9s %7s %9s %8" PRId64
		       " %10s %10s %-12s\n",
		       dom, ans_str(e, "vdev"), ans_int(e, "weight"),
		       fmt_limit(ans_int(e, "cap_iops"), "", a, sizeof(a)),
		       ans_int(e, "cap_bps") > 0 ? fmt_bps(ans_int(e, "cap_bps"), b, sizeof(b))
						 : "none",
		       fmt_limit(ans_int(e, "reserve_iops"), "", c, sizeof(c)), share, credit,
		       ans_int(e, "iops"), fmt_bps(ans_int(e, "bps"), bps, sizeof(bps)), thr,
		       ans_str(e, "state"));
	}
}

static int cmd_qos(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, &json_flag, 1},
	    {NULL, 0, NULL, 0},
	};
	struct blkctl_daemon d;
	json_object *ans;
	int rc;

	json_flag = 0;
	rc = parse_opts(argc, argv, opts, NULL);
	if (rc)
		return opts_status(rc);
	if (optind != argc)
		return usage_err("qos", "qos takes no arguments besides --json");
	if (check_pool() || need_daemon(&d))
		return 1;
	rc = call(&d, request("qos"), &ans);
	blkctl_daemon_close(&d);
	if (rc)
		return 1;
	if (json_flag) {
		json_c_set_serialization_double_format("%.2f", JSON_C_OPTION_GLOBAL);
		json_object_object_del(ans, "ok");
		puts(json_object_to_json_string_ext(ans, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_SPACED |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		print_qos_table(ans);
	}
	json_object_put(ans);
	return 0;
}

static int cmd_calibrate(int argc, char **argv)
{
	return check_pool() ?: blkctl_calibrate(pool, argc, argv);
}

/* Dedup commands (blkctl_dedup.c) in the command table's shape. */
#define DEDUP_CMD(x)                                                                              \
	static int cmd_##x(int argc, char **argv)                                                  \
	{                                                                                          \
		return check_pool() ?: blkctl_dedup_##x(pool, argc, argv);                         \
	}
DEDUP_CMD(snapshot)
DEDUP_CMD(clone)
DEDUP_CMD(gc)
DEDUP_CMD(fsck)
DEDUP_CMD(import)
DEDUP_CMD(export)
DEDUP_CMD(pool)

static const struct cmd cmds[] = {
    {"create", cmd_create, "VOL --size SIZE [--store raw|dedup]",
     "Create a volume: a sparse file of SIZE in POOLDIR/vols (the pool is made if missing).\n"
     "--store dedup puts its blocks in the pool's dedup store (SIZE a multiple of 4096).\n"},
    {"snapshot", cmd_snapshot, "VOL SNAP",
     "Make read-only snapshot SNAP of dedup volume VOL (constant time).\n"},
    {"clone", cmd_clone, "SRC NEWVOL",
     "Make writable dedup volume NEWVOL sharing every block of SRC (a snapshot or volume).\n"},
    {"gc", cmd_gc, "",
     "Collect the dedup store's garbage now: drop pending references, compact containers.\n"
     "Offline it shows progress (a bar on a terminal).\n"},
    {"fsck", cmd_fsck, "[--repair] [--verify]",
     "Check the dedup store's maps, index and refcounts; --repair fixes leaks, --verify also\n"
     "reads every block and checks its hash. Exit status 1 when problems remain.\n"},
    {"import", cmd_import, "VOL FILE", "Write raw image FILE into dedup volume VOL.\n"},
    {"export", cmd_export, "VOL FILE", "Write dedup volume VOL to FILE as a raw image.\n"},
    {"pool", cmd_pool, "[--json]",
     "The dedup store's numbers: logical_bytes, stored_bytes, zero_blocks, unique_blocks,\n"
     "dedup_ratio and more.\n"},
    {"delete", cmd_delete, "VOL",
     "Delete a volume and its data. Refused while blkbackd has it attached to a domain.\n"},
    {"list", cmd_list, "[--json]",
     "List the volumes: name, size, store and, when blkbackd runs, the domains and virtual\n"
     "disks they are attached as.\n"},
    {"attach", cmd_attach, "VOL DOMAIN VDEV [--ro] [QoS options]",
     "Attach a volume to a domain (name or id) as virtual disk VDEV (xvda, xvdb, ...): blkbackd\n"
     "writes the frontend and backend nodes as a Xen toolstack does and serves the disk once\n"
     "the guest connects. --ro attaches it read-only. QoS options as for set (the rest take\n"
     "their defaults: weight 256, no cap, no reservation). Needs blkbackd running.\n"},
    {"set", cmd_set, "DOMAIN VDEV [--weight N] [--cap-iops N] [--cap-bps N] [--reserve-iops N]"
     " [--burst-iops N] [--burst-bps N] [--burst-seconds S]",
     "Change a virtual disk's I/O QoS online (effective within one 30 ms period; kept across\n"
     "blkbackd restarts). --weight 1..65535 is its share of a contended device (default 256);\n"
     "--cap-iops/--cap-bps a hard ceiling (0: none); --reserve-iops a guaranteed minimum;\n"
     "--burst-iops/--burst-bps a rate above the cap allowed for --burst-seconds after a quiet\n"
     "spell. Settings not given keep their values. Invalid ones are refused.\n"},
    {"calibrate", cmd_calibrate, BLKCTL_CALIBRATE_ARGS, BLKCTL_CALIBRATE_HELP},
    {"qos", cmd_qos, "[--json]",
     "Per virtual disk: weight, cap, reservation, current share, credit, achieved IOPS and\n"
     "bytes/s, time throttled, scheduler state; and the device's capacity and vrate.\n"},
    {"detach", cmd_detach, "DOMAIN VDEV",
     "Detach a virtual disk: the guest is asked to close it, I/O in flight completes, then\n"
     "the nodes are removed. Needs blkbackd running.\n"},
    {"resize", cmd_resize, "VOL SIZE [--shrink]",
     "Set a volume's size. With blkbackd running it is online: every guest using the volume\n"
     "sees the new capacity without reattaching. Without it the file and metadata change\n"
     "offline. Shrinking loses the data past the new end and needs --shrink.\n"},
    {"stats", cmd_stats, "[DOMAIN VDEV] [--json]",
     "Per virtual disk: the counters of Linux blkback (rd_req wr_req f_req ds_req oo_req\n"
     "rd_sect wr_sect), errors, requests in flight, read and write latency p50/p99.\n"
     "--json prints the daemon's array of vbds. Needs blkbackd running.\n"},
    {NULL, NULL, NULL, NULL},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: blkctl [--pool POOLDIR] COMMAND [ARGS]\n"
		   "Manage the volumes of a pool and the disks blkbackd serves from them.\n"
		   "The pool may also be given as BLKCTL_POOL=POOLDIR.\n\n"
		   "commands:\n");
	for (const struct cmd *c = cmds; c->name; c++)
		fprintf(f, "  %s %s\n", c->name, c->args);
	fprintf(f, "\nSIZE is bytes or a number with K, M, G or T (binary), a multiple of 512.\n"
		   "VDEV is a Xen virtual disk: xvda .. xvdz, xvdaa, ...\n"
		   "`blkctl COMMAND --help` explains one command.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"pool", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *name;
	int opt;

	log_set_prog("blkctl"); /* the pool library's warnings say whose they are */
	opterr = 0;
	/* "+": stop at the command word, so the command's options are its own. */
	while ((opt = getopt_long(argc, argv, "+p:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			pool = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			if (optopt == 'p')
				return usage_err(NULL, "--pool needs a directory");
			return usage_err(NULL, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind == argc)
		return usage_err(NULL, "no command given");
	name = argv[optind];
	for (const struct cmd *c = cmds; c->name; c++) {
		if (strcmp(c->name, name) != 0)
			continue;
		cur_cmd = c;
		/* Help needs no pool: answer it before asking for one. */
		for (int i = optind + 1; i < argc && strcmp(argv[i], "--"); i++) {
			if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
				cmd_usage(c, stdout);
				return 0;
			}
		}
		if (!pool || !pool[0])
			pool = getenv("BLKCTL_POOL");
		if (!pool || !pool[0])
			return usage_err(NULL,
					 "no pool given: use --pool POOLDIR or set BLKCTL_POOL");
		return c->run(argc - optind, argv + optind);
	}
	return usage_err(NULL, "unknown command '%s'", name);
}
