/*
 * loop.c - epoll dispatch with deferred frees: a watch deleted during a batch is marked dead and
 * freed after the batch, so a later event in the same batch never reaches a freed object.
 */
#include "hv/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define LOOP_BATCH 64

struct loop_watch {
	int fd;
	int dead;
	hv_loop_cb cb;
	void *arg;
	struct loop_watch *next; /**< all watches (live and dead) */
};

struct hv_loop {
	int epfd;
	struct loop_watch *watches;
	int dispatching; /**< inside a batch: frees are deferred */
};

int hv_loop_new(struct hv_loop **out)
{
	struct hv_loop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return -ENOMEM;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		int rc = -errno;

		free(loop);
		return rc;
	}
	*out = loop;
	return 0;
}

static void loop_reap(struct hv_loop *loop)
{
	struct loop_watch **pp = &loop->watches;

	while (*pp) {
		struct loop_watch *w = *pp;

		if (w->dead) {
			*pp = w->next;
			free(w);
		} else {
			pp = &w->next;
		}
	}
}

void hv_loop_free(struct hv_loop *loop)
{
	if (!loop)
		return;
	for (struct loop_watch *w = loop->watches; w; w = w->next)
		w->dead = 1;
	loop_reap(loop);
	close(loop->epfd);
	free(loop);
}

static struct loop_watch *loop_find(struct hv_loop *loop, int fd)
{
	for (struct loop_watch *w = loop->watches; w; w = w->next)
		if (!w->dead && w->fd == fd)
			return w;
	return NULL;
}

int hv_loop_add(struct hv_loop *loop, int fd, uint32_t events, hv_loop_cb cb, void *arg)
{
	struct epoll_event ev = { .events = events };
	struct loop_watch *w;

	if (loop_find(loop, fd))
		return -EEXIST;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->cb = cb;
	w->arg = arg;
	ev.data.ptr = w;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int rc = -errno;

		free(w);
		return rc;
	}
	w->next = loop->watches;
	loop->watches = w;
	return 0;
}

int hv_loop_mod(struct hv_loop *loop, int fd, uint32_t events)
{
	struct loop_watch *w = loop_find(loop, fd);
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOENT;
	ev.data.ptr = w;
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int hv_loop_del(struct hv_loop *loop, int fd)
{
	struct loop_watch *w = loop_find(loop, fd);

	if (!w)
		return -ENOENT;
	/* The fd may already be closed by the caller; the kernel then dropped it on its own. */
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	w->dead = 1;
	if (!loop->dispatching)
		loop_reap(loop);
	return 0;
}

int hv_loop_run(struct hv_loop *loop, volatile sig_atomic_t *stop, int timeout_ms)
{
	struct epoll_event evs[LOOP_BATCH];

	while (!stop || !*stop) {
		int n = epoll_wait(loop->epfd, evs, LOOP_BATCH, timeout_ms);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0 && timeout_ms >= 0)
			return 0;
		loop->dispatching = 1;
		for (int i = 0; i < n; i++) {
			struct loop_watch *w = evs[i].data.ptr;

			if (!w->dead)
				w->cb(w->arg, evs[i].events);
		}
		loop->dispatching = 0;
		loop_reap(loop);
	}
	return 0;
}
