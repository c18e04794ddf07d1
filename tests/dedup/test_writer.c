/*
 * test_writer.c - the writer's promises: commits are grouped (one LMDB transaction for many
 * requests, never one per block), and an acknowledged write survives kill -9 at any moment
 * (a child process writes and reports each acknowledged block through a pipe; the parent kills
 * it after a random number of reports, reopens the store, checks every block and runs fsck).
 */
#include "tests/dedup/dedup_test.h"
#include "dedup/dedup_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t last_txnid(struct dedup_store *s)
{
	MDB_envinfo ei;

	mdb_env_info(s->env, &ei);
	return ei.me_last_txnid;
}

#define GROUP_REQS 64

static void test_commits_are_grouped(void)
{
	struct dedup_store *s = t_store("writer-group", NULL);
	struct dedup_req *r[GROUP_REQS];
	uint64_t *buf = aligned_alloc(TB, (size_t)GROUP_REQS * TB);
	struct dedup_ctx *c;
	struct dedup_vol *v;
	uint64_t before, after;
	int reaped = 0;

	CU_ASSERT_FATAL(s && buf);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", GROUP_REQS * TB), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
	CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
	for (int i = 0; i < GROUP_REQS; i++) {
		struct iovec iov = { buf + (size_t)i * (TB / 8), TB };

		CU_ASSERT_EQUAL_FATAL(dedup_req_alloc(1, &r[i]), 0);
		t_fill(iov.iov_base, 1 + (uint64_t)i);
		CU_ASSERT_EQUAL_FATAL(dedup_write_prepare(c, v, (uint64_t)i, 1, &iov, 1, r[i]), 0);
		CU_ASSERT_EQUAL_FATAL(t_write_extents(r[i]), 0);
	}
	before = last_txnid(s);
	for (int i = 0; i < GROUP_REQS; i++)
		dedup_write_submit(c, r[i], 0);
	while (reaped < GROUP_REQS) {
		int st;

		if (dedup_ctx_reap(c, &st)) {
			CU_ASSERT_EQUAL(st, 0);
			reaped++;
		} else {
			struct pollfd pfd = { .fd = dedup_ctx_fd(c), .events = POLLIN };

			poll(&pfd, 1, 10000);
		}
	}
	after = last_txnid(s);
	/* acknowledged from the journal; LMDB commits come in checkpoints of many writes */
	CU_ASSERT_TRUE(after - before <= 2);
	for (int i = 0; i < GROUP_REQS; i++) {
		CU_ASSERT_TRUE(t_reads(c, v, (uint64_t)i, 1 + (uint64_t)i));
		dedup_req_free(r[i]);
	}
	dedup_vol_close(v);
	dedup_ctx_close(c);
	dedup_store_close(s);
	free(buf);
}

/* ---- kill -9 ------------------------------------------------------------------------------ */

#define CR_BLK 1536
#define CR_THREADS 2
#define CR_ROUNDS 4

static const struct dedup_opts cr_opts = { .container_bytes = 64u << 10, .gc_dead_pct = 25 };

/* What round @round writes to @blk: zeros, content shared with other blocks, or its own. */
static uint64_t cr_seed(uint64_t round, uint64_t blk)
{
	uint64_t h = t_mix(round * 1000003ull + blk);

	if (h % 8 == 0)
		return 0;
	if (h % 8 < 4)
		return 1 + (h >> 8) % 64;
	return (round << 32) | (blk + 1000);
}

struct cr_arg {
	struct dedup_store *s;
	struct dedup_vol *v;
	uint64_t round;
	int id;
	int wfd;
	int failed;
};

static void *cr_thread(void *p)
{
	struct cr_arg *a = p;
	struct dedup_ctx *c;
	uint64_t buf[TB / 8];
	unsigned n = 0;

	if (dedup_ctx_open(a->s, &c)) {
		a->failed = 1;
		return NULL;
	}
	/* this thread's blocks, in an order that differs per round */
	for (uint64_t i = 0; i < CR_BLK; i++) {
		uint64_t blk = (i * 769 + a->round * 131) % CR_BLK, seed;
		int rc;

		if (blk % CR_THREADS != (uint64_t)a->id)
			continue;
		seed = cr_seed(a->round, blk);
		if (!seed && (t_mix(blk) & 1)) {
			rc = dedup_vol_discard(c, a->v, blk, 1);
		} else {
			t_fill(buf, seed);
			rc = dedup_vol_write(c, a->v, blk, 1, buf);
		}
		if (rc) {
			a->failed = 1;
			break;
		}
		/* acknowledged: report it (an 8-byte pipe write is atomic) */
		if (write(a->wfd, &blk, sizeof(blk)) != sizeof(blk)) {
			a->failed = 1;
			break;
		}
		if (++n % 64 == 0 && dedup_ctx_flush(c)) {
			a->failed = 1;
			break;
		}
	}
	dedup_ctx_close(c);
	return NULL;
}

static void cr_child(uint64_t round, int wfd)
{
	struct cr_arg a[CR_THREADS];
	pthread_t th[CR_THREADS];
	struct dedup_store *s = t_reopen("writer-crash", &cr_opts);
	struct dedup_vol *v;

	if (!s || dedup_vol_open(s, "v", &v))
		_exit(2);
	for (int i = 0; i < CR_THREADS; i++) {
		a[i] = (struct cr_arg){ s, v, round, i, wfd, 0 };
		if (pthread_create(&th[i], NULL, cr_thread, &a[i]))
			_exit(2);
	}
	for (int i = 0; i < CR_THREADS; i++) {
		pthread_join(th[i], NULL);
		if (a[i].failed)
			_exit(3);
	}
	dedup_vol_close(v);
	dedup_store_close(s);
	_exit(0); /* not exit(): the harness's atexit would remove the test directory */
}

static void test_kill9_keeps_acknowledged_writes(void)
{
	uint64_t state[CR_BLK] = { 0 };
	struct dedup_store *s = t_store("writer-crash", &cr_opts);
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", CR_BLK * TB), 0);
	dedup_store_close(s);
	printf("(seed %u) ", seed);
	srand(seed);
	for (uint64_t round = 1; round <= CR_ROUNDS; round++) {
		uint8_t acked[CR_BLK] = { 0 };
		unsigned kill_after = 50 + (unsigned)rand() % 500, got = 0;
		struct dedup_ctx *c;
		struct dedup_vol *v;
		int pfd[2], status;
		uint64_t blk;
		pid_t pid;

		CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
		fflush(stdout);
		pid = fork();
		CU_ASSERT_FATAL(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			cr_child(round, pfd[1]);
		}
		close(pfd[1]);
		while (read(pfd[0], &blk, sizeof(blk)) == sizeof(blk)) {
			if (blk < CR_BLK)
				acked[blk] = 1;
			if (++got == kill_after)
				kill(pid, SIGKILL);
		}
		close(pfd[0]);
		CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
		/* killed, or finished everything before the kill */
		CU_ASSERT_TRUE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
			       (WIFEXITED(status) && WEXITSTATUS(status) == 0));

		s = t_reopen("writer-crash", &cr_opts);
		CU_ASSERT_FATAL(s != NULL);
		CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
		CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
		for (uint64_t b = 0; b < CR_BLK; b++) {
			uint64_t now = cr_seed(round, b);

			if (t_reads(c, v, b, now)) {
				state[b] = now;
			} else {
				/* only a write nobody acknowledged may still show the old data */
				CU_ASSERT_FALSE(acked[b]);
				CU_ASSERT_TRUE(t_reads(c, v, b, state[b]));
			}
		}
		CU_ASSERT_TRUE(t_fsck_clean(s));
		dedup_vol_close(v);
		dedup_ctx_close(c);
		dedup_store_close(s);
	}
}

/* ---- journal replay ------------------------------------------------------------------------ */

/* Find the container slot holding pattern @seed: *path and *off. */
static int find_block(const char *store, uint64_t seed, char *path, size_t len, off_t *off)
{
	char dir[PATH_MAX];
	uint64_t want[TB / 8], got[TB / 8];
	struct dirent *de;
	DIR *d;
	int found = 0;

	t_fill(want, seed);
	snprintf(dir, sizeof(dir), "%s/%s/containers", harness_tmpdir(), store);
	d = opendir(dir);
	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		int fd;

		if (de->d_name[0] == '.')
			continue;
		if ((size_t)snprintf(path, len, "%.2000s/%.200s", dir, de->d_name) >= len)
			continue;
		fd = open(path, O_RDONLY);
		for (off_t o = 0; fd >= 0 && pread(fd, got, TB, o) == TB; o += TB) {
			if (memcmp(got, want, TB) == 0) {
				*off = o;
				found = 1;
				break;
			}
		}
		if (fd >= 0)
			close(fd);
	}
	closedir(d);
	return found;
}

static int copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	ssize_t n;

	while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return in >= 0 && out >= 0 ? 0 : -1;
}

/*
 * After a crash the journal is all that holds the last writes. Simulate what a power loss can
 * leave: one block's data never written (its journal entry must be dropped, not pointed at
 * garbage), and a torn last entry. Then an old journal put back must not be replayed twice.
 */
static void test_journal_replay_checks_data(void)
{
	struct dedup_opts o = { .container_bytes = 64u << 10, .checkpoint_ms = 600000 };
	struct dedup_store *s = t_store("writer-jnl", &o);
	char jpath[PATH_MAX], jold[PATH_MAX], cpath[PATH_MAX];
	struct dedup_ctx *c;
	struct dedup_vol *v;
	struct stat st;
	uint8_t junk[TB];
	int pfd[2], status, fd;
	off_t off = 0;
	pid_t pid;
	char k;

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_EQUAL(dedup_vol_create(s, "v", 256 * TB), 0);
	dedup_store_close(s);
	CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
	fflush(stdout);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		s = t_reopen("writer-jnl", &o);
		if (!s || dedup_vol_open(s, "v", &v) || dedup_ctx_open(s, &c))
			_exit(2);
		for (uint64_t i = 0; i < 100; i++)
			if (t_write(c, v, i, 500 + i))
				_exit(3);
		if (write(pfd[1], "k", 1) != 1)
			_exit(4);
		pause(); /* killed here: nothing checkpointed, everything journaled */
		_exit(5);
	}
	close(pfd[1]);
	CU_ASSERT_EQUAL(read(pfd[0], &k, 1), 1);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(pfd[0]);
	CU_ASSERT_TRUE(WIFSIGNALED(status));

	snprintf(jpath, sizeof(jpath), "%s/writer-jnl/journal", harness_tmpdir());
	snprintf(jold, sizeof(jold), "%s/writer-jnl.journal", harness_tmpdir());
	CU_ASSERT_EQUAL_FATAL(stat(jpath, &st), 0);
	CU_ASSERT_TRUE(st.st_size >= 100 * 86);
	/* block 50's data never reached the disk */
	CU_ASSERT_FATAL(find_block("writer-jnl", 550, cpath, sizeof(cpath), &off));
	memset(junk, 0x5a, sizeof(junk));
	fd = open(cpath, O_WRONLY);
	CU_ASSERT_EQUAL(pwrite(fd, junk, TB, off), (ssize_t)TB);
	close(fd);
	/* and the last entry (block 99) was torn */
	CU_ASSERT_EQUAL(truncate(jpath, st.st_size - 10), 0);
	CU_ASSERT_EQUAL(copy_file(jpath, jold), 0);

	for (int pass = 0; pass < 2; pass++) {
		s = t_reopen("writer-jnl", NULL);
		CU_ASSERT_FATAL(s != NULL);
		CU_ASSERT_EQUAL_FATAL(dedup_ctx_open(s, &c), 0);
		CU_ASSERT_EQUAL_FATAL(dedup_vol_open(s, "v", &v), 0);
		for (uint64_t i = 0; i < 100; i++)
			CU_ASSERT_TRUE(t_reads(c, v, i, i == 50 || i == 99 ? 0 : 500 + i));
		CU_ASSERT_TRUE(t_fsck_clean(s));
		dedup_vol_close(v);
		dedup_ctx_close(c);
		dedup_store_close(s);
		/* the same journal again: its generation is committed, it must change nothing */
		CU_ASSERT_EQUAL(copy_file(jold, jpath), 0);
	}
}

static CU_TestInfo tests[] = {
	{ "commits_are_grouped", test_commits_are_grouped },
	{ "journal_replay_checks_data", test_journal_replay_checks_data },
	{ "kill9_keeps_acknowledged_writes", test_kill9_keeps_acknowledged_writes },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("dedup_writer", NULL, NULL, tests)
