/*
 * target_dedup.h - the dedup target (target.h interface) over a volume of an open dedup store.
 */
#ifndef SLUICE_BLKBACK_TARGET_DEDUP_H
#define SLUICE_BLKBACK_TARGET_DEDUP_H

#include "blkback/target.h"

struct dedup_store;

/**
 * Open volume or snapshot @name of store @s (which must outlive the target) as a target:
 * logical and physical block 4096, discard granularity 4096, FLUSH makes completed writes
 * durable. A snapshot, or o->readonly, gives a read-only target. Each queue holds one dedup
 * context; its fd (an epoll fd) is readable when completions wait.
 * Returns 0, -ENOENT (no such volume), -EINVAL, -ENOMEM or -errno.
 */
int target_dedup_open(struct dedup_store *s, const char *name, const struct target_open_opts *o,
		      struct target **out);

#endif
