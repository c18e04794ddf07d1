/*
 * fio_blkfront.c - fio external ioengine that runs fio as a guest domain of the sim, doing its
 * I/O through libblkfront on the guest's virtual block devices.
 *
 *   fio --ioengine=external:build/lib/fio-blkfront.so --hv_dir=DIR --domain=NAME \
 *       --filename=xvda[:xvdb...] --rw=randrw --bs=4k --iodepth=32 --verify=crc32c --name=j
 *
 * Built against the headers of the installed fio (tools/fio-src.sh); fio checks
 * FIO_IOOPS_VERSION when it loads us.
 *
 * - Each file name is a virtual device of the domain ("xvda", or a decimal devid); its size
 *   comes from the backend, so no size= is needed. Several files in a job are several vdevs.
 * - read, write, trim and fsync/fdatasync map to BLKIF READ, WRITE, DISCARD and
 *   FLUSH_DISKCACHE. A flush on a backend without feature-flush-cache completes at once: such a
 *   backend has no volatile cache, every acknowledged write is already durable.
 * - Asynchronous: queue() puts a request on the ring and returns FIO_Q_QUEUED, commit()
 *   publishes and notifies (once per batch, as ring.h's notification hold-off allows),
 *   getevents() polls the devices' event fds within fio's timeout.
 * - fio's I/O buffers are allocated in guest memory (the iomem_alloc hook), so each data page is
 *   granted to the backend in place: no copy on either side.
 * - Transport options, each capped by what the backend offers (defaults: everything on):
 *   --queues=N (rings, default 1), --ring_order=0..4 (default 4: 512 slots per ring),
 *   --indirect_segs=0..256 (default 256; 0 = direct 11-page requests only), --persistent=0|1
 *   (default 1). The negotiated values are logged on stderr when a device connects.
 *   --poll_us=N watches the rings N microseconds before sleeping on the event channel
 *   (default 0: always sleep).
 *
 * Processes and threads. A domain's guest memory and grant table belong to one live process
 * (hv_guest_open returns -EBUSY to a second one). fio runs each job in its own process by
 * default, so this engine switches every job to thread mode (as fio's rbd engine does) from its
 * setup hook, which fio calls in the main process before it starts the jobs: all jobs of one fio
 * run then share one guest context per (hv_dir, domain) and one connection per vdev, which stays
 * up until fio unloads the engine (after its last job). A vdev may
 * be named by several jobs that run one after another (stonewall); two jobs using one vdev AT THE
 * SAME TIME are refused with EBUSY (a device belongs to one thread; use one job with a deeper
 * iodepth, or one vdev per job). With create_serialize=0 fio calls setup only in the job itself,
 * after it chose process or thread: add --thread there, or the second job's process fails with
 * EBUSY ("domain in use by another process").
 */
#include "fio.h"
#include "optgroup.h"

#include "hv/blkfront.h"
#include "hv/hv.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bfe_options {
	void *pad; /* fio needs every option at a non-zero offset */
	char *hv_dir;
	char *domain;
	unsigned int queues;
	unsigned int ring_order;
	unsigned int indirect_segs;
	unsigned int persistent;
	unsigned int poll_us;
	unsigned int timeout_ms;
};

/* One guest context per (hv_dir, domain) in this fio process. */
struct bfe_ctx {
	struct bfe_ctx *next;
	char *dir;
	char *domain;
	struct hv *hv;
	unsigned int refs;
};

/* One connected vdev, kept while any job names it. */
struct bfe_dev {
	struct bfe_dev *next;
	struct bfe_ctx *ctx;
	char vdev[32];
	struct blkfront *bf;      /* NULL once closed because a job left requests behind */
	unsigned int refs;
	struct thread_data *user; /* the job between its open_file and close_file */
};

/* Per job. */
struct bfe_td {
	struct bfe_ctx *ctx;
	struct io_u **done;     /* completed, not yet returned: a ring of done_cap */
	unsigned int done_cap, done_head, done_nr;
	struct io_u **events;   /* what the last getevents returned, for event() */
	struct bfe_dev **devs;  /* devices this job has open, polled in getevents */
	struct pollfd *pfds;
	unsigned int nr_devs, max_devs;
	struct bfe_dev **owned; /* devices this job holds a reference on */
	unsigned int nr_owned;
	uint32_t mem_frame, mem_frames;
	bool have_mem;
	bool noflush_noted;
	bool dying;             /* cleanup started: fio has freed the io_us */
};

/* Guards the registries and every call that allocates from a shared guest context. */
static pthread_mutex_t bfe_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bfe_ctx *bfe_ctxs;
static struct bfe_dev *bfe_devs;

static struct bfe_options *bfe_opts(struct thread_data *td)
{
	return td->eo;
}

/* Must hold bfe_lock. */
static int bfe_ctx_get(struct thread_data *td, struct bfe_ctx **out)
{
	struct bfe_options *o = bfe_opts(td);
	struct bfe_ctx *c;
	int err;

	if (!o->hv_dir || !*o->hv_dir || !o->domain || !*o->domain) {
		log_err("fio-blkfront: --hv_dir=DIR and --domain=NAME are required\n");
		return -EINVAL;
	}
	for (c = bfe_ctxs; c; c = c->next) {
		if (!strcmp(c->dir, o->hv_dir) && !strcmp(c->domain, o->domain)) {
			c->refs++;
			*out = c;
			return 0;
		}
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dir = strdup(o->hv_dir);
	c->domain = strdup(o->domain);
	if (!c->dir || !c->domain) {
		err = -ENOMEM;
		goto fail;
	}
	err = hv_guest_open(&c->hv, o->hv_dir, o->domain);
	if (err) {
		if (err == -EBUSY)
			log_err("fio-blkfront: domain %s is in use by another process (with "
				"create_serialize=0 add --thread so jobs share it)\n",
				o->domain);
		else
			log_err("fio-blkfront: cannot act as domain %s of %s: %s\n", o->domain,
				o->hv_dir, hv_strerror(err));
		goto fail;
	}
	c->refs = 1;
	c->next = bfe_ctxs;
	bfe_ctxs = c;
	*out = c;
	return 0;

fail:
	free(c->dir);
	free(c->domain);
	free(c);
	return err;
}

/* Must hold bfe_lock. */
static void bfe_ctx_put(struct bfe_ctx *c)
{
	struct bfe_ctx **pp;

	if (--c->refs)
		return;
	for (pp = &bfe_ctxs; *pp != c; pp = &(*pp)->next)
		;
	*pp = c->next;
	hv_close(c->hv);
	free(c->dir);
	free(c->domain);
	free(c);
}

static void bfe_done(void *arg, uint64_t id, int status);
static void bfe_resized(void *arg, uint64_t old_sectors, uint64_t new_sectors);

/* Must hold bfe_lock. Remember that the job holds a reference on @d. */
static int bfe_own(struct bfe_td *t, struct bfe_dev *d)
{
	struct bfe_dev **n = realloc(t->owned, (t->nr_owned + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	t->owned = n;
	t->owned[t->nr_owned++] = d;
	return 0;
}

/* Must hold bfe_lock. Find or connect @vdev; the job then holds a reference on it. */
static int bfe_dev_get(struct thread_data *td, struct bfe_td *t, const char *vdev,
		       struct bfe_dev **out)
{
	struct bfe_options *o = bfe_opts(td);
	struct blkfront_opts bo = { 0 };
	struct bfe_ctx *c = t->ctx;
	struct bfe_dev *d;
	int err;

	for (d = bfe_devs; d; d = d->next) {
		if (d->ctx == c && !strcmp(d->vdev, vdev)) {
			if (!d->bf) {
				log_err("fio-blkfront: %s was closed after an earlier job failed\n",
					vdev);
				return -ENODEV;
			}
			if (bfe_own(t, d))
				return -ENOMEM;
			d->refs++;
			*out = d;
			return 0;
		}
	}
	if (strlen(vdev) >= sizeof(d->vdev))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	snprintf(d->vdev, sizeof(d->vdev), "%s", vdev);
	d->ctx = c;
	bo.queues = o->queues;
	bo.ring_order = o->ring_order;
	bo.indirect_segs = o->indirect_segs;
	bo.persistent = o->persistent != 0;
	bo.timeout_ms = (int)o->timeout_ms;
	bo.done = bfe_done;
	bo.resized = bfe_resized;
	bo.arg = d;
	if (bfe_own(t, d)) {
		free(d);
		return -ENOMEM;
	}
	err = blkfront_open(&d->bf, c->hv, vdev, &bo);
	if (err) {
		log_err("fio-blkfront: %s of domain %s: %s\n", vdev, c->domain,
			err == -ENOENT ? "no such virtual device (not attached?)" : strerror(-err));
		t->nr_owned--;
		free(d);
		return err;
	}
	c->refs++; /* the device uses the context until it is closed */
	d->refs = 1;
	d->next = bfe_devs;
	bfe_devs = d;
	*out = d;
	return 0;
}

/*
 * Must hold bfe_lock. A device no job names any more stays connected (idle) until fio unloads
 * the engine: with create_serialize=0 a later job opens it only when it starts, and should find
 * the same connection (and a resize seen meanwhile), not a new handshake.
 */
static void bfe_dev_put(struct bfe_dev *d)
{
	d->refs--;
}

/* fio unloads the engine after its last job (dlclose) or at exit: disconnect everything. */
static void __attribute__((destructor)) bfe_unload(void)
{
	pthread_mutex_lock(&bfe_lock);
	while (bfe_devs) {
		struct bfe_dev *d = bfe_devs;

		bfe_devs = d->next;
		if (d->bf)
			blkfront_close(d->bf);
		bfe_ctx_put(d->ctx);
		free(d);
	}
	pthread_mutex_unlock(&bfe_lock);
}

/* The job's state, created by whichever hook fio calls first (setup, init or iomem_alloc). */
static struct bfe_td *bfe_td_get(struct thread_data *td)
{
	struct bfe_td *t = td->io_ops_data;
	unsigned int depth = td->o.iodepth ? td->o.iodepth : 1;
	int err;

	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->done_cap = depth + 1;
	t->done = calloc(t->done_cap, sizeof(*t->done));
	t->events = calloc(t->done_cap, sizeof(*t->events));
	t->max_devs = td->o.nr_files ? td->o.nr_files : 1;
	t->devs = calloc(t->max_devs, sizeof(*t->devs));
	t->pfds = calloc(t->max_devs, sizeof(*t->pfds));
	if (!t->done || !t->events || !t->devs || !t->pfds)
		goto fail;
	pthread_mutex_lock(&bfe_lock);
	err = bfe_ctx_get(td, &t->ctx);
	pthread_mutex_unlock(&bfe_lock);
	if (err) {
		td_verror(td, -err, "hv_guest_open");
		goto fail;
	}
	td->io_ops_data = t;
	return t;

fail:
	free(t->done);
	free(t->events);
	free(t->devs);
	free(t->pfds);
	free(t);
	return NULL;
}

/*
 * Completion from libblkfront, called inside blkfront_process() in the thread of the job that
 * is using the device.
 */
static void bfe_done(void *arg, uint64_t id, int status)
{
	struct bfe_dev *d = arg;
	struct io_u *io_u = (struct io_u *)(uintptr_t)id;
	struct bfe_td *t = d->user ? d->user->io_ops_data : NULL;

	/* A job being torn down: fio already freed its io_us, there is nobody to tell. */
	if (!t || t->dying)
		return;
	if (t->done_nr == t->done_cap) {
		/* Cannot happen: fio never has more than iodepth I/Os queued. */
		log_err("fio-blkfront: %s: completion with nowhere to go\n", d->vdev);
		return;
	}
	io_u->error = status < 0 ? -status : 0;
	if (!status)
		io_u->resid = 0;
	t->done[(t->done_head + t->done_nr++) % t->done_cap] = io_u;
}

static void bfe_resized(void *arg, uint64_t old_sectors, uint64_t new_sectors)
{
	struct bfe_dev *d = arg;

	/* Straight to stderr: fio's log_err goes into --output too, and would break a json report. */
	fprintf(stderr, "fio-blkfront: %s: capacity changed from %llu to %llu bytes\n", d->vdev,
		(unsigned long long)old_sectors * 512, (unsigned long long)new_sectors * 512);
}

static int fio_blkfront_setup(struct thread_data *td)
{
	struct bfe_td *t;
	struct fio_file *f;
	unsigned int i;
	int err = 0;

	/* See the top of the file: one process holds the guest context, jobs are threads. */
	td->o.use_thread = 1;
	t = bfe_td_get(td);
	if (!t)
		return 1;
	pthread_mutex_lock(&bfe_lock);
	for_each_file(td, f, i) {
		struct bfe_dev *d = FILE_ENG_DATA(f);
		struct blkfront_info info;

		if (!d) {
			err = bfe_dev_get(td, t, f->file_name, &d);
			if (err)
				break;
			FILE_SET_ENG_DATA(f, d);
		}
		if (!d->bf) {
			err = -ENODEV;
			break;
		}
		/* An idle connection may hold a resize nobody processed yet. */
		if (!d->user)
			blkfront_process(d->bf);
		blkfront_info(d->bf, &info);
		f->real_file_size = info.sectors * 512;
		fio_file_set_size_known(f);
	}
	pthread_mutex_unlock(&bfe_lock);
	if (err) {
		td_verror(td, -err, "blkfront_open");
		return 1;
	}
	return 0;
}

static int fio_blkfront_init(struct thread_data *td)
{
	return bfe_td_get(td) ? 0 : 1;
}

static void fio_blkfront_cleanup(struct thread_data *td)
{
	struct bfe_td *t = td->io_ops_data;

	if (!t)
		return;
	/* fio closed and freed the files and the io_us before calling us: work from our list. */
	t->dying = true;
	pthread_mutex_lock(&bfe_lock);
	for (unsigned int i = 0; i < t->nr_owned; i++) {
		struct bfe_dev *d = t->owned[i];

		if (d->user == td) {
			if (d->bf && blkfront_inflight(d->bf)) {
				/* Requests fio gave up on (after an error) may still have the
				 * backend in the middle of our pages: disconnect the device. */
				log_err("fio-blkfront: %s: job %s ended with %u requests in flight; "
					"disconnecting it\n",
					d->vdev, td->o.name, blkfront_inflight(d->bf));
				blkfront_close(d->bf);
				d->bf = NULL;
			}
			d->user = NULL;
		}
		bfe_dev_put(d);
	}
	if (t->have_mem)
		hv_guest_free_frames(t->ctx->hv, t->mem_frame, t->mem_frames);
	bfe_ctx_put(t->ctx);
	pthread_mutex_unlock(&bfe_lock);
	free(t->owned);
	free(t->done);
	free(t->events);
	free(t->devs);
	free(t->pfds);
	free(t);
	td->io_ops_data = NULL;
}

static int fio_blkfront_open_file(struct thread_data *td, struct fio_file *f)
{
	struct bfe_td *t = bfe_td_get(td);
	struct bfe_dev *d;
	int err = 0;

	if (!t)
		return 1;
	pthread_mutex_lock(&bfe_lock);
	d = FILE_ENG_DATA(f);
	if (!d) {
		err = bfe_dev_get(td, t, f->file_name, &d);
		if (!err)
			FILE_SET_ENG_DATA(f, d);
	}
	if (!err && !d->bf)
		err = -ENODEV;
	if (!err && d->user && d->user != td) {
		log_err("fio-blkfront: %s is in use by job %s at the same time; use one job with "
			"a deeper iodepth, or one vdev per job\n",
			d->vdev, d->user->o.name);
		err = -EBUSY;
	}
	if (!err && t->nr_devs == t->max_devs) {
		struct bfe_dev **nd = realloc(t->devs, 2 * t->max_devs * sizeof(*nd));
		struct pollfd *np = nd ? realloc(t->pfds, 2 * t->max_devs * sizeof(*np)) : NULL;

		if (nd)
			t->devs = nd;
		if (np)
			t->pfds = np;
		if (np)
			t->max_devs *= 2;
		else
			err = -ENOMEM;
	}
	if (!err) {
		d->user = td;
		t->devs[t->nr_devs] = d;
		t->pfds[t->nr_devs].fd = blkfront_fd(d->bf);
		t->pfds[t->nr_devs].events = POLLIN;
		t->nr_devs++;
	}
	pthread_mutex_unlock(&bfe_lock);
	if (err) {
		td_verror(td, -err, "open_file");
		return 1;
	}
	return 0;
}

static int fio_blkfront_close_file(struct thread_data *td, struct fio_file *f)
{
	struct bfe_td *t = td->io_ops_data;
	struct bfe_dev *d = FILE_ENG_DATA(f);

	if (!t || !d)
		return 0;
	pthread_mutex_lock(&bfe_lock);
	for (unsigned int i = 0; i < t->nr_devs; i++) {
		if (t->devs[i] != d)
			continue;
		t->nr_devs--;
		t->devs[i] = t->devs[t->nr_devs];
		t->pfds[i] = t->pfds[t->nr_devs];
		break;
	}
	if (d->user == td)
		d->user = NULL;
	pthread_mutex_unlock(&bfe_lock);
	return 0;
}

static int fio_blkfront_get_file_size(struct thread_data *td, struct fio_file *f)
{
	struct bfe_dev *d = FILE_ENG_DATA(f);
	struct blkfront_info info;

	if (fio_file_size_known(f))
		return 0;
	if (!d || !d->bf) {
		/* Only reached without setup: fio_blkfront_setup fills every file. */
		td_verror(td, ENODEV, "get_file_size");
		return 1;
	}
	blkfront_info(d->bf, &info);
	f->real_file_size = info.sectors * 512;
	fio_file_set_size_known(f);
	return 0;
}

static int fio_blkfront_iomem_alloc(struct thread_data *td, size_t total)
{
	struct bfe_td *t = bfe_td_get(td);
	uint32_t frames = (uint32_t)((total + HV_PAGE_SIZE - 1) / HV_PAGE_SIZE);
	size_t len;
	uint8_t *mem;
	int err;

	if (!t)
		return 1;
	if (!frames)
		frames = 1;
	pthread_mutex_lock(&bfe_lock);
	err = hv_guest_alloc_frames(t->ctx->hv, frames, &t->mem_frame);
	pthread_mutex_unlock(&bfe_lock);
	if (err) {
		log_err("fio-blkfront: cannot allocate %zu bytes of guest memory for I/O buffers "
			"(%s); give the domain more --mem or lower iodepth/bs\n",
			total, hv_strerror(err));
		return 1;
	}
	mem = hv_guest_mem(t->ctx->hv, &len);
	t->mem_frames = frames;
	t->have_mem = true;
	td->orig_buffer = (char *)mem + (size_t)t->mem_frame * HV_PAGE_SIZE;
	return 0;
}

static void fio_blkfront_iomem_free(struct thread_data *td)
{
	struct bfe_td *t = td->io_ops_data;

	if (!t || !t->have_mem)
		return;
	pthread_mutex_lock(&bfe_lock);
	hv_guest_free_frames(t->ctx->hv, t->mem_frame, t->mem_frames);
	pthread_mutex_unlock(&bfe_lock);
	t->have_mem = false;
	td->orig_buffer = NULL;
}

static enum fio_q_status fio_blkfront_queue(struct thread_data *td, struct io_u *io_u)
{
	struct bfe_td *t = td->io_ops_data;
	struct bfe_dev *d = FILE_ENG_DATA(io_u->file);
	uint64_t id = (uintptr_t)io_u;
	struct iovec iov = { io_u->xfer_buf, io_u->xfer_buflen };
	int err;

	fio_ro_check(td, io_u);
	if (!d || d->user != td || !d->bf) {
		io_u->error = EBADF;
		return FIO_Q_COMPLETED;
	}
	if ((io_u->offset | io_u->xfer_buflen) % 512) {
		io_u->error = EINVAL;
		return FIO_Q_COMPLETED;
	}
	switch (io_u->ddir) {
	case DDIR_READ:
		err = blkfront_readv(d->bf, io_u->offset / 512, &iov, 1, id);
		break;
	case DDIR_WRITE:
		err = blkfront_writev(d->bf, io_u->offset / 512, &iov, 1, id);
		break;
	case DDIR_TRIM:
		err = blkfront_discard(d->bf, io_u->offset / 512, io_u->xfer_buflen / 512, id);
		break;
	case DDIR_SYNC:
	case DDIR_DATASYNC:
	case DDIR_SYNC_FILE_RANGE:
		err = blkfront_flush(d->bf, id);
		if (err == -EOPNOTSUPP) {
			if (!t->noflush_noted)
				fprintf(stderr, "fio-blkfront: %s has no volatile cache (no "
						"feature-flush-cache): syncs complete at once\n",
					d->vdev);
			t->noflush_noted = true;
			return FIO_Q_COMPLETED;
		}
		break;
	default:
		io_u->error = EINVAL;
		return FIO_Q_COMPLETED;
	}
	if (err == -EAGAIN)
		return FIO_Q_BUSY; /* every request slot in flight: fio reaps and retries */
	if (err) {
		io_u->error = -err;
		return FIO_Q_COMPLETED;
	}
	return FIO_Q_QUEUED;
}

static int fio_blkfront_commit(struct thread_data *td)
{
	struct bfe_td *t = td->io_ops_data;
	int ret = 0;

	for (unsigned int i = 0; i < t->nr_devs; i++) {
		int err = blkfront_kick(t->devs[i]->bf);

		if (err && !ret)
			ret = err;
	}
	return ret;
}

/* Run every device's pending work; completions land in t->done. */
static int bfe_process_all(struct bfe_td *t)
{
	int ret = 0;

	for (unsigned int i = 0; i < t->nr_devs; i++) {
		int err = blkfront_process(t->devs[i]->bf);

		if (err < 0 && !ret)
			ret = err;
	}
	return ret;
}

/* Watch the rings (shared memory only) for up to @us; true as soon as one has responses. */
static bool bfe_spin(struct bfe_td *t, unsigned int us)
{
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (unsigned int i = 0; i < t->nr_devs; i++)
			if (t->devs[i]->bf && blkfront_has_responses(t->devs[i]->bf))
				return true;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - t0.tv_sec) * 1000000 + (now.tv_nsec - t0.tv_nsec) / 1000 < us);
	return false;
}

static int fio_blkfront_getevents(struct thread_data *td, unsigned int min, unsigned int max,
				  const struct timespec *ts)
{
	struct bfe_td *t = td->io_ops_data;
	unsigned int poll_us = bfe_opts(td)->poll_us;
	struct timespec start;
	unsigned int n;
	int err;

	if (ts)
		clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		/* Without a timeout from fio, still wake each second: a job told to stop (signal)
		 * must not wait forever on a backend that is gone. */
		int wait_ms = 1000, ready;

		err = bfe_process_all(t);
		if (t->done_nr >= min || (err && t->done_nr) || (td->terminate && t->done_nr))
			break;
		if (err)
			return err;
		if (ts) {
			struct timespec now;
			int64_t left_ns;

			clock_gettime(CLOCK_MONOTONIC, &now);
			left_ns = (int64_t)(ts->tv_sec - (now.tv_sec - start.tv_sec)) * 1000000000 +
				  (ts->tv_nsec - (now.tv_nsec - start.tv_nsec));
			if (left_ns <= 0)
				break;
			if (left_ns < 1000000000)
				wait_ms = (int)((left_ns + 999999) / 1000000);
		}
		if (poll_us && bfe_spin(t, poll_us))
			continue;
		ready = poll(t->pfds, t->nr_devs, wait_ms);
		if (ready < 0 && errno != EINTR)
			return -errno;
		if (ready == 0 && td->terminate && !t->done_nr) {
			/* Stopping, and a whole second without an answer: fio waits for every
			 * request it queued, so give up on them (the devices become unusable). */
			fprintf(stderr, "fio-blkfront: job %s stopping; the backend does not answer, "
					"cancelling its requests\n",
				td->o.name);
			for (unsigned int i = 0; i < t->nr_devs; i++)
				if (t->devs[i]->bf && blkfront_inflight(t->devs[i]->bf))
					blkfront_fail(t->devs[i]->bf, -ECANCELED);
		}
	}
	n = t->done_nr < max ? t->done_nr : max;
	for (unsigned int i = 0; i < n; i++) {
		t->events[i] = t->done[t->done_head];
		t->done_head = (t->done_head + 1) % t->done_cap;
	}
	t->done_nr -= n;
	return (int)n;
}

static struct io_u *fio_blkfront_event(struct thread_data *td, int event)
{
	struct bfe_td *t = td->io_ops_data;

	return t->events[event];
}

static struct fio_option options[] = {
	{
		.name = "hv_dir",
		.lname = "sim directory",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct bfe_options, hv_dir),
		.help = "Directory of the running hvsimd (hvsimd --dir)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "domain",
		.lname = "guest domain",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct bfe_options, domain),
		.help = "Guest domain (name or domid) whose virtual disks the files name",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "queues",
		.lname = "blkif rings per device",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct bfe_options, queues),
		.help = "Rings (multi-queue) to ask for per device; capped by the backend",
		.def = "1",
		.minval = 1,
		.maxval = BLKFRONT_MAX_QUEUES,
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "ring_order",
		.lname = "blkif ring page order",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct bfe_options, ring_order),
		.help = "log2 of pages per ring (0: 32 slots .. 4: 512); capped by the backend",
		.def = "4",
		.minval = 0,
		.maxval = BLKFRONT_MAX_RING_ORDER,
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "indirect_segs",
		.lname = "pages per indirect request",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct bfe_options, indirect_segs),
		.help = "Use indirect descriptors with up to this many pages per request (0: only "
			"direct 11-page requests); capped by the backend",
		.def = "256",
		.minval = 0,
		.maxval = BLKFRONT_MAX_SEGS,
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "persistent",
		.lname = "persistent grants",
		.type = FIO_OPT_BOOL,
		.off1 = offsetof(struct bfe_options, persistent),
		.help = "Offer persistent grants (used if the backend offers them too)",
		.def = "1",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "poll_us",
		.lname = "poll before sleeping",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct bfe_options, poll_us),
		.help = "Watch the rings this many microseconds before sleeping on the event channel "
			"(lower latency at low depth, burns a CPU meanwhile; 0 = off)",
		.def = "0",
		.minval = 0,
		.maxval = 1000000,
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "connect_timeout_ms",
		.lname = "handshake step timeout",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct bfe_options, timeout_ms),
		.help = "Bound in ms on each step of the xenbus handshake",
		.def = "10000",
		.minval = 1,
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = NULL,
	},
};

/* fio finds the engine through this symbol (dlsym "ioengine"); the only one we export. */
__attribute__((visibility("default"))) struct ioengine_ops ioengine = {
	.name = "blkfront",
	.version = FIO_IOOPS_VERSION,
	.flags = FIO_DISKLESSIO | FIO_NODISKUTIL | FIO_NOEXTEND | FIO_MEMALIGN,
	.setup = fio_blkfront_setup,
	.init = fio_blkfront_init,
	.queue = fio_blkfront_queue,
	.commit = fio_blkfront_commit,
	.getevents = fio_blkfront_getevents,
	.event = fio_blkfront_event,
	.cleanup = fio_blkfront_cleanup,
	.open_file = fio_blkfront_open_file,
	.close_file = fio_blkfront_close_file,
	.get_file_size = fio_blkfront_get_file_size,
	.iomem_alloc = fio_blkfront_iomem_alloc,
	.iomem_free = fio_blkfront_iomem_free,
	.options = options,
	.option_struct_size = sizeof(struct bfe_options),
};
