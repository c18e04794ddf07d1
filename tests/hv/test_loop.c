/* test_loop.c - the event loop: dispatch, modification and deletion from inside callbacks. */
#include "hv/loop.h"
#include "tests/harness.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

struct pipe_ctx {
	struct hv_loop *loop;
	int rfd;
	int wfd;
	int hits;
	struct pipe_ctx *victim; /**< deleted (and closed) by this callback when set */
	volatile sig_atomic_t *stop;
};

static void on_read(void *arg, uint32_t events)
{
	struct pipe_ctx *c = arg;
	char b;

	CU_ASSERT(events & EPOLLIN);
	CU_ASSERT_EQUAL(read(c->rfd, &b, 1), 1);
	c->hits++;
	if (c->victim) {
		CU_ASSERT_EQUAL(hv_loop_del(c->loop, c->victim->rfd), 0);
		close(c->victim->rfd);
		c->victim->rfd = -1;
	}
	if (c->stop)
		*c->stop = 1;
}

static void pipe_ctx_init(struct pipe_ctx *c, struct hv_loop *loop)
{
	int fds[2];

	CU_ASSERT_FATAL(pipe(fds) == 0);
	*c = (struct pipe_ctx){ .loop = loop, .rfd = fds[0], .wfd = fds[1] };
}

static void test_dispatch(void)
{
	struct hv_loop *loop;
	struct pipe_ctx c;
	volatile sig_atomic_t stop = 0;

	CU_ASSERT_FATAL(hv_loop_new(&loop) == 0);
	pipe_ctx_init(&c, loop);
	c.stop = &stop;
	CU_ASSERT_EQUAL(hv_loop_add(loop, c.rfd, EPOLLIN, on_read, &c), 0);
	CU_ASSERT_EQUAL(hv_loop_add(loop, c.rfd, EPOLLIN, on_read, &c), -EEXIST);
	CU_ASSERT_EQUAL(write(c.wfd, "x", 1), 1);
	CU_ASSERT_EQUAL(hv_loop_run(loop, &stop, 5000), 0);
	CU_ASSERT_EQUAL(c.hits, 1);
	/* Nothing pending: a run with a timeout returns without dispatching. */
	stop = 0;
	CU_ASSERT_EQUAL(hv_loop_run(loop, &stop, 10), 0);
	CU_ASSERT_EQUAL(c.hits, 1);
	CU_ASSERT_EQUAL(hv_loop_mod(loop, 12345, EPOLLIN), -ENOENT);
	CU_ASSERT_EQUAL(hv_loop_del(loop, c.rfd), 0);
	CU_ASSERT_EQUAL(hv_loop_del(loop, c.rfd), -ENOENT);
	close(c.rfd);
	close(c.wfd);
	hv_loop_free(loop);
}

/* Two fds ready in one batch; whichever runs first deletes the other: the other must not run. */
static void test_delete_in_batch(void)
{
	struct hv_loop *loop;
	struct pipe_ctx a, b;

	CU_ASSERT_FATAL(hv_loop_new(&loop) == 0);
	pipe_ctx_init(&a, loop);
	pipe_ctx_init(&b, loop);
	a.victim = &b;
	b.victim = &a;
	CU_ASSERT_EQUAL(hv_loop_add(loop, a.rfd, EPOLLIN, on_read, &a), 0);
	CU_ASSERT_EQUAL(hv_loop_add(loop, b.rfd, EPOLLIN, on_read, &b), 0);
	CU_ASSERT_EQUAL(write(a.wfd, "x", 1), 1);
	CU_ASSERT_EQUAL(write(b.wfd, "x", 1), 1);
	CU_ASSERT_EQUAL(hv_loop_run(loop, NULL, 50), 0);
	CU_ASSERT_EQUAL(a.hits + b.hits, 1);
	if (a.rfd >= 0) {
		hv_loop_del(loop, a.rfd);
		close(a.rfd);
	}
	if (b.rfd >= 0) {
		hv_loop_del(loop, b.rfd);
		close(b.rfd);
	}
	close(a.wfd);
	close(b.wfd);
	hv_loop_free(loop);
}

static CU_TestInfo tests[] = {
	{ "dispatch", test_dispatch },
	{ "delete_in_batch", test_delete_in_batch },
	CU_TEST_INFO_NULL,
};

TEST_SUITE("loop", NULL, NULL, tests)
