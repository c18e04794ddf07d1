/*
 * target_internal.h - what every target type shares with the generic layer (target.c).
 *
 * A target type embeds struct target as the first member of its own target struct and struct
 * target_queue as the first member of its queue struct, so target.c dispatches through
 * t->ops / q->target->ops and casts back are plain container_of-free pointer conversions.
 */
#ifndef SLUICE_BLKBACK_TARGET_INTERNAL_H
#define SLUICE_BLKBACK_TARGET_INTERNAL_H

#include <stdint.h>

#include "blkback/target.h"

struct target {
	const struct target_ops *ops; /**< first member: the type's ops table */
};

struct target_queue {
	struct target *target; /**< the target this queue belongs to */
	/**
	 * I/Os accepted by submit and not yet completed (queued ones included). Maintained by the
	 * target type on the queue's own thread; read by target_queue_inflight().
	 */
	uint32_t inflight;
};

#endif
