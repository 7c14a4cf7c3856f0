/* duration: Duration config fields to milliseconds (see duration.h). */
#include "proxy/config/duration.h"

#include "google/protobuf/duration.pb-c.h"

const char *duration_ms(const struct Google__Protobuf__Duration *d, bool positive, uint64_t *out_ms)
{
    if (d->seconds < 0 || d->nanos < 0) {
        return "must not be negative";
    }
    /* 10,000 years, as protobuf's own Duration range */
    if (d->nanos > 999999999 || d->seconds > 315576000000LL) {
        return "out of range";
    }
    if (positive && d->seconds == 0 && d->nanos == 0) {
        return "must be greater than 0";
    }
    *out_ms = (uint64_t)d->seconds * 1000 + ((uint64_t)d->nanos + 999999) / 1000000;
    return NULL;
}
