/* file: reading a whole (config) file into memory, and writing a small one atomically. Thread:
 * any. */
#pragma once

#include <stddef.h>

/* Reads at most `max` bytes of the file at `path` into a new heap buffer (NUL-terminated; the
 * NUL is not counted in *len). Returns NULL with errno set: fopen's or fread's error, or EFBIG
 * when the file is larger than `max`. Allocation failure aborts. */
char *file_read(const char *path, size_t max, size_t *len);

/* Writes `len` bytes to `path` so that a reader never sees a partial file: into a temporary
 * file next to it (".tmp.<pid>"), then renamed over it. Returns 0 or a negative errno. */
int file_write_atomic(const char *path, const void *data, size_t len);

/* The same, with the new file created with permissions `mode` (less the umask): 0600 for a
 * private key, which must never exist, even for a moment, readable by others. */
int file_write_atomic_mode(const char *path, const void *data, size_t len, unsigned mode);
