/* duration: the one conversion of a google.protobuf.Duration config field to milliseconds,
 * shared by the bootstrap compiler, the health-check compiler and HTTP filter configs, so the
 * three agree on ranges, rounding and messages. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct Google__Protobuf__Duration;

/* Converts `d` (not NULL) to milliseconds in `*out_ms`, rounding sub-millisecond remainders up
 * so a tiny timeout never becomes 0 ("disabled"). Returns NULL, or the reason it is invalid
 * ("must not be negative", "out of range", or with `positive` "must be greater than 0"), for
 * the caller to report at its field path. */
const char *duration_ms(const struct Google__Protobuf__Duration *d, bool positive,
                        uint64_t *out_ms);
