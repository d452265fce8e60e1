/* MATMUL with a constant B through oneDNN's matmul primitive (brgemm kernels).
 *
 * Measured here (docs/dev.md, "oneDNN vs OpenBLAS"; benchmarks/matmul_modes.py): at transformer
 * shapes (M = 64-128 rows against 768x2304, 768x3072, 3072x768, 768x50257 weights, weights cold)
 * oneDNN with B packed runs at 182-213 GFLOP/s on 2 threads where OpenBLAS, one block per
 * thread, gets 111-182. The primitive, and B reordered into the blocked layout
 * its kernel reads (when the op asks for packing), are made once when the program is built
 * (rt_p_matmul); a run only wraps the operands' addresses and executes. The epilogue runs
 * as oneDNN post-ops: bias, then the residual (a sum when it is the output itself, else a
 * binary add), then the activation.
 *
 * Threads: the primitive's work split is fixed when it is created, so each thread count in
 * use gets its own primitive, made on first use under a lock. Calls may run concurrently
 * (one arena each), so the scratchpad is ours ("user" mode): a buffer per calling thread
 * (thread_ctx); oneDNN's shared one would be raced on. */
#define _GNU_SOURCE
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "rt_kernel.h"

#define MAX_THREADS 256

typedef struct {
    dnnl_memory_desc_t a_md, b_md, bias_md, c_md; /* b_md: the layout B is read in; a residual has c's */
    void *packed;                                          /* owned copy of B, or NULL */
    int res_is_out;
    pthread_mutex_t lock;
    dnnl_primitive_t prim[MAX_THREADS + 1]; /* by thread count */
    size_t scratch[MAX_THREADS + 1];        /* its scratchpad bytes */
} onednn_mm;

static dnnl_engine_t engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_status_t engine_status;

static void make_engine(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

/* A rows x cols matrix stored row-major with leading dim ld, or transposed (trans). */
static dnnl_status_t matrix_md(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int trans,
                               int64_t ld)
{
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    return dnnl_memory_desc_create_with_strides(md, 2, dims, dnnl_f32, strides);
}

static const dnnl_alg_kind_t act_alg[RT_ACT_COUNT] = {
    [RT_ACT_NONE] = dnnl_alg_kind_undef, [RT_ACT_RELU] = dnnl_eltwise_relu,
    [RT_ACT_GELU_TANH] = dnnl_eltwise_gelu_tanh, [RT_ACT_GELU_ERF] = dnnl_eltwise_gelu_erf,
    [RT_ACT_SILU] = dnnl_eltwise_swish}; /* swish with alpha 1 */

/* The primitive descriptor for op, B read as b_md, split for the current thread count. */
static dnnl_status_t make_pd(const rt_op *op, const onednn_mm *s, const_dnnl_memory_desc_t b_md,
                             dnnl_primitive_desc_t *pd)
{
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t st = dnnl_post_ops_create(&po);
    if (st == dnnl_success && op->slot[RT_MATMUL_RESIDUAL] >= 0)
        st = s->res_is_out ? dnnl_post_ops_append_sum(po, 1.f, 0, dnnl_data_type_undef)
                           : dnnl_post_ops_append_binary(po, dnnl_binary_add, s->c_md);
    if (st == dnnl_success && op->ip.matmul.act != RT_ACT_NONE)
        st = dnnl_post_ops_append_eltwise(po, act_alg[op->ip.matmul.act],
                                           op->ip.matmul.act == RT_ACT_SILU ? 1.f : 0.f, 0.f);
    if (st == dnnl_success) st = dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success)
        st = dnnl_matmul_primitive_desc_create(pd, engine, s->a_md, b_md,
                                               op->slot[RT_MATMUL_BIAS] >= 0 ? s->bias_md : NULL, s->c_md, attr);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    return st;
}

static void destroy(onednn_mm *s)
{
    for (int i = 0; i <= MAX_THREADS; i++)
        if (s->prim[i]) dnnl_primitive_destroy(s->prim[i]);
    dnnl_memory_desc_t mds[4] = {s->a_md, s->b_md, s->bias_md, s->c_md};
    for (int i = 0; i < 4; i++)
        if (mds[i]) dnnl_memory_desc_destroy(mds[i]);
    free(s->packed);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void rt_r_matmul_onednn(void *state) { destroy((onednn_mm *)state); }

/* oneDNN sizes its work for the calling thread's OpenMP thread count: set it to rt's while
 * oneDNN works (returns the caller's count, to restore). */
static int use_rt_threads(void)
{
    int caller = omp_get_max_threads();
    omp_set_num_threads(rt_nthreads < MAX_THREADS ? rt_nthreads : MAX_THREADS);
    return caller;
}

/* The primitive for the current thread count, made on first use; *scratch = its scratchpad bytes. */
static dnnl_primitive_t primitive(const rt_op *op, onednn_mm *s, size_t *scratch)
{
    int nth = rt_nthreads < MAX_THREADS ? rt_nthreads : MAX_THREADS;
    dnnl_primitive_t p = __atomic_load_n(&s->prim[nth], __ATOMIC_ACQUIRE);
    if (!p) {
        pthread_mutex_lock(&s->lock);
        p = s->prim[nth];
        dnnl_primitive_desc_t pd = NULL;
        if (!p && make_pd(op, s, s->b_md, &pd) == dnnl_success) {
            s->scratch[nth] = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
            if (dnnl_primitive_create(&p, pd) != dnnl_success) p = NULL;
            __atomic_store_n(&s->prim[nth], p, __ATOMIC_RELEASE);
        }
        if (pd) dnnl_primitive_desc_destroy(pd);
        pthread_mutex_unlock(&s->lock);
    }
    *scratch = s->scratch[nth];
    return p;
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
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (dnnl_stream_create(&c->stream, engine, dnnl_stream_default_flags) != dnnl_success ||
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

/* Reorder B (read as src_md at b) into s->b_md, a buffer of its own. */
static dnnl_status_t pack(onednn_mm *s, const_dnnl_memory_desc_t src_md, const float *b)
{
    size_t bytes = dnnl_memory_desc_get_size(s->b_md);
    s->packed = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!s->packed) return dnnl_out_of_memory;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_memory_t from = NULL, to = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&rpd, src_md, engine, s->b_md, engine, NULL);
    if (st == dnnl_success) st = dnnl_primitive_create(&r, rpd);
    if (st == dnnl_success) st = dnnl_memory_create(&from, src_md, engine, (void *)b);
    if (st == dnnl_success) st = dnnl_memory_create(&to, s->b_md, engine, s->packed);
    if (st == dnnl_success) st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
        st = dnnl_primitive_execute(r, stream, 2, args);
    }
    if (st == dnnl_success) st = dnnl_stream_wait(stream);
    if (stream) dnnl_stream_destroy(stream);
    if (to) dnnl_memory_destroy(to);
    if (from) dnnl_memory_destroy(from);
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    return st;
}

static dnnl_status_t setup(rt_op *op, onednn_mm *s, const float *b)
{
    const rt_matmul_ints *ip = &op->ip.matmul;
    int64_t M = ip->M, N = ip->N, K = ip->K;
    dnnl_memory_desc_t plain_b = NULL;
    dnnl_dims_t bias_dims = {1, N};
    dnnl_status_t st = matrix_md(&s->a_md, M, K, (int)ip->trans_a, ip->lda);
    if (st == dnnl_success) st = matrix_md(&plain_b, K, N, (int)ip->trans_b, ip->ldb);
    if (st == dnnl_success) st = matrix_md(&s->c_md, M, N, 0, ip->ldc);
    if (st == dnnl_success)
        st = dnnl_memory_desc_create_with_tag(&s->bias_md, 2, bias_dims, dnnl_f32, dnnl_ab);
    if (st != dnnl_success) goto out;
    if (ip->b_mode == RT_B_MODE_PACKED) {
        /* Let the primitive pick B's layout, then reorder B into it once. */
        dnnl_memory_desc_t any = NULL;
        dnnl_dims_t dims = {K, N};
        dnnl_primitive_desc_t pd = NULL;
        st = dnnl_memory_desc_create_with_tag(&any, 2, dims, dnnl_f32, dnnl_format_tag_any);
        if (st == dnnl_success) st = make_pd(op, s, any, &pd);
        if (st == dnnl_success)
            st = dnnl_memory_desc_clone(&s->b_md, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
        if (pd) dnnl_primitive_desc_destroy(pd);
        if (any) dnnl_memory_desc_destroy(any);
        if (st == dnnl_success) st = pack(s, plain_b, b);
    } else {
        st = dnnl_memory_desc_clone(&s->b_md, plain_b);
    }
out:
    if (plain_b) dnnl_memory_desc_destroy(plain_b);
    return st;
}

int rt_p_matmul_onednn(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
    RT_CHECK(arg[RT_MATMUL_B], "oneDNN matmul: B must be a constant (bound when the program is built)");
    pthread_once(&engine_once, make_engine);
    RT_CHECK(engine_status == dnnl_success, "oneDNN: cannot create a CPU engine: %s",
             dnnl_status2str(engine_status));
    onednn_mm *s = calloc(1, sizeof *s);
    RT_CHECK(s, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->res_is_out = op->slot[RT_MATMUL_RESIDUAL] >= 0 && op->slot[RT_MATMUL_RESIDUAL] == op->slot[RT_MATMUL_OUT] &&
                     op->offset[RT_MATMUL_RESIDUAL] == op->offset[RT_MATMUL_OUT];
    int caller_threads = use_rt_threads();
    dnnl_status_t st = setup(op, s, (const float *)arg[RT_MATMUL_B]);
    size_t scratch;
    if (st == dnnl_success && !primitive(op, s, &scratch)) st = dnnl_runtime_error;
    omp_set_num_threads(caller_threads);
    if (st != dnnl_success) {
        destroy(s);
        return rt_fail(msg, msglen, "oneDNN cannot build this %lldx%lldx%lld matmul: %s",
                       (long long)op->ip.matmul.M, (long long)op->ip.matmul.N, (long long)op->ip.matmul.K, dnnl_status2str(st));
    }
    op->state = s;
    return 0;
}

static int run(const rt_op *op, char *const *arg);

int rt_matmul_onednn(const rt_op *op, char *const *arg)
{
    int caller_threads = use_rt_threads();
    int rc = run(op, arg);
    omp_set_num_threads(caller_threads);
    return rc;
}

static int run(const rt_op *op, char *const *arg)
{
    onednn_mm *s = op->state;
    size_t scratch_bytes;
    dnnl_primitive_t p = primitive(op, s, &scratch_bytes);
    thread_ctx *ctx = this_thread();
    if (!p || !ctx) return RT_ERR_BACKEND;
    void *scratch = scratch_bytes ? scratchpad(ctx, scratch_bytes) : NULL;
    if (scratch_bytes && !scratch) return RT_ERR_NOMEM;
    dnnl_memory_desc_t scratch_md = NULL;
    dnnl_dims_t scratch_dims = {(dnnl_dim_t)scratch_bytes};
    if (scratch && dnnl_memory_desc_create_with_tag(&scratch_md, 1, scratch_dims, dnnl_u8, dnnl_a) != dnnl_success)
        return RT_ERR_BACKEND;
    void *b = s->packed ? s->packed : arg[RT_MATMUL_B];
    int res_arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;
    struct { int arg; const_dnnl_memory_desc_t md; void *ptr; } want[6] = {
        {DNNL_ARG_SRC, s->a_md, arg[RT_MATMUL_A]},
        {DNNL_ARG_WEIGHTS, s->b_md, b},
        {DNNL_ARG_DST, s->c_md, arg[RT_MATMUL_OUT]},
        {DNNL_ARG_BIAS, s->bias_md, arg[RT_MATMUL_BIAS]},
        {res_arg, s->c_md, s->res_is_out ? NULL : arg[RT_MATMUL_RESIDUAL]},
        {DNNL_ARG_SCRATCHPAD, scratch_md, scratch},
    };
    dnnl_exec_arg_t args[6];
    int n = 0, rc = RT_OK;
    for (int i = 0; i < 6; i++) {
        if (!want[i].ptr) continue;
        if (dnnl_memory_create(&args[n].memory, want[i].md, engine, want[i].ptr) != dnnl_success) {
            rc = RT_ERR_BACKEND;
            break;
        }
        args[n++].arg = want[i].arg;
    }
    dnnl_status_t st = dnnl_success;
    if (rc == RT_OK && ((st = dnnl_primitive_execute(p, ctx->stream, n, args)) != dnnl_success ||
                        (st = dnnl_stream_wait(ctx->stream)) != dnnl_success)) {
        rt_set_error_detail(st);
        rc = RT_ERR_BACKEND;
    }
    for (int i = 0; i < n; i++) dnnl_memory_destroy(args[i].memory);
    if (scratch_md) dnnl_memory_desc_destroy(scratch_md);
    return rc;
}

/* libdnnl's static initialisers and primitive creation (code generation) touch ~15 MiB of its
 * 43 MiB of machine code that no run executes again; runs need ~2 MiB of it (measured on GPT-2
 * served from its file: 17.1 -> 1.9 MiB resident). Those are clean pages of the mapped library
 * file, so they can be given back: any page needed again faults back in from the page cache. */
static int drop_code_pages(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size, (void)unused;
    if (!strstr(info->dlpi_name, "/libdnnl.so")) return 0;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || (ph->p_flags & PF_W)) continue;
        uintptr_t lo = (info->dlpi_addr + ph->p_vaddr + page - 1) & ~(page - 1);
        uintptr_t hi = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(page - 1);
        if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
    return 1;
}

void rt_onednn_trim(void) { dl_iterate_phdr(drop_code_pages, NULL); }
