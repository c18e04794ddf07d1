/*
 * blkback/qos_glue.h - blkbackd's side of the QoS library: per-vbd settings as JSON (the
 * control protocol's "set" fields and the persisted form) and their store in the pool.
 *
 * Settings are keyed by domain name + vdev, not domid, because domids change across guest
 * restarts: POOL/qos/<domain>-<vdev>.json.
 */
#ifndef SLUICE_BLKBACK_QOS_GLUE_H
#define SLUICE_BLKBACK_QOS_GLUE_H

#include "qos/qos.h"

#include <json.h>
#include <stddef.h>

/**
 * Overlay the settings fields present in @o ("weight", "cap_iops", "cap_bps", "reserve_iops",
 * "burst_iops", "burst_bps", "burst_seconds"; others are ignored) onto @s. Each must be a
 * non-negative integer in its field's range. Returns 0, or -EINVAL with one sentence in @why
 * (@s is then unchanged). Range and consistency against the device is qos_settings_check's job.
 */
int qos_glue_settings_from_json(struct json_object *o, struct qos_vbd_settings *s, char *why,
				size_t why_len);

/** A new JSON object with every field of @s (caller puts it); NULL on allocation failure. */
struct json_object *qos_glue_settings_to_json(const struct qos_vbd_settings *s);

/**
 * Write POOL/qos/<domain>-<vdev>.json into @buf. @domain and @vdev must be non-empty, without
 * '/', and not start with '.'. Returns 0, -EINVAL on a bad name, -ENAMETOOLONG if it won't fit.
 */
int qos_glue_settings_path(char *buf, size_t len, const char *pool, const char *domain,
			   const char *vdev);

/** Persist @s for (@domain, @vdev) atomically (temporary file + rename). 0 or -errno. */
int qos_glue_settings_save(const char *pool, const char *domain, const char *vdev,
			   const struct qos_vbd_settings *s);

/**
 * Load the persisted settings for (@domain, @vdev) into @s (defaults overlaid with the file).
 * Returns 0, -ENOENT when none were saved (@s set to the defaults), -EINVAL on a corrupt file.
 */
int qos_glue_settings_load(const char *pool, const char *domain, const char *vdev,
			   struct qos_vbd_settings *s);

#endif
