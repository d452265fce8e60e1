/* What every oneDNN-backed op shares (matmul_onednn.c, conv_onednn.c): the CPU engine, rt's thread
 * count while oneDNN works, primitives made per thread count, one-off reorders (weights packed once
 * when the program is built), and executing a primitive on raw pointers with a stream and a
 * scratchpad of the calling thread. */
#ifndef RT_ONEDNN_COMMON_H
#define RT_ONEDNN_COMMON_H

#include <pthread.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "rt_kernel.h"

#define RT_DNNL_MAX_THREADS 256

/* The CPU engine, made once; NULL (with *status) when it cannot be had. */
dnnl_engine_t rt_dnnl_engine(dnnl_status_t *status);

/* oneDNN sizes its work for the calling thread's OpenMP thread count: set it to rt's while oneDNN
 * works. Returns the caller's count, for rt_dnnl_restore_threads. */
int rt_dnnl_use_threads(void);
void rt_dnnl_restore_threads(int caller);

/* The primitive descriptor an op wants, for the current thread count (ctx: the op's own state). */
typedef dnnl_status_t (*rt_dnnl_pd_fn)(const void *ctx, dnnl_primitive_desc_t *pd);

/* A primitive's work split is fixed when it is created, so each thread count in use gets its own,
 * made on first use under a lock. */
typedef struct {
    pthread_mutex_t lock;
    dnnl_primitive_t prim[RT_DNNL_MAX_THREADS + 1]; /* by thread count */
    size_t scratch[RT_DNNL_MAX_THREADS + 1];        /* its scratchpad bytes */
} rt_dnnl_prims;

void rt_dnnl_prims_init(rt_dnnl_prims *p);
void rt_dnnl_prims_free(rt_dnnl_prims *p);
/* The primitive for rt's current thread count (NULL if oneDNN refuses); *scratch = its scratchpad bytes. */
dnnl_primitive_t rt_dnnl_primitive(rt_dnnl_prims *p, rt_dnnl_pd_fn make_pd, const void *ctx, size_t *scratch);

/* An attribute with these post-ops (may be NULL) and a user-provided scratchpad: calls may run
 * concurrently (one arena each), so each calling thread brings its own. */
dnnl_status_t rt_dnnl_attr(dnnl_primitive_attr_t *attr, const_dnnl_post_ops_t po);

/* A 64-byte aligned buffer of md's size (NULL when out of memory). */
void *rt_dnnl_alloc(const_dnnl_memory_desc_t md);
/* Copy `from` (read as from_md) into `to` (written as to_md), once: weights into a primitive's layout. */
dnnl_status_t rt_dnnl_reorder(const_dnnl_memory_desc_t from_md, const void *from, const_dnnl_memory_desc_t to_md,
                              void *to);
/* Constant weights w (read as plain_md) packed once into the layout pd asked for (made with format
 * "any"): *md = that layout (owned), *packed = an owned copy of w in it. */
dnnl_status_t rt_dnnl_pack_weights(const_dnnl_primitive_desc_t pd, const_dnnl_memory_desc_t plain_md, const void *w,
                                   dnnl_memory_desc_t *md, void **packed);

/* One execution argument; a NULL ptr is left out. */
typedef struct {
    int arg;
    const_dnnl_memory_desc_t md;
    void *ptr;
} rt_dnnl_arg;

/* Run p on the calling thread's stream with its scratchpad (scratch_bytes, from rt_dnnl_primitive).
 * Returns RT_OK or an rt_error (the dnnl status as the error detail). */
int rt_dnnl_execute(dnnl_primitive_t p, size_t scratch_bytes, const rt_dnnl_arg *args, int nargs);

#endif
