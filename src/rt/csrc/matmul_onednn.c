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
 * A program with a dynamic number of rows (rt.kernels.bind) runs its records with other M, lda and
 * ldc than the ones the state was made for: each such row shape gets its own A/C descriptors and
 * primitives on first use (B, its packed copy and the epilogue stay the op's), kept until the
 * program goes; past MAX_ROW_SHAPES of them a run at yet another shape makes its own and drops it
 * (bounded memory, slower calls).
 *
 * Threads, primitives per thread count and the per-thread scratchpad: onednn_common.c. */
#define _GNU_SOURCE
#include <link.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "onednn_common.h"

#define MAX_ROW_SHAPES 32

struct onednn_mm;

/* One row shape (M, lda, ldc) of the op: A's and C's descriptors (a residual has C's) and its primitives. */
typedef struct mm_rows {
    const struct onednn_mm *mm;
    int64_t M, lda, ldc;
    dnnl_memory_desc_t a_md, c_md;
    rt_dnnl_prims prims;
    struct mm_rows *next;
} mm_rows;

typedef struct onednn_mm {
    rt_op op;                                              /* a copy of the record it was made for */
    dnnl_memory_desc_t b_md, bias_md;                      /* b_md: the layout B is read in */
    void *packed;                                          /* owned copy of B, or NULL */
    int res_is_out;
    mm_rows *rows;                                         /* the record's own first; read lock-free */
    int nrows;
    pthread_mutex_t lock;                                  /* adding a row shape */
} onednn_mm;

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

/* The primitive descriptor for the op at row shape r, B read as b_md, split for the current thread count. */
static dnnl_status_t make_pd_with(const mm_rows *r, const_dnnl_memory_desc_t b_md, dnnl_primitive_desc_t *pd)
{
    const onednn_mm *s = r->mm;
    const rt_op *op = &s->op;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t st = dnnl_post_ops_create(&po);
    if (st == dnnl_success && op->slot[RT_MATMUL_RESIDUAL] >= 0)
        st = s->res_is_out ? dnnl_post_ops_append_sum(po, 1.f, 0, dnnl_data_type_undef)
                           : dnnl_post_ops_append_binary(po, dnnl_binary_add, r->c_md);
    if (st == dnnl_success && op->ip.matmul.act != RT_ACT_NONE)
        st = dnnl_post_ops_append_eltwise(po, act_alg[op->ip.matmul.act],
                                           op->ip.matmul.act == RT_ACT_SILU ? 1.f : 0.f, 0.f);
    if (st == dnnl_success) st = rt_dnnl_attr(&attr, po);
    if (st == dnnl_success)
        st = dnnl_matmul_primitive_desc_create(pd, rt_dnnl_engine(NULL), r->a_md, b_md,
                                               op->slot[RT_MATMUL_BIAS] >= 0 ? s->bias_md : NULL, r->c_md, attr);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    return st;
}

static dnnl_status_t make_pd(const void *ctx, dnnl_primitive_desc_t *pd)
{
    const mm_rows *r = ctx;
    return make_pd_with(r, r->mm->b_md, pd);
}

static void rows_free(mm_rows *r)
{
    rt_dnnl_prims_free(&r->prims);
    if (r->a_md) dnnl_memory_desc_destroy(r->a_md);
    if (r->c_md) dnnl_memory_desc_destroy(r->c_md);
    free(r);
}

static void destroy(onednn_mm *s)
{
    for (mm_rows *r = s->rows, *next; r; r = next) {
        next = r->next;
        rows_free(r);
    }
    if (s->b_md) dnnl_memory_desc_destroy(s->b_md);
    if (s->bias_md) dnnl_memory_desc_destroy(s->bias_md);
    pthread_mutex_destroy(&s->lock);
    free(s->packed);
    free(s);
}

void rt_r_matmul_onednn(void *state) { destroy((onednn_mm *)state); }

/* A row shape of the op: its descriptors (its primitives are made on first use). NULL: out of memory
 * or a shape oneDNN cannot describe (*st says which). */
static mm_rows *rows_new(const onednn_mm *s, int64_t M, int64_t lda, int64_t ldc, dnnl_status_t *st)
{
    const rt_matmul_ints *ip = &s->op.ip.matmul;
    mm_rows *r = calloc(1, sizeof *r);
    if (!r) {
        *st = dnnl_out_of_memory;
        return NULL;
    }
    r->mm = s;
    r->M = M, r->lda = lda, r->ldc = ldc;
    rt_dnnl_prims_init(&r->prims);
    *st = matrix_md(&r->a_md, M, ip->K, (int)ip->trans_a, lda);
    if (*st == dnnl_success) *st = matrix_md(&r->c_md, M, ip->N, 0, ldc);
    if (*st != dnnl_success) {
        rows_free(r);
        return NULL;
    }
    return r;
}

/* The row shape a record runs at: the state's own, or one added for it (records of a dynamic program
 * differ from the state's record in M, lda and ldc only), or past MAX_ROW_SHAPES one for this run only
 * (*owned set: the caller frees it). NULL when the record is not the state's op, or out of memory. */
static mm_rows *rows_for(onednn_mm *s, const rt_op *op, int *owned)
{
    *owned = 0;
    const rt_matmul_ints *ip = &op->ip.matmul, *own = &s->op.ip.matmul;
    if (ip->N != own->N || ip->K != own->K || ip->ldb != own->ldb || ip->trans_a != own->trans_a ||
        ip->trans_b != own->trans_b || ip->b_mode != own->b_mode || ip->act != own->act)
        return NULL;
    for (mm_rows *r = __atomic_load_n(&s->rows, __ATOMIC_ACQUIRE); r; r = r->next)
        if (r->M == ip->M && r->lda == ip->lda && r->ldc == ip->ldc) return r;
    pthread_mutex_lock(&s->lock);
    mm_rows *r = s->rows;
    while (r && !(r->M == ip->M && r->lda == ip->lda && r->ldc == ip->ldc)) r = r->next;
    dnnl_status_t st;
    if (!r && (r = rows_new(s, ip->M, ip->lda, ip->ldc, &st))) {
        if (s->nrows < MAX_ROW_SHAPES) {
            r->next = s->rows;
            __atomic_store_n(&s->rows, r, __ATOMIC_RELEASE);
            s->nrows++;
        } else {
            *owned = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

static dnnl_status_t setup(onednn_mm *s, const float *b)
{
    const rt_matmul_ints *ip = &s->op.ip.matmul;
    int64_t N = ip->N, K = ip->K;
    dnnl_memory_desc_t plain_b = NULL;
    dnnl_dims_t bias_dims = {1, N};
    dnnl_status_t st;
    s->rows = rows_new(s, ip->M, ip->lda, ip->ldc, &st);
    s->nrows = 1;
    if (st == dnnl_success) st = matrix_md(&plain_b, K, N, (int)ip->trans_b, ip->ldb);
    if (st == dnnl_success)
        st = dnnl_memory_desc_create_with_tag(&s->bias_md, 2, bias_dims, dnnl_f32, dnnl_ab);
    if (st != dnnl_success) goto out;
    if (ip->b_mode == RT_B_MODE_PACKED) {
        /* Let the primitive pick B's layout, then reorder B into it once. */
        dnnl_memory_desc_t any = NULL;
        dnnl_dims_t dims = {K, N};
        dnnl_primitive_desc_t pd = NULL;
        st = dnnl_memory_desc_create_with_tag(&any, 2, dims, dnnl_f32, dnnl_format_tag_any);
        if (st == dnnl_success) st = make_pd_with(s->rows, any, &pd);
        if (st == dnnl_success) st = rt_dnnl_pack_weights(pd, plain_b, b, &s->b_md, &s->packed);
        if (pd) dnnl_primitive_desc_destroy(pd);
        if (any) dnnl_memory_desc_destroy(any);
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
    dnnl_status_t st;
    RT_CHECK(rt_dnnl_engine(&st), "oneDNN: cannot create a CPU engine: %s", dnnl_status2str(st));
    onednn_mm *s = calloc(1, sizeof *s);
    RT_CHECK(s, "out of memory");
    s->op = *op;
    pthread_mutex_init(&s->lock, NULL);
    s->res_is_out = op->slot[RT_MATMUL_RESIDUAL] >= 0 && op->slot[RT_MATMUL_RESIDUAL] == op->slot[RT_MATMUL_OUT] &&
                     op->offset[RT_MATMUL_RESIDUAL] == op->offset[RT_MATMUL_OUT];
    int caller_threads = rt_dnnl_use_threads();
    st = setup(s, (const float *)arg[RT_MATMUL_B]);
    size_t scratch;
    if (st == dnnl_success && !rt_dnnl_primitive(&s->rows->prims, make_pd, s->rows, &scratch)) st = dnnl_runtime_error;
    rt_dnnl_restore_threads(caller_threads);
    if (st != dnnl_success) {
        destroy(s);
        return rt_fail(msg, msglen, "oneDNN cannot build this %lldx%lldx%lld matmul: %s",
                       (long long)op->ip.matmul.M, (long long)op->ip.matmul.N, (long long)op->ip.matmul.K, dnnl_status2str(st));
    }
    op->state = s;
    return 0;
}

int rt_matmul_onednn(const rt_op *op, char *const *arg)
{
    onednn_mm *s = op->state;
    int owned;
    mm_rows *r = rows_for(s, op, &owned);
    if (!r) return RT_ERR_BACKEND;
    int caller_threads = rt_dnnl_use_threads();
    size_t scratch;
    dnnl_primitive_t p = rt_dnnl_primitive(&r->prims, make_pd, r, &scratch);
    rt_dnnl_arg args[5] = {
        {DNNL_ARG_SRC, r->a_md, arg[RT_MATMUL_A]},
        {DNNL_ARG_WEIGHTS, s->b_md, s->packed ? s->packed : arg[RT_MATMUL_B]},
        {DNNL_ARG_DST, r->c_md, arg[RT_MATMUL_OUT]},
        {DNNL_ARG_BIAS, s->bias_md, arg[RT_MATMUL_BIAS]},
        {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, r->c_md, s->res_is_out ? NULL : arg[RT_MATMUL_RESIDUAL]},
    };
    int rc = rt_dnnl_execute(p, scratch, args, 5);
    rt_dnnl_restore_threads(caller_threads);
    if (owned) rows_free(r);
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
