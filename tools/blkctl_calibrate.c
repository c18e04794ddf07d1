/*
 * blkctl_calibrate.c - `blkctl calibrate VOL`: the six probes of qos_cost_model_from_calib()
 * against the device that holds a volume, and the pool's cost model they give
 * (POOL/qos/device.json, blkback/qos_model.h).
 *
 * Guest data is never touched: the probes run against a scratch file in the directory that holds
 * the volume's data (POOL/vols for a raw volume, POOL/dedup for a dedup one), so they hit the
 * same file system and device. The scratch file is made with O_TMPFILE (or unlinked the moment
 * it is made where the file system lacks O_TMPFILE), so it has no name while the probes run and
 * the kernel frees it when blkctl exits, by SIGKILL included. It is filled with non-zero data
 * first: reads of holes or unwritten extents never reach the device.
 *
 * Each probe keeps QOS_CALIB_PROBE_QD requests in flight with io_uring for a warm-up and then
 * --seconds; its result is the mean time between completions in the measured part (elapsed wall
 * ns / requests completed), which at saturation is the device's time per request.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <liburing.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "blkback/pool.h"
#include "blkback/qos_model.h"
#include "common/util.h"
#include "qos/qos.h"
#include "tools/blkctl.h"
#include "tools/blkctl_calibrate.h"

#define EXIT_USAGE 2
#define CAL_QD	   QOS_CALIB_PROBE_QD
#define CAL_BIG	   QOS_CALIB_BIG_BYTES
/* Each request of the big probe has its own MiB: 32 of them in flight never overlap. */
#define CAL_SIZE_MIN	 ((uint64_t)CAL_QD * CAL_BIG)
#define CAL_SIZE_DEFAULT (1ull << 30)
#define CAL_SECONDS_MAX	 60
/* Long enough for the device's queue and any write cache to reach their steady state. */
#define CAL_WARMUP_NS (200ull * 1000 * 1000)
#define CAL_BAR_NS    (100ull * 1000 * 1000)

struct probe_def {
	const char *label;
	int write;
	int seq;
	uint32_t bytes;
	size_t off; /**< result's place in struct qos_calib */
};

/* Reads first: the write probes leave the device busy writing back its cache. */
static const struct probe_def probe_defs[6] = {
    {"read 4K random", 0, 0, QOS_PAGE_BYTES, offsetof(struct qos_calib, rd_rand_ns)},
    {"read 4K sequential", 0, 1, QOS_PAGE_BYTES, offsetof(struct qos_calib, rd_seq_ns)},
    {"read 1M sequential", 0, 1, CAL_BIG, offsetof(struct qos_calib, rd_big_ns)},
    {"write 4K random", 1, 0, QOS_PAGE_BYTES, offsetof(struct qos_calib, wr_rand_ns)},
    {"write 4K sequential", 1, 1, QOS_PAGE_BYTES, offsetof(struct qos_calib, wr_seq_ns)},
    {"write 1M sequential", 1, 1, CAL_BIG, offsetof(struct qos_calib, wr_big_ns)},
};

/* JSON names of the probe results, in probe_defs' order. */
static const char *const probe_keys[6] = {
    "rd_rand_ns", "rd_seq_ns", "rd_big_ns", "wr_rand_ns", "wr_seq_ns", "wr_big_ns",
};

struct cal {
	const char *vol;
	const char *dir; /**< where the scratch file lives */
	int json;
	int buffered;
	unsigned seconds;
	uint64_t size; /**< scratch area, a multiple of CAL_BIG */
	int tty;       /**< stderr is a terminal: draw a bar */

	int fd;
	struct io_uring ring;
	int ring_ok;
	void *buf[CAL_QD]; /**< one CAL_BIG buffer per slot, 4 KiB aligned for O_DIRECT */
	uint64_t rng;
	uint64_t seq_next; /**< next offset of a sequential stream */
};

static volatile sig_atomic_t cal_stop;

static void on_signal(int sig)
{
	cal_stop = sig;
}

static int cal_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cal_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("blkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see blkctl calibrate --help)\n", stderr);
	return EXIT_USAGE;
}

/* xorshift64: random offsets and fill data; nothing here needs more than that. */
static uint64_t cal_rand(struct cal *c)
{
	uint64_t x = c->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	c->rng = x;
	return x;
}

/*
 * ---- Command line ----
 */

static int parse_args(struct cal *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"seconds", required_argument, NULL, 's'},
	    {"size", required_argument, NULL, 'S'},
	    {"buffered", no_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char sz[16];
	uint64_t x;
	int opt, rc;

	optind = 0; /* 0: glibc re-initialises getopt for the subcommand */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			c->json = 1;
			break;
		case 'b':
			c->buffered = 1;
			break;
		case 's':
			if (util_parse_u64(optarg, 1, CAL_SECONDS_MAX, &x))
				return cal_usage("--seconds must be a whole number from 1 to %d, "
						 "not '%s'",
						 CAL_SECONDS_MAX, optarg);
			c->seconds = (unsigned)x;
			break;
		case 'S':
			rc = util_parse_size(optarg, &x);
			if (rc == -ERANGE || (!rc && x > (uint64_t)INT64_MAX))
				return cal_usage("--size '%s' is too large", optarg);
			if (rc)
				return cal_usage("bad --size '%s' (use bytes or a number with K, "
						 "M, G or T, e.g. 1G)",
						 optarg);
			if (x < CAL_SIZE_MIN)
				return cal_usage("--size must be at least %s (%u requests of 1M in "
						 "flight), not %s",
						 util_fmt_size(CAL_SIZE_MIN, sz, sizeof(sz)),
						 CAL_QD, optarg);
			c->size = x - x % CAL_BIG;
			break;
		case 'h':
			printf("usage: blkctl [--pool POOLDIR] calibrate %s\n%s",
			       BLKCTL_CALIBRATE_ARGS, BLKCTL_CALIBRATE_HELP);
			return -1;
		default:
			if (optopt == 's' || optopt == 'S')
				return cal_usage("%s needs a value", argv[optind - 1]);
			return cal_usage("unknown option '%s' for calibrate", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cal_usage("calibrate needs a volume name");
	if (optind + 1 < argc)
		return cal_usage("calibrate takes one volume, not '%s' too", argv[optind + 1]);
	c->vol = argv[optind];
	return 0;
}

/*
 * ---- The scratch file ----
 */

/*
 * Open an unnamed file in c->dir (O_DIRECT unless --buffered). Returns the fd, or -errno:
 * -EINVAL when the file system refuses O_DIRECT.
 */
static int scratch_open(struct cal *c)
{
	int flags = O_RDWR | O_CLOEXEC | (c->buffered ? 0 : O_DIRECT);
	char path[PATH_MAX];
	int fd;

	fd = open(c->dir, O_TMPFILE | flags, 0600);
	if (fd >= 0)
		return fd;
	/* EOPNOTSUPP: no O_TMPFILE in this file system; EISDIR: a kernel older than O_TMPFILE. */
	if (errno != EOPNOTSUPP && errno != EISDIR)
		return -errno;
	if ((size_t)snprintf(path, sizeof(path), "%s/.blkctl-calibrate.%ld", c->dir,
			     (long)getpid()) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_CREAT | O_EXCL | flags, 0600);
	if (fd < 0)
		return -errno;
	/* Nameless from here on: the kernel frees it on close, whatever ends this process. */
	unlink(path);
	return fd;
}

static int no_room(const struct cal *c, uint64_t avail)
{
	char need[16], have[16];

	return die("no room for the scratch file in %s: it needs %s free, %s is available "
		       "(--size sets a smaller area)",
		       c->dir, util_fmt_size(c->size, need, sizeof(need)),
		       util_fmt_size(avail, have, sizeof(have)));
}

static uint64_t free_bytes(int fd)
{
	struct statvfs sv;

	if (fstatvfs(fd, &sv))
		return 0;
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* Make the scratch file and reserve its space. 0, or 1 after saying why. */
static int scratch_make(struct cal *c)
{
	struct statfs sf;
	int fd, rc;

	if (!c->buffered && statfs(c->dir, &sf) == 0 &&
	    (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC))
		/* Recent tmpfs accepts O_DIRECT as a no-op: the probes would time memory. */
		return die("%s is on tmpfs, which has no device and no O_DIRECT to measure it "
			       "with; --buffered measures through the page cache anyway",
			       c->dir);
	fd = scratch_open(c);
	if (fd == -EINVAL && !c->buffered)
		return die("the file system of %s refuses O_DIRECT; --buffered measures "
			       "through the page cache instead",
			       c->dir);
	if (fd == -ENOSPC || fd == -EDQUOT)
		return no_room(c, 0);
	if (fd < 0)
		return die("cannot make a scratch file in %s: %s", c->dir, strerror(-fd));
	c->fd = fd;
	if (free_bytes(fd) < c->size)
		return no_room(c, free_bytes(fd));
	/* Reserve it all now, so a full file system says so before any probe runs. */
	if (fallocate(fd, 0, 0, (off_t)c->size)) {
		rc = -errno;
		if (rc == -ENOSPC || rc == -EDQUOT)
			return no_room(c, free_bytes(fd));
		if (rc != -EOPNOTSUPP)
			return die("cannot reserve %" PRIu64 " bytes in %s: %s", c->size,
				       c->dir, strerror(-rc));
	}
	return 0;
}

/*
 * ---- The probe engine ----
 */

struct run {
	const char *label;
	int write;
	int seq;
	uint32_t bytes;
	uint64_t warm_ns;  /**< completions before this are not counted */
	uint64_t run_ns;   /**< measured time after the warm-up; 0 = until max_reqs */
	uint64_t max_reqs; /**< stop submitting after this many; 0 = no limit */
	/* Results */
	uint64_t counted; /**< completions in the measured part */
	uint64_t span_ns; /**< from the first completion of the measured part to its last */
};

static void bar(const char *label, uint64_t done, uint64_t total)
{
	char b[41];
	int fill = total ? (int)(done * 40 / total) : 40;

	if (fill > 40)
		fill = 40;
	memset(b, '#', (size_t)fill);
	memset(b + fill, '.', (size_t)(40 - fill));
	b[40] = '\0';
	fprintf(stderr, "\r%-20s [%s]", label, b);
}

static void bar_clear(void)
{
	fprintf(stderr, "\r%*s\r", 64, "");
}

static void prep(struct cal *c, struct run *r, unsigned slot, uint64_t *submitted)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
	uint64_t off;

	/* The ring has CAL_QD entries and at most CAL_QD requests are out: never NULL. */
	if (r->seq) {
		if (c->seq_next + r->bytes > c->size)
			c->seq_next = 0;
		off = c->seq_next;
		c->seq_next += r->bytes;
	} else {
		off = cal_rand(c) % (c->size / r->bytes) * r->bytes;
	}
	if (r->write)
		io_uring_prep_write(sqe, c->fd, c->buf[slot], r->bytes, off);
	else
		io_uring_prep_read(sqe, c->fd, c->buf[slot], r->bytes, off);
	io_uring_sqe_set_data64(sqe, slot);
	(*submitted)++;
}

/*
 * Run @r: keep CAL_QD requests in flight until the time or request limit, then drain. Returns 0
 * with r->counted and r->span_ns, -EINTR after a signal, or the first failed request's -errno
 * (-EIO for a short one).
 */
static int cal_run(struct cal *c, struct run *r)
{
	uint64_t start = util_now_ns(), measure_at = start + r->warm_ns;
	uint64_t stop_at = r->run_ns ? measure_at + r->run_ns : UINT64_MAX;
	uint64_t submitted = 0, completed = 0, t0 = 0, t1 = 0, next_bar = 0;
	unsigned inflight = 0, slot;
	int err = 0, stopping = 0, rc;

	r->counted = 0;
	r->span_ns = 0;
	for (slot = 0; slot < CAL_QD && (!r->max_reqs || submitted < r->max_reqs); slot++) {
		prep(c, r, slot, &submitted);
		inflight++;
	}
	rc = io_uring_submit(&c->ring);
	if (rc < 0)
		return rc; /* nothing was sent: nothing to drain */
	while (inflight) {
		struct io_uring_cqe *cqe;
		unsigned resubmit = 0;
		uint64_t now;

		rc = io_uring_wait_cqe(&c->ring, &cqe);
		if (rc == -EINTR) {
			if (cal_stop && !err)
				err = -EINTR;
			stopping = 1;
			continue;
		}
		if (rc < 0)
			return rc; /* the ring is broken; the caller tears it down */
		now = util_now_ns();
		if (cal_stop && !err)
			err = -EINTR;
		if (err || now >= stop_at)
			stopping = 1;
		do {
			int res = cqe->res;

			slot = (unsigned)io_uring_cqe_get_data64(cqe);
			io_uring_cqe_seen(&c->ring, cqe);
			inflight--;
			completed++;
			if (res < 0 || (uint32_t)res != r->bytes) {
				if (!err)
					err = res < 0 ? res : -EIO;
				stopping = 1;
				continue;
			}
			if (!stopping && now >= measure_at) {
				/* The first completion in the measured part starts its clock. */
				if (!t0)
					t0 = now;
				else
					r->counted++;
				t1 = now;
			}
			if (!stopping && (!r->max_reqs || submitted < r->max_reqs)) {
				prep(c, r, slot, &submitted);
				inflight++;
				resubmit++;
			}
		} while (io_uring_peek_cqe(&c->ring, &cqe) == 0);
		if (resubmit) {
			rc = io_uring_submit(&c->ring);
			if (rc < 0 && !err) {
				err = rc;
				stopping = 1;
			}
			/*
			 * Stopping: what the kernel did not take will never complete (nothing
			 * submits again), so the drain must not wait for it.
			 */
			if (stopping)
				inflight -= io_uring_sq_ready(&c->ring);
		}
		if (c->tty && now >= next_bar && !stopping) {
			if (r->run_ns)
				bar(r->label, now - start, r->warm_ns + r->run_ns);
			else
				bar(r->label, completed, r->max_reqs);
			next_bar = now + CAL_BAR_NS;
		}
	}
	if (c->tty)
		bar_clear();
	if (err)
		return err;
	r->span_ns = t1 - t0;
	/* A fill run counts every request it made: its "span" is the whole run. */
	if (!r->run_ns) {
		r->counted = completed;
		r->span_ns = util_now_ns() - start;
	}
	return 0;
}

/* One line for a run that failed with @rc. Returns 1. */
static int run_failed(const struct cal *c, const char *what, int rc)
{
	if (rc == -EINTR)
		return die("calibration interrupted by signal %d; the scratch file is gone and "
			       "the pool's model is unchanged",
			       (int)cal_stop);
	if (rc == -ENOSPC || rc == -EDQUOT)
		return no_room(c, free_bytes(c->fd));
	if (rc == -EINVAL && !c->buffered)
		return die("the file system of %s refuses O_DIRECT requests; --buffered "
			       "measures through the page cache instead",
			       c->dir);
	return die("%s failed on the scratch file in %s: %s", what, c->dir, strerror(-rc));
}

/* Fill the scratch area with non-zero data, so reads reach the device. 0 or 1. */
static int cal_fill(struct cal *c)
{
	struct run r = {
	    .label = "filling",
	    .write = 1,
	    .seq = 1,
	    .bytes = CAL_BIG,
	    .max_reqs = c->size / CAL_BIG,
	};
	char sz[16];
	int rc;

	c->seq_next = 0;
	rc = cal_run(c, &r);
	if (rc)
		return run_failed(c, "filling", rc);
	/* On stable storage before the reads, so no write-back runs under them. */
	if (fdatasync(c->fd))
		return run_failed(c, "fdatasync", -errno);
	fprintf(stderr, "%-20s %s in %.1f s\n", "filled", util_fmt_size(c->size, sz, sizeof(sz)),
		(double)r.span_ns / 1e9);
	return 0;
}

static void fmt_rate(char *buf, size_t len, double per_s)
{
	if (per_s >= 1e6)
		snprintf(buf, len, "%.2fM", per_s / 1e6);
	else if (per_s >= 1e3)
		snprintf(buf, len, "%.1fk", per_s / 1e3);
	else
		snprintf(buf, len, "%.0f", per_s);
}

/* Run the six probes into @out. 0 or 1 after saying why. */
static int cal_probes(struct cal *c, struct qos_calib *out)
{
	memset(out, 0, sizeof(*out));
	out->big_bytes = CAL_BIG;
	for (unsigned i = 0; i < 6; i++) {
		const struct probe_def *p = &probe_defs[i];
		struct run r = {
		    .label = p->label,
		    .write = p->write,
		    .seq = p->seq,
		    .bytes = p->bytes,
		    .warm_ns = CAL_WARMUP_NS,
		    .run_ns = c->seconds * QOS_NS_PER_SEC,
		};
		char rate[16], bw[16];
		uint64_t ns;
		int rc;

		c->seq_next = 0;
		rc = cal_run(c, &r);
		if (rc)
			return run_failed(c, p->label, rc);
		if (r.counted == 0)
			return die("%s: no request completed within %u s; the device is too "
				       "slow or stalled",
				       p->label, c->seconds);
		ns = r.span_ns / r.counted;
		if (ns == 0)
			ns = 1; /* faster than the clock resolves: as fast as the model can say */
		*(uint64_t *)((char *)out + p->off) = ns;
		fmt_rate(rate, sizeof(rate), 1e9 / (double)ns);
		util_fmt_size((uint64_t)((double)p->bytes * 1e9 / (double)ns), bw, sizeof(bw));
		fprintf(stderr, "%-20s %10" PRIu64 " ns/request  %8s IOPS  %7s/s\n", p->label, ns,
			rate, bw);
	}
	return 0;
}

/*
 * ---- Setup, output ----
 */

/* The directory holding @vol's data. 0, or 1 after saying why. */
static int vol_dir(const char *pool, const char *vol, char *dir, size_t len)
{
	struct pool_vol v;
	char *slash;
	int rc;

	if (!pool_vol_name_ok(vol))
		return die("'%s' is not a valid volume name (1-%d of A-Z a-z 0-9 _ . -, not "
			       "starting with '.')",
			       vol, POOL_VOL_NAME_MAX);
	rc = pool_vol_get(pool, vol, &v);
	if (rc == -ENOENT)
		return die("no volume named '%s' in pool %s", vol, pool);
	if (rc == -EINVAL)
		return die("volume '%s' in pool %s has unreadable metadata (%s/vols/%s.json)",
			       vol, pool, pool, vol);
	if (rc)
		return die("cannot read volume '%s' in pool %s: %s", vol, pool, strerror(-rc));
	if (!strcmp(v.store, POOL_STORE_DEDUP)) {
		rc = pool_dedup_path(pool, dir, (unsigned)len);
	} else {
		char img[PATH_MAX], real[PATH_MAX];

		/* A volume file linked in from another file system lives on that device. */
		rc = pool_vol_path(pool, vol, img, sizeof(img));
		if (!rc && !realpath(img, real))
			return die("cannot find the data of volume '%s' (%s): %s", vol, img,
				       strerror(errno));
		if (!rc && (size_t)snprintf(dir, len, "%s", real) >= len)
			rc = -ENAMETOOLONG;
		slash = rc ? NULL : strrchr(dir, '/');
		if (slash)
			slash[slash == dir] = '\0'; /* "/vm.img" lives in "/" */
	}
	if (rc)
		return die("the path of volume '%s' is too long", vol);
	return 0;
}

static int cal_setup(struct cal *c)
{
	int rc;

	for (unsigned i = 0; i < CAL_QD; i++) {
		if (posix_memalign(&c->buf[i], QOS_PAGE_BYTES, CAL_BIG))
			return die("out of memory for %u buffers of 1M", CAL_QD);
		/* Non-zero and incompressible: a device that dedups or compresses must work. */
		for (size_t j = 0; j < CAL_BIG / 8; j++)
			((uint64_t *)c->buf[i])[j] = cal_rand(c) | 1;
	}
	rc = io_uring_queue_init(CAL_QD, &c->ring, 0);
	if (rc < 0)
		return die("cannot set up io_uring: %s", strerror(-rc));
	c->ring_ok = 1;
	return 0;
}

static void cal_teardown(struct cal *c)
{
	if (c->ring_ok)
		io_uring_queue_exit(&c->ring);
	if (c->fd >= 0)
		close(c->fd); /* the scratch file has no name: this frees it */
	for (unsigned i = 0; i < CAL_QD; i++)
		free(c->buf[i]);
}

struct capacity {
	uint64_t rd_rand_iops, wr_rand_iops; /**< the model's 4 KiB random requests per second */
	uint64_t rd_big_bps, wr_big_bps;     /**< measured 1 MiB sequential bytes per second */
	uint64_t sched_iops;		     /**< qos_sched_capacity_iops() of the model */
};

static int capacity_of(const struct qos_cost_model *m, const struct qos_calib *k,
		       struct capacity *cap)
{
	struct qos_params p;
	struct qos_sched *s;
	char why[256];
	int rc;

	cap->rd_rand_iops = QOS_NS_PER_SEC / (m->rd_page_ns + m->rd_rand_base_ns);
	cap->wr_rand_iops = QOS_NS_PER_SEC / (m->wr_page_ns + m->wr_rand_base_ns);
	cap->rd_big_bps = (uint64_t)((double)k->big_bytes * 1e9 / (double)k->rd_big_ns);
	cap->wr_big_bps = (uint64_t)((double)k->big_bytes * 1e9 / (double)k->wr_big_ns);
	/* What blkbackd's scheduler will admit: the one reservations are checked against. */
	qos_params_default(&p);
	p.cost = *m;
	rc = qos_sched_new(&p, NULL, &s, why, sizeof(why));
	if (rc)
		return die("the scheduler refuses the measured model: %s", why);
	cap->sched_iops = qos_sched_capacity_iops(s);
	qos_sched_free(s);
	return 0;
}

static void put_u64(json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_int64((int64_t)v));
}

static void print_json(const struct cal *c, const struct qos_calib *k,
		       const struct qos_cost_model *m, const struct capacity *cap, const char *path)
{
	json_object *o = json_object_new_object(), *p = json_object_new_object();
	json_object *mo = json_object_new_object(), *co = json_object_new_object();

	json_object_object_add(o, "vol", json_object_new_string(c->vol));
	json_object_object_add(o, "dir", json_object_new_string(c->dir));
	json_object_object_add(o, "direct", json_object_new_boolean(!c->buffered));
	put_u64(o, "seconds", c->seconds);
	put_u64(o, "size", c->size);
	put_u64(o, "qd", CAL_QD);
	put_u64(p, "big_bytes", k->big_bytes);
	for (unsigned i = 0; i < 6; i++)
		put_u64(p, probe_keys[i], *(const uint64_t *)((const char *)k + probe_defs[i].off));
	json_object_object_add(o, "probes", p);
	put_u64(mo, "rd_page_ns", m->rd_page_ns);
	put_u64(mo, "rd_seq_base_ns", m->rd_seq_base_ns);
	put_u64(mo, "rd_rand_base_ns", m->rd_rand_base_ns);
	put_u64(mo, "wr_page_ns", m->wr_page_ns);
	put_u64(mo, "wr_seq_base_ns", m->wr_seq_base_ns);
	put_u64(mo, "wr_rand_base_ns", m->wr_rand_base_ns);
	json_object_object_add(o, "model", mo);
	put_u64(co, "rd_rand_iops", cap->rd_rand_iops);
	put_u64(co, "wr_rand_iops", cap->wr_rand_iops);
	put_u64(co, "rd_big_bps", cap->rd_big_bps);
	put_u64(co, "wr_big_bps", cap->wr_big_bps);
	put_u64(co, "capacity_iops", cap->sched_iops);
	json_object_object_add(o, "capacity", co);
	json_object_object_add(o, "path", json_object_new_string(path));
	printf("%s\n",
	       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void print_human(const struct cal *c, const struct qos_cost_model *m,
			const struct capacity *cap, const char *path)
{
	char r[16], w[16], rb[16], wb[16], s[16];

	printf("device model from calibrate %s%s, saved in %s:\n", c->vol,
	       c->buffered ? " --buffered" : "", path);
	printf("  %-16s %10" PRIu64 " ns   %-16s %10" PRIu64 " ns\n", "rd_page_ns", m->rd_page_ns,
	       "wr_page_ns", m->wr_page_ns);
	printf("  %-16s %10" PRIu64 " ns   %-16s %10" PRIu64 " ns\n", "rd_seq_base_ns",
	       m->rd_seq_base_ns, "wr_seq_base_ns", m->wr_seq_base_ns);
	printf("  %-16s %10" PRIu64 " ns   %-16s %10" PRIu64 " ns\n", "rd_rand_base_ns",
	       m->rd_rand_base_ns, "wr_rand_base_ns", m->wr_rand_base_ns);
	fmt_rate(r, sizeof(r), (double)cap->rd_rand_iops);
	fmt_rate(w, sizeof(w), (double)cap->wr_rand_iops);
	fmt_rate(s, sizeof(s), (double)cap->sched_iops);
	printf("4K random: %s IOPS read, %s IOPS write (QoS capacity %s IOPS)\n", r, w, s);
	printf("1M sequential: %s/s read, %s/s write\n",
	       util_fmt_size(cap->rd_big_bps, rb, sizeof(rb)),
	       util_fmt_size(cap->wr_big_bps, wb, sizeof(wb)));
	if (c->buffered)
		printf("measured through the page cache (--buffered): these are not the device's "
		       "own numbers\n");
}

/* Tell the operator when guests' I/O competes with the probes: the numbers come out low. */
static void warn_if_daemon(const char *pool)
{
	struct blkctl_daemon d;

	if (blkctl_daemon_open(pool, &d) < 0)
		return;
	if (d.fd >= 0)
		fprintf(stderr,
			"note: blkbackd runs on pool %s; its guests' I/O shares the device "
			"with the probes and lowers the numbers\n",
			pool);
	blkctl_daemon_close(&d);
}

int blkctl_calibrate(const char *pool, int argc, char **argv)
{
	struct cal c = {.seconds = 1, .size = CAL_SIZE_DEFAULT, .fd = -1};
	struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term, old_hup;
	char dir[PATH_MAX], path[PATH_MAX], source[POOL_VOL_NAME_MAX + 32], sz[16], why[256];
	struct qos_cost_model m = {0};
	struct qos_calib k = {0};
	struct capacity cap = {0};
	int rc;

	rc = parse_args(&c, argc, argv);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (vol_dir(pool, c.vol, dir, sizeof(dir)))
		return 1;
	c.dir = dir;
	c.tty = isatty(STDERR_FILENO);
	c.rng = 0x9e3779b97f4a7c15ull ^ util_now_ns();
	if (qos_model_path(path, sizeof(path), pool))
		return die("the path of pool %s is too long", pool);

	/* No SA_RESTART: a signal must break io_uring_wait_cqe() so the probe stops at once. */
	sigemptyset(&sa.sa_mask);
	cal_stop = 0;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGHUP, &sa, &old_hup);

	rc = scratch_make(&c) || cal_setup(&c);
	if (rc)
		goto out;
	warn_if_daemon(pool);
	fprintf(stderr,
		"calibrating the device under %s (volume %s): %s scratch area, %s, %u s "
		"per probe at queue depth %u\n",
		dir, c.vol, util_fmt_size(c.size, sz, sizeof(sz)),
		c.buffered ? "buffered (page cache)" : "O_DIRECT", c.seconds, CAL_QD);
	rc = cal_fill(&c) || cal_probes(&c, &k);
	if (rc)
		goto out;
	if (qos_cost_model_from_calib(&k, &m, why, sizeof(why))) {
		rc = die("the measurements do not make a model: %s", why);
		goto out;
	}
	rc = capacity_of(&m, &k, &cap);
	if (rc)
		goto out;
	snprintf(source, sizeof(source), "calibrate %s%s", c.vol, c.buffered ? " --buffered" : "");
	rc = qos_model_save(pool, &m, &k, source);
	if (rc) {
		rc = die("cannot save the model in %s: %s", path, strerror(-rc));
		goto out;
	}
	if (c.json)
		print_json(&c, &k, &m, &cap, path);
	else
		print_human(&c, &m, &cap, path);
	/* Last, where it is read: on stdout for people, on stderr beside the JSON. */
	fprintf(c.json ? stderr : stdout,
		"a running blkbackd uses the new model from its next start\n");
	rc = 0;
out:
	cal_teardown(&c);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	return rc;
}
