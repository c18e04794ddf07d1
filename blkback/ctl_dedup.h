/*
 * ctl_dedup.h - the JSON shapes of the dedup store's numbers, shared by blkbackd's control
 * answers (ctl_dedup.c) and blkctl's offline commands, so both print the same fields.
 */
#ifndef SLUICE_BLKBACK_CTL_DEDUP_H
#define SLUICE_BLKBACK_CTL_DEDUP_H

#include <json-c/json.h>

#include "dedup/dedup.h"

/** Pool statistics: logical_bytes, stored_bytes, zero_blocks, unique_blocks, dedup_ratio... */
json_object *bb_dedup_stats_json(const struct dedup_stats *st);

/**
 * Every volume and snapshot of @s (after applying pending reference drops) as an array of
 * {name, origin, size, mapped_bytes, share_bytes, readonly}. NULL with *rc_out = -errno on error.
 */
json_object *bb_dedup_vols_json(struct dedup_store *s, int *rc_out);

/** An fsck report, with "clean". */
json_object *bb_dedup_fsck_json(const struct dedup_fsck_report *r);

#endif
