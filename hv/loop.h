/*
 * loop.h - a small epoll event loop for single-threaded daemons (hvsimd, blkbackd's control
 * thread). Callbacks may add and delete any fd, including their own, while the loop dispatches.
 */
#ifndef SLUICE_HV_LOOP_H
#define SLUICE_HV_LOOP_H

#include <signal.h>
#include <stdint.h>

struct hv_loop;

/** Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR) that fired on the fd. */
typedef void (*hv_loop_cb)(void *arg, uint32_t events);

int hv_loop_new(struct hv_loop **out);
void hv_loop_free(struct hv_loop *loop);

/** Watch @fd for @events (EPOLLIN and/or EPOLLOUT). Returns 0, -EEXIST, -ENOMEM or -errno. */
int hv_loop_add(struct hv_loop *loop, int fd, uint32_t events, hv_loop_cb cb, void *arg);

/** Change the events watched on @fd. Returns 0 or -ENOENT. */
int hv_loop_mod(struct hv_loop *loop, int fd, uint32_t events);

/**
 * Stop watching @fd (the caller still owns and closes it). Safe from inside any callback: a
 * deleted fd's pending events in the current batch are not delivered.
 */
int hv_loop_del(struct hv_loop *loop, int fd);

/**
 * Dispatch events until *stop becomes non-zero (checked after every batch; a signal handler may
 * set it) or @timeout_ms (-1: none) passes without any event. Returns 0 or -errno.
 */
int hv_loop_run(struct hv_loop *loop, volatile sig_atomic_t *stop, int timeout_ms);

#endif
