/*
 * target.c - the generic target layer: dispatch through each type's ops table, and the helpers
 * every type shares. Nothing here knows about files, devices or engines.
 */
#include "blkback/target.h"

#include <errno.h>
#include <string.h>

#include "blkback/target_internal.h"

void target_close(struct target *t)
{
	if (t)
		t->ops->close(t);
}

int target_info(struct target *t, struct target_info *info)
{
	return t->ops->info(t, info);
}

int target_resize(struct target *t, uint64_t new_size_bytes)
{
	if (!t->ops->resize)
		return -EOPNOTSUPP;
	return t->ops->resize(t, new_size_bytes);
}

int target_queue_open(struct target *t, uint32_t depth, struct target_queue **out)
{
	if (depth == 0)
		return -EINVAL;
	return t->ops->queue_open(t, depth, out);
}

void target_queue_close(struct target_queue *q)
{
	if (q)
		q->target->ops->queue_close(q);
}

int target_submit(struct target_queue *q, struct target_io *io)
{
	return q->target->ops->submit(q, io);
}

int target_queue_commit(struct target_queue *q)
{
	return q->target->ops->commit(q);
}

int target_queue_poll(struct target_queue *q, int wait)
{
	return q->target->ops->poll(q, wait);
}

int target_queue_fd(struct target_queue *q)
{
	return q->target->ops->queue_fd(q);
}

uint32_t target_queue_inflight(const struct target_queue *q)
{
	return q->inflight;
}

int target_engine_parse(const char *s, enum target_engine *engine)
{
	if (!s)
		return -EINVAL;
	if (strcmp(s, "io_uring") == 0) {
		*engine = TARGET_ENGINE_IO_URING;
		return 0;
	}
	if (strcmp(s, "libaio") == 0) {
		*engine = TARGET_ENGINE_LIBAIO;
		return 0;
	}
	return -EINVAL;
}
