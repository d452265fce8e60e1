/* A model file's bytes, mapped read-only so that what runs keeps the answers of the file it loaded,
 * whatever happens to the file afterwards (see mapped_file.c). */
#ifndef RT_MAPPED_FILE_H
#define RT_MAPPED_FILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct rt_mapped rt_mapped;

enum rt_mapped_state {
    RT_MAPPED_LEASED,   /* a shared mapping of the file, under a read lease: pages load lazily */
    RT_MAPPED_PRIVATE,  /* every byte copied into rt's own memory (no lease could be taken) */
    RT_MAPPED_DETACHED, /* the lease broke (someone opened the file to write it): the kept ranges
                           were copied into rt's own memory at the same addresses, the rest is gone */
    RT_MAPPED_INHERITED, /* a forked child's copy of a leased mapping: the file's pages, unprotected
                            (the lease and its copy are the parent's) */
};

/* Map `size` bytes of `fd` (read-only; fd is duplicated, the caller keeps its own). Returns NULL with
 * a message when neither a leased mapping nor a private copy can be made. */
rt_mapped *rt_mapped_open(int fd, int64_t size, char *msg, size_t msglen);
const char *rt_mapped_data(const rt_mapped *m);
int rt_mapped_state(rt_mapped *m);
/* The byte ranges (start, length pairs) to copy when the lease breaks; before any call, all of them.
 * Returns -1 (nothing changed) when the mapping is already detached and the ranges are not all kept. */
int rt_mapped_keep(rt_mapped *m, const int64_t *ranges, int64_t nranges);
/* Give back the pages of [start, start + length) while they are the file's (they load again if read). */
void rt_mapped_drop(rt_mapped *m, int64_t start, int64_t length);
void rt_mapped_close(rt_mapped *m);

#endif
