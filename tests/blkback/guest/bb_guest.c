/*
 * bb_guest.c - the guest (and toolstack) half of blkbackd's integration tests.
 *
 *   bb-guest hostile --hv-dir D --domain N --vdev V
 *       A hostile frontend (raw rings, test_front.c): sends every kind of bad request and
 *       checks each is answered with an error (unknown opcodes: "not supported") while valid
 *       requests between them still work; finally claims more requests than the ring holds
 *       and checks that the backend disconnects it. Exit 0 when blkbackd behaved.
 *   bb-guest write --hv-dir D --domain N --vdev V --log FILE [--count N] [--depth N]
 *       A well-behaved guest (libblkfront): writes 4 KiB blocks, each a pattern of (block,
 *       run), once each, iodepth N, and appends "block seed" to FILE for every write the
 *       backend acknowledged. Stops after N writes, on SIGTERM, or when the disk goes away.
 *   bb-guest check --image IMG --log FILE [--min N]
 *       dom0 side: every acknowledged write in FILE is in the volume's image.
 *   bb-guest ctl --pool P JSON
 *       One control-socket request; prints the answer; exit 0 when "ok" is true.
 *   bb-guest create --pool P --vol NAME --size BYTES
 *       Create a volume in the pool (pool.h), as blkctl create does.
 */
#include "blkback/blkback_internal.h"
#include "hv/blkfront.h"
#include "tests/blkback/test_front.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BLOCK 4096u

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static struct {
	const char *hv_dir, *domain, *vdev, *log, *image, *pool, *vol;
	unsigned long count, depth, min, size;
} A = { .count = 1000000, .depth = 16 };

/* The content of block @b written in run @seed: cheap, position- and run-dependent. */
static void pattern(void *buf, uint64_t b, uint64_t seed)
{
	uint64_t x = (b + 1) * 0x9e3779b97f4a7c15ull ^ (seed + 1) * 0xc2b2ae3d27d4eb4full;
	uint64_t *w = buf;

	for (unsigned i = 0; i < BLOCK / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
}

/*
 * ---- hostile ----
 */

static int expect(struct tf *f, const char *what, uint8_t op, uint8_t nseg, uint64_t sector,
		  int16_t want, void (*tweak)(struct blkif_request *, struct tf *))
{
	static uint64_t id = 1000;
	struct blkif_request *rq = tf_slot(f, 0);
	struct blkif_response rsp;
	int rc;

	rq->operation = op;
	rq->nr_segments = nseg;
	rq->id = ++id;
	rq->sector_number = sector;
	for (unsigned i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
		rq->seg[i].gref = tf_gref(f, i);
		rq->seg[i].first_sect = 0;
		rq->seg[i].last_sect = 7;
	}
	if (tweak)
		tweak(rq, f);
	tf_queue_req(f, 0);
	tf_push(f, 0);
	rc = tf_wait_rsp(f, 0, &rsp);
	if (rc < 0) {
		fprintf(stderr, "hostile: %s: no answer: %s\n", what, strerror(-rc));
		return 1;
	}
	if (rsp.id != id || rsp.status != want) {
		fprintf(stderr,
			"hostile: %s: answered id %llu status %d, wanted id %llu status %d\n", what,
			(unsigned long long)rsp.id, rsp.status, (unsigned long long)id, want);
		return 1;
	}
	return 0;
}

/* An INDIRECT request of @nseg pages (data pages 0..) described on data page 63. */
static int expect_indirect(struct tf *f, const char *what, uint8_t iop, uint16_t nseg,
			   uint64_t sector, grant_ref_t iref, int bad_seg, int16_t want)
{
	static uint64_t id = 5000;
	struct blkif_request_indirect ind = {
		.operation = BLKIF_OP_INDIRECT, .indirect_op = iop, .nr_segments = nseg,
		.id = ++id, .sector_number = sector, .handle = (blkif_vdev_t)f->devid,
	};
	struct blkif_request_segment *segs = tf_page(f, 63);
	struct blkif_response rsp;
	int rc;

	for (unsigned i = 0; i < 62; i++)
		segs[i] = (struct blkif_request_segment){ .gref = tf_gref(f, i), .last_sect = 7 };
	if (bad_seg >= 0)
		segs[bad_seg].last_sect = 9;
	ind.indirect_grefs[0] = iref;
	memcpy(tf_slot(f, 0), &ind, sizeof(ind));
	tf_queue_req(f, 0);
	tf_push(f, 0);
	rc = tf_wait_rsp(f, 0, &rsp);
	if (rc < 0 || rsp.id != id || rsp.status != want) {
		fprintf(stderr, "hostile: %s: answered %s status %d, wanted %d\n", what,
			rc < 0 ? "nothing" : "with", rc < 0 ? 0 : rsp.status, want);
		return 1;
	}
	return 0;
}

static void tweak_last9(struct blkif_request *rq, struct tf *f)
{
	(void)f;
	rq->seg[0].last_sect = 9;
}

static void tweak_first_after_last(struct blkif_request *rq, struct tf *f)
{
	(void)f;
	rq->seg[1].first_sect = 6;
	rq->seg[1].last_sect = 2;
}

static void tweak_ungranted(struct blkif_request *rq, struct tf *f)
{
	(void)f;
	rq->seg[0].gref = 16000; /* in the table, never granted */
}

static void tweak_wild_ref(struct blkif_request *rq, struct tf *f)
{
	(void)f;
	rq->seg[0].gref = 0xfffffff0u; /* outside the table */
}

static void tweak_discard_past_end(struct blkif_request *rq, struct tf *f)
{
	struct blkif_request_discard d = {
		.operation = BLKIF_OP_DISCARD, .id = rq->id, .sector_number = f->sectors - 8,
		.nr_sectors = 64,
	};

	memcpy(rq, &d, sizeof(d));
}

static int run_hostile(void)
{
	struct tf_opts o = { 0 };
	struct tf *f = NULL;
	blkif_sring_t *s;
	unsigned bad = 0, n = 0;
	int rc;

	rc = tf_open(&f, A.hv_dir, A.domain, A.vdev);
	if (rc < 0) {
		fprintf(stderr, "hostile: cannot open %s of %s: %s\n", A.vdev, A.domain,
			strerror(-rc));
		return 2;
	}
	rc = tf_connect(f, &o);
	if (rc < 0) {
		fprintf(stderr, "hostile: cannot connect: %s\n", strerror(-rc));
		tf_free(f);
		return 2;
	}
	srand(42);
	/* Random opcodes the protocol does not have (and the reserved one). */
	for (int i = 0; i < 64; i++) {
		uint8_t op = (uint8_t)(7 + rand() % 249);

		bad += expect(f, "random opcode", op, 1, 0, BLKIF_RSP_EOPNOTSUPP, NULL);
		n++;
	}
	bad += expect(f, "reserved opcode", BLKIF_OP_RESERVED_1, 1, 0, BLKIF_RSP_EOPNOTSUPP, NULL);
	bad += expect(f, "read, 0 segments", BLKIF_OP_READ, 0, 0, BLKIF_RSP_ERROR, NULL);
	bad += expect(f, "write, 0 segments", BLKIF_OP_WRITE, 0, 0, BLKIF_RSP_ERROR, NULL);
	bad += expect(f, "read, 12 segments", BLKIF_OP_READ, 12, 0, BLKIF_RSP_ERROR, NULL);
	bad += expect(f, "write, 200 segments", BLKIF_OP_WRITE, 200, 0, BLKIF_RSP_ERROR, NULL);
	bad += expect(f, "last_sect 9", BLKIF_OP_READ, 1, 0, BLKIF_RSP_ERROR, tweak_last9);
	bad += expect(f, "first_sect > last_sect", BLKIF_OP_WRITE, 2, 0, BLKIF_RSP_ERROR,
		      tweak_first_after_last);
	bad += expect(f, "ungranted ref", BLKIF_OP_READ, 1, 0, BLKIF_RSP_ERROR, tweak_ungranted);
	bad += expect(f, "ref outside the table", BLKIF_OP_WRITE, 1, 0, BLKIF_RSP_ERROR,
		      tweak_wild_ref);
	bad += expect(f, "read past the end", BLKIF_OP_READ, 1, f->sectors - 4, BLKIF_RSP_ERROR,
		      NULL);
	bad += expect(f, "write at the end", BLKIF_OP_WRITE, 1, f->sectors, BLKIF_RSP_ERROR, NULL);
	bad += expect(f, "sector wraps", BLKIF_OP_READ, 2, UINT64_MAX - 7, BLKIF_RSP_ERROR, NULL);
	bad += expect(f, "discard past the end", BLKIF_OP_DISCARD, 0, 0, BLKIF_RSP_ERROR,
		      tweak_discard_past_end);
	/* A read into a page granted read-only must not be mapped writable. */
	tf_regrant(f, 3, 1);
	bad += expect(f, "read into a read-only grant", BLKIF_OP_READ, 4, 0, BLKIF_RSP_ERROR,
		      NULL);
	tf_regrant(f, 3, 0);
	n += 14;
	/* Indirect requests: the header and every segment in the indirect page are guest input. */
	if (tf_be_indirect(f) >= 62) {
		grant_ref_t ip = tf_gref(f, 63);

		bad += expect_indirect(f, "indirect, operation discard", BLKIF_OP_DISCARD, 4, 0, ip,
				       -1, BLKIF_RSP_ERROR);
		bad += expect_indirect(f, "indirect, 0 segments", BLKIF_OP_READ, 0, 0, ip, -1,
				       BLKIF_RSP_ERROR);
		bad += expect_indirect(f, "indirect, 4000 segments", BLKIF_OP_READ, 4000, 0, ip, -1,
				       BLKIF_RSP_ERROR);
		bad += expect_indirect(f, "indirect page not granted", BLKIF_OP_READ, 4, 0, 16001,
				       -1, BLKIF_RSP_ERROR);
		bad += expect_indirect(f, "indirect segment last_sect 9", BLKIF_OP_WRITE, 30, 0, ip,
				       17, BLKIF_RSP_ERROR);
		bad += expect_indirect(f, "indirect past the end", BLKIF_OP_READ, 30,
				       f->sectors - 8, ip, -1, BLKIF_RSP_ERROR);
		n += 6;
		bad += expect_indirect(f, "valid indirect write", BLKIF_OP_WRITE, 60, 0, ip, -1,
				       BLKIF_RSP_OKAY);
		bad += expect_indirect(f, "valid indirect read", BLKIF_OP_READ, 60, 0, ip, -1,
				       BLKIF_RSP_OKAY);
	} else {
		bad += expect(f, "indirect (not offered)", BLKIF_OP_INDIRECT, 1, 0,
			      BLKIF_RSP_EOPNOTSUPP, NULL);
		n++;
	}
	/* Valid requests still work on the same ring. */
	bad += expect(f, "valid write", BLKIF_OP_WRITE, 11, 0, BLKIF_RSP_OKAY, NULL);
	bad += expect(f, "valid read", BLKIF_OP_READ, 11, 0, BLKIF_RSP_OKAY, NULL);
	bad += expect(f, "valid flush", BLKIF_OP_FLUSH_DISKCACHE, 0, 0, BLKIF_RSP_OKAY, NULL);
	printf("hostile: %u bad requests answered with errors, %u surprises\n", n, bad);

	/* Finally claim more requests than the ring has: the backend must disconnect us. */
	s = f->q[0].fr.sring;
	__atomic_store_n(&s->req_prod, s->rsp_prod + RING_SIZE(&f->q[0].fr) + 7, __ATOMIC_RELEASE);
	hv_evtchn_notify(f->q[0].evt, f->q[0].port);
	if (tf_wait_be(f, XenbusStateClosing) < 0) {
		fprintf(stderr, "hostile: the backend did not disconnect a ring overflow\n");
		bad++;
	} else {
		printf("hostile: ring overflow disconnected (backend Closing)\n");
	}
	tf_set_state(f, XenbusStateClosed);
	tf_wait_be(f, XenbusStateClosed);
	tf_free(f);
	return bad ? 1 : 0;
}

/*
 * ---- write ----
 */

struct writer {
	struct blkfront *bf;
	int log_fd;
	uint64_t seed;
	unsigned long acked, failed;
	int dev_err;
	unsigned char busy[256]; /**< buffer slot (block % depth) holds a write in flight */
};

static void writer_done(void *arg, uint64_t id, int status)
{
	struct writer *w = arg;
	char line[64];
	int n;

	w->busy[id % A.depth] = 0;
	if (status < 0) {
		w->failed++;
		if (status == -ENODEV)
			w->dev_err = status;
		return;
	}
	w->acked++;
	n = snprintf(line, sizeof(line), "%llu %llu\n", (unsigned long long)id,
		     (unsigned long long)w->seed);
	if (write(w->log_fd, line, (size_t)n) != n)
		w->dev_err = -EIO;
}

static int run_write(void)
{
	struct blkfront_opts bo = { .done = writer_done };
	struct blkfront_info info;
	struct writer w = { .log_fd = -1 };
	struct hv *hv = NULL;
	uint32_t frame;
	size_t memlen;
	uint8_t *mem;
	uint64_t next = 0, blocks;
	int rc;

	w.log_fd = open(A.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (w.log_fd < 0) {
		fprintf(stderr, "write: %s: %s\n", A.log, strerror(errno));
		return 2;
	}
	w.seed = (uint64_t)getpid();
	rc = hv_guest_open(&hv, A.hv_dir, A.domain);
	if (rc < 0) {
		fprintf(stderr, "write: guest %s: %s\n", A.domain, hv_strerror(rc));
		return 2;
	}
	bo.arg = &w;
	rc = blkfront_open(&w.bf, hv, A.vdev, &bo);
	if (rc < 0) {
		fprintf(stderr, "write: %s: %s\n", A.vdev, strerror(-rc));
		hv_close(hv);
		return 2;
	}
	blkfront_info(w.bf, &info);
	blocks = info.sectors / (BLOCK / 512);
	mem = hv_guest_mem(hv, &memlen);
	rc = hv_guest_alloc_frames(hv, (uint32_t)A.depth, &frame);
	if (rc < 0) {
		fprintf(stderr, "write: no guest memory for %lu buffers\n", A.depth);
		goto out;
	}
	/* Each block is written once (never rewritten), so the last ack names its content. */
	while (!stop_flag && !w.dev_err && next < blocks && next < A.count) {
		while (blkfront_inflight(w.bf) < A.depth && next < blocks && next < A.count) {
			struct iovec iov;
			unsigned slot = (unsigned)(next % A.depth);

			/* A slot's buffer is reused only after its previous write completed. */
			if (w.busy[slot])
				break;
			iov.iov_base = mem + (size_t)(frame + slot) * HV_PAGE_SIZE;
			iov.iov_len = BLOCK;
			pattern(iov.iov_base, next, w.seed);
			rc = blkfront_writev(w.bf, next * (BLOCK / 512), &iov, 1, next);
			if (rc == -EAGAIN)
				break;
			if (rc < 0) {
				w.dev_err = rc;
				break;
			}
			w.busy[slot] = 1;
			next++;
		}
		blkfront_kick(w.bf);
		rc = blkfront_wait(w.bf, 200);
		if (rc < 0)
			w.dev_err = rc;
	}
	/* Let what is in flight finish (bounded), unless we were told to stop. */
	for (int i = 0; i < 50 && !stop_flag && !w.dev_err && blkfront_inflight(w.bf); i++)
		if (blkfront_wait(w.bf, 100) < 0)
			break;
out:
	printf("write: %lu acknowledged, %lu failed%s%s\n", w.acked, w.failed,
	       w.dev_err ? ", device: " : "", w.dev_err ? strerror(-w.dev_err) : "");
	fflush(stdout);
	/*
	 * A stopped writer leaves at once: closing would wait for a backend that may be gone, and
	 * the acknowledged writes are all in the log already.
	 */
	if (stop_flag)
		_exit(0);
	blkfront_close(w.bf);
	hv_close(hv);
	close(w.log_fd);
	return w.dev_err == -ENODEV ? 3 : (w.dev_err ? 1 : 0);
}

/*
 * ---- check ----
 */

static int run_check(void)
{
	FILE *log = fopen(A.log, "r");
	unsigned char want[BLOCK], got[BLOCK];
	unsigned long long b, seed;
	unsigned long n = 0, bad = 0;
	int fd = open(A.image, O_RDONLY | O_CLOEXEC);

	if (!log || fd < 0) {
		fprintf(stderr, "check: cannot open %s or %s\n", A.log, A.image);
		return 2;
	}
	while (fscanf(log, "%llu %llu", &b, &seed) == 2) {
		pattern(want, b, seed);
		if (pread(fd, got, BLOCK, (off_t)(b * BLOCK)) != BLOCK ||
		    memcmp(want, got, BLOCK) != 0) {
			if (bad < 10)
				fprintf(stderr, "check: acknowledged block %llu is not on disk\n",
					b);
			bad++;
		}
		n++;
	}
	fclose(log);
	close(fd);
	printf("check: %lu acknowledged writes, %lu missing\n", n, bad);
	if (n < A.min) {
		fprintf(stderr, "check: only %lu writes acknowledged, wanted at least %lu\n", n,
			A.min);
		return 1;
	}
	return bad ? 1 : 0;
}

/*
 * ---- ctl ----
 */

static int run_ctl(const char *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[512], buf[65536];
	size_t got = 0;
	json_object *a, *ok;
	int fd;

	snprintf(path, sizeof(path), "%s/blkbackd.sock", A.pool);
	if (strlen(path) >= sizeof(sa.sun_path))
		return 2;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, strlen(req)) < 0 || write(fd, "\n", 1) != 1) {
		fprintf(stderr, "ctl: %s: %s\n", path, strerror(errno));
		return 2;
	}
	while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 15000) != 1)
			break;
		r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	close(fd);
	fputs(buf, stdout);
	a = json_tokener_parse(buf);
	got = a && json_object_object_get_ex(a, "ok", &ok) && json_object_get_boolean(ok);
	json_object_put(a);
	return got ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "hv-dir", required_argument, NULL, 'd' },
		{ "domain", required_argument, NULL, 'n' },
		{ "vdev", required_argument, NULL, 'v' },
		{ "log", required_argument, NULL, 'l' },
		{ "image", required_argument, NULL, 'i' },
		{ "pool", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'c' },
		{ "depth", required_argument, NULL, 'q' },
		{ "min", required_argument, NULL, 'm' },
		{ "vol", required_argument, NULL, 'V' },
		{ "size", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	struct sigaction sa = { .sa_handler = on_signal };
	const char *mode;
	int c;

	if (argc < 2) {
		fprintf(stderr, "usage: bb-guest hostile|write|check|ctl [options]\n");
		return 2;
	}
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'd': A.hv_dir = optarg; break;
		case 'n': A.domain = optarg; break;
		case 'v': A.vdev = optarg; break;
		case 'l': A.log = optarg; break;
		case 'i': A.image = optarg; break;
		case 'p': A.pool = optarg; break;
		case 'c': A.count = strtoul(optarg, NULL, 10); break;
		case 'q': A.depth = strtoul(optarg, NULL, 10); break;
		case 'm': A.min = strtoul(optarg, NULL, 10); break;
		case 'V': A.vol = optarg; break;
		case 's': A.size = strtoul(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	log_set_prog("bb-guest");
	if (strcmp(mode, "hostile") == 0 && A.hv_dir && A.domain && A.vdev)
		return run_hostile();
	if (strcmp(mode, "write") == 0 && A.hv_dir && A.domain && A.vdev && A.log && A.depth &&
	    A.depth <= 256)
		return run_write();
	if (strcmp(mode, "check") == 0 && A.image && A.log)
		return run_check();
	if (strcmp(mode, "ctl") == 0 && A.pool && optind < argc)
		return run_ctl(argv[optind]);
	if (strcmp(mode, "create") == 0 && A.pool && A.vol && A.size) {
		int rc = pool_init(A.pool);

		rc = rc ?: pool_vol_create(A.pool, A.vol, A.size);
		if (rc < 0)
			fprintf(stderr, "create %s: %s\n", A.vol, strerror(-rc));
		return rc < 0 ? 1 : 0;
	}
	fprintf(stderr, "bb-guest %s: missing or bad options\n", mode);
	return 2;
}
