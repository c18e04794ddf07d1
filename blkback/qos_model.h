/*
 * blkback/qos_model.h - the pool's device cost model: POOL/qos/device.json.
 *
 * One file per pool, because one pool sits on one device and the scheduler has one model per
 * device (qos/qos.h). `blkctl calibrate VOL` measures the device and writes it; an operator may
 * instead write the six coefficients by hand ("given in the pool's config"). blkbackd loads it
 * at start and falls back to its default model when there is none.
 *
 * The file is a JSON object (json-c):
 *   "rd_page_ns", "rd_seq_base_ns", "rd_rand_base_ns",
 *   "wr_page_ns", "wr_seq_base_ns", "wr_rand_base_ns"   the model (struct qos_cost_model), ns;
 *                                                        the only fields the loader needs
 *   "source"      who wrote it: "calibrate VOL", "config", ...
 *   "saved"       unix time of the save
 *   "calib"       the probe results behind the model (struct qos_calib), for the record
 * Fields the loader does not know are ignored, so a later writer may add more.
 */
#ifndef SLUICE_BLKBACK_QOS_MODEL_H
#define SLUICE_BLKBACK_QOS_MODEL_H

#include "qos/qos.h"

#include <stddef.h>

/** Largest coefficient accepted: a second per page or per request is no real device. */
#define QOS_MODEL_COEF_MAX_NS QOS_NS_PER_SEC

/** Write POOL/qos/device.json into @buf. Returns 0, -EINVAL (@pool NULL) or -ENAMETOOLONG. */
int qos_model_path(char *buf, size_t len, const char *pool);

/**
 * Save @m (and the probe results @c when non-NULL, for the record) with @source (e.g.
 * "calibrate VOL" or "config"; NULL = "unknown") and the time of the save. Makes POOL/qos when
 * missing. The file is replaced atomically (temporary file, fsync, rename), so a concurrent
 * loader sees the old model or the new one, never half of one. Returns 0 or -errno (-ENOMEM,
 * -ENOSPC, -EACCES, ...). The model is not checked: save what you mean to load.
 */
int qos_model_save(const char *pool, const struct qos_cost_model *m, const struct qos_calib *c,
		   const char *source);

/**
 * Load the pool's model into @m. Returns:
 *   0        @m holds the file's six coefficients;
 *   -ENOENT  no file: the caller uses its default model;
 *   -EINVAL  one sentence naming the file and the problem in @why (when non-NULL): not a JSON
 *            object, a coefficient missing, not a non-negative integer, above
 *            QOS_MODEL_COEF_MAX_NS, or a 4 KiB random read or write that would cost 0 (the
 *            scheduler could not share such a device);
 *   -errno   the file exists but cannot be read (-EACCES, -EIO), also with a sentence.
 * @m is only written on success.
 */
int qos_model_load(const char *pool, struct qos_cost_model *m, char *why, size_t why_len);

#endif
