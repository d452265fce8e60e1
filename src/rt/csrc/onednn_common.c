/* oneDNN pieces shared by its ops (onednn_common.h). */
#include <stdlib.h>

#include "onednn_common.h"

static dnnl_engine_t engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_status_t engine_status;

static void make_engine(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

dnnl_engine_t rt_dnnl_engine(dnnl_status_t *status)
{
    pthread_once(&engine_once, make_engine);
    if (status) *status = engine_status;
    return engine_status == dnnl_success ? engine : NULL;
}

static int rt_threads_capped(void) { return rt_nthreads < RT_DNNL_MAX_THREADS ? rt_nthreads : RT_DNNL_MAX_THREADS; }

int rt_dnnl_use_threads(void)
{
    int caller = omp_get_max_threads();
    omp_set_num_threads(rt_threads_capped());
    return caller;
}

void rt_dnnl_restore_threads(int caller) { omp_set_num_threads(caller); }

void rt_dnnl_prims_init(rt_dnnl_prims *p)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
}

void rt_dnnl_prims_free(rt_dnnl_prims *p)
{
    for (int i = 0; i <= RT_DNNL_MAX_THREADS; i++)
        if (p->prim[i]) dnnl_primitive_destroy(p->prim[i]);
    pthread_mutex_destroy(&p->lock);
}

dnnl_primitive_t rt_dnnl_primitive(rt_dnnl_prims *p, rt_dnnl_pd_fn make_pd, const void *ctx, size_t *scratch)
{
    int nth = rt_threads_capped();
    dnnl_primitive_t prim = __atomic_load_n(&p->prim[nth], __ATOMIC_ACQUIRE);
    if (!prim) {
        pthread_mutex_lock(&p->lock);
        prim = p->prim[nth];
        dnnl_primitive_desc_t pd = NULL;
        if (!prim && make_pd(ctx, &pd) == dnnl_success) {
            p->scratch[nth] = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
            if (dnnl_primitive_create(&prim, pd) != dnnl_success) prim = NULL;
            __atomic_store_n(&p->prim[nth], prim, __ATOMIC_RELEASE);
        }
        if (pd) dnnl_primitive_desc_destroy(pd);
        pthread_mutex_unlock(&p->lock);
    }
    *scratch = p->scratch[nth];
    return prim;
}

dnnl_status_t rt_dnnl_attr(dnnl_primitive_attr_t *attr, const_dnnl_post_ops_t po)
{
    dnnl_status_t st = dnnl_primitive_attr_create(attr);
    if (st == dnnl_success && po) st = dnnl_primitive_attr_set_post_ops(*attr, po);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
    if (st != dnnl_success && *attr) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
    }
    return st;
}

void *rt_dnnl_alloc(const_dnnl_memory_desc_t md)
{
    size_t bytes = dnnl_memory_desc_get_size(md);
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

dnnl_status_t rt_dnnl_pack_weights(const_dnnl_primitive_desc_t pd, const_dnnl_memory_desc_t plain_md, const void *w,
                                   dnnl_memory_desc_t *md, void **packed)
{
    dnnl_status_t st = dnnl_memory_desc_clone(md, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
    if (st == dnnl_success) st = (*packed = rt_dnnl_alloc(*md)) ? dnnl_success : dnnl_out_of_memory;
    if (st == dnnl_success) st = rt_dnnl_reorder(plain_md, w, *md, *packed);
    return st;
}

dnnl_status_t rt_dnnl_reorder(const_dnnl_memory_desc_t from_md, const void *from, const_dnnl_memory_desc_t to_md,
                              void *to)
{
    dnnl_status_t st;
    dnnl_engine_t eng = rt_dnnl_engine(&st);
    if (!eng) return st;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_stream_t stream = NULL;
    st = dnnl_reorder_primitive_desc_create(&rpd, from_md, eng, to_md, eng, NULL);
    if (st == dnnl_success) st = dnnl_primitive_create(&r, rpd);
    if (st == dnnl_success) st = dnnl_memory_create(&src, from_md, eng, (void *)from);
    if (st == dnnl_success) st = dnnl_memory_create(&dst, to_md, eng, to);
    if (st == dnnl_success) st = dnnl_stream_create(&stream, eng, dnnl_stream_default_flags);
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
        st = dnnl_primitive_execute(r, stream, 2, args);
    }
    if (st == dnnl_success) st = dnnl_stream_wait(stream);
    if (stream) dnnl_stream_destroy(stream);
    if (dst) dnnl_memory_destroy(dst);
    if (src) dnnl_memory_destroy(src);
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    return st;
}

/* What each calling thread keeps between runs, freed when the thread exits: its oneDNN stream
 * (CPU streams hold no buffers) and its scratchpad, grown to the largest primitive it has run. */
typedef struct {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_bytes;
} thread_ctx;

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void free_ctx(void *p)
{
    thread_ctx *c = p;
    dnnl_stream_destroy(c->stream);
    free(c->scratch);
    free(c);
}

static void make_ctx_key(void) { pthread_key_create(&ctx_key, free_ctx); }

static thread_ctx *this_thread(void)
{
    pthread_once(&ctx_once, make_ctx_key);
    thread_ctx *c = pthread_getspecific(ctx_key);
    if (c) return c;
    dnnl_engine_t eng = rt_dnnl_engine(NULL);
    c = eng ? calloc(1, sizeof *c) : NULL;
    if (!c) return NULL;
    if (dnnl_stream_create(&c->stream, eng, dnnl_stream_default_flags) != dnnl_success ||
        pthread_setspecific(ctx_key, c) != 0) {
        if (c->stream) dnnl_stream_destroy(c->stream);
        free(c);
        return NULL;
    }
    return c;
}

/* c's scratchpad, at least `bytes` long (NULL if that cannot be had). */
static void *scratchpad(thread_ctx *c, size_t bytes)
{
    if (bytes <= c->scratch_bytes) return c->scratch;
    free(c->scratch);
    c->scratch_bytes = (bytes + 4095) & ~(size_t)4095;
    c->scratch = aligned_alloc(64, c->scratch_bytes);
    if (!c->scratch) c->scratch_bytes = 0;
    return c->scratch;
}

#define MAX_EXEC_ARGS 16

int rt_dnnl_execute(dnnl_primitive_t p, size_t scratch_bytes, const rt_dnnl_arg *args, int nargs)
{
    thread_ctx *ctx = this_thread();
    dnnl_engine_t eng = rt_dnnl_engine(NULL);
    if (!p || !ctx || nargs >= MAX_EXEC_ARGS) return RT_ERR_BACKEND;
    void *scratch = scratch_bytes ? scratchpad(ctx, scratch_bytes) : NULL;
    if (scratch_bytes && !scratch) return RT_ERR_NOMEM;
    dnnl_memory_desc_t scratch_md = NULL;
    dnnl_dims_t scratch_dims = {(dnnl_dim_t)scratch_bytes};
    if (scratch && dnnl_memory_desc_create_with_tag(&scratch_md, 1, scratch_dims, dnnl_u8, dnnl_a) != dnnl_success)
        return RT_ERR_BACKEND;
    dnnl_exec_arg_t exec[MAX_EXEC_ARGS];
    int n = 0, rc = RT_OK;
    for (int i = 0; i <= nargs && rc == RT_OK; i++) {
        rt_dnnl_arg a = i < nargs ? args[i] : (rt_dnnl_arg){DNNL_ARG_SCRATCHPAD, scratch_md, scratch};
        if (!a.ptr) continue;
        if (dnnl_memory_create(&exec[n].memory, a.md, eng, a.ptr) != dnnl_success)
            rc = RT_ERR_BACKEND;
        else
            exec[n++].arg = a.arg;
    }
    dnnl_status_t st = dnnl_success;
    if (rc == RT_OK && ((st = dnnl_primitive_execute(p, ctx->stream, n, exec)) != dnnl_success ||
                        (st = dnnl_stream_wait(ctx->stream)) != dnnl_success)) {
        rt_set_error_detail(st);
        rc = RT_ERR_BACKEND;
    }
    for (int i = 0; i < n; i++) dnnl_memory_destroy(exec[i].memory);
    if (scratch_md) dnnl_memory_desc_destroy(scratch_md);
    return rc;
}
