/*
 * qos_internal.h - declarations shared between the files of qos/ and their tests.
 */
#ifndef SLUICE_QOS_QOS_INTERNAL_H
#define SLUICE_QOS_QOS_INTERNAL_H

#include <stddef.h>

/** snprintf into a caller's reason buffer; @why may be NULL. */
void qos_why(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
