/* The dispatch tables built from rt_ops.def, program validation and the run loop. */
#include <cblas.h>

#include "rt_kernel.h"

static const char *const op_names[RT_OP_COUNT] = {
#define RT_OP(name, kernel, checker) #name,
#include "rt_ops.def"
#undef RT_OP
};

static const rt_kernel_fn kernels[RT_OP_COUNT] = {
#define RT_OP(name, kernel, checker) kernel,
#include "rt_ops.def"
#undef RT_OP
};

static const rt_checker_fn checkers[RT_OP_COUNT] = {
#define RT_OP(name, kernel, checker) checker,
#include "rt_ops.def"
#undef RT_OP
};

/* Ops that make something once before they run (rt_op_prepare), and how it is freed. */
typedef int (*rt_prepare_fn)(rt_op *op, char *const *arg, char *msg, size_t msglen);
typedef void (*rt_release_fn)(rt_op *op);
static const rt_prepare_fn preparers[RT_OP_COUNT] = {[RT_OP_MATMUL] = rt_p_matmul};
static const rt_release_fn releasers[RT_OP_COUNT] = {[RT_OP_MATMUL] = rt_r_matmul};
#ifdef RT_HAVE_ONEDNN
int rt_have_onednn(void) { return 1; }
#else
int rt_have_onednn(void) { return 0; }
#endif

int rt_op_prepare(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
    op->state = NULL;
    return preparers[op->code] ? preparers[op->code](op, arg, msg, msglen) : 0;
}

void rt_program_prepared(const rt_op *ops, int64_t nops)
{
#ifdef RT_HAVE_ONEDNN
    for (int64_t i = 0; i < nops; i++)
        if (ops[i].state && ops[i].code == RT_OP_MATMUL && ops[i].ip[19] != RT_MATMUL_B_SPLIT) {
            rt_onednn_trim();
            return;
        }
#else
    (void)ops, (void)nops;
#endif
}

void rt_op_release(rt_op *op)
{
    if (op->state && releasers[op->code]) releasers[op->code](op);
    op->state = NULL;
}

const char *rt_op_name(int32_t code)
{
    return code >= 0 && code < RT_OP_COUNT ? op_names[code] : NULL;
}

/* Generic part of the check (code, operand count, slots, offsets), then the op's own. */
static int check_op(const rt_op *op, const int64_t *slot_nbytes, int64_t nslots, char *msg,
                    size_t msglen)
{
    RT_CHECK(op->code >= 0 && op->code < RT_OP_COUNT, "unknown op code %d", (int)op->code);
    RT_CHECK(op->nargs >= 0 && op->nargs <= RT_MAX_ARGS, "nargs %d not in [0, %d]",
             (int)op->nargs, RT_MAX_ARGS);
    int64_t avail[RT_MAX_ARGS];
    for (int i = 0; i < RT_MAX_ARGS; i++) avail[i] = -1;
    for (int i = 0; i < op->nargs; i++) {
        int32_t s = op->slot[i];
        if (s == -1) continue;
        RT_CHECK(s >= 0 && s < nslots, "operand %d: slot %d out of range [0, %lld)", i, (int)s,
                 (long long)nslots);
        RT_CHECK(op->offset[i] >= 0 && op->offset[i] <= slot_nbytes[s],
                 "operand %d: offset %lld outside slot %d of %lld bytes", i,
                 (long long)op->offset[i], (int)s, (long long)slot_nbytes[s]);
        avail[i] = slot_nbytes[s] - op->offset[i];
    }
    return checkers[op->code](op, avail, msg, msglen);
}

int64_t rt_program_check(const rt_op *ops, int64_t nops, const int64_t *slot_nbytes,
                         int64_t nslots, char *msg, size_t msglen)
{
    for (int64_t i = 0; i < nops; i++)
        if (check_op(&ops[i], slot_nbytes, nslots, msg, msglen)) return i;
    return -1;
}

static _Thread_local int64_t error_detail;

void rt_set_error_detail(int64_t detail) { error_detail = detail; }

int rt_program_run(const rt_op *ops, int64_t nops, char *const *slots, rt_status *st)
{
    char *arg[RT_MAX_ARGS];
    for (int64_t i = 0; i < nops; i++) {
        const rt_op *op = &ops[i];
        for (int a = 0; a < op->nargs; a++)
            arg[a] = op->slot[a] < 0 ? NULL : slots[op->slot[a]] + op->offset[a];
        int rc = kernels[op->code](op, arg);
        if (rc != RT_OK) {
            st->code = rc;
            st->op_index = (int32_t)i;
            st->detail = error_detail;
            return rc;
        }
    }
    st->code = RT_OK;
    return RT_OK;
}

int rt_nthreads = 1;

/* rt's OpenMP loops hold all the parallelism, matmuls included (matmul.c splits them),
 * so OpenBLAS stays single-threaded: its spinning workers would fight OpenMP's. */
void rt_set_num_threads(int n)
{
    rt_nthreads = n < 1 ? 1 : n;
    scipy_openblas_set_num_threads(1);
}

int rt_get_num_threads(void) { return rt_nthreads; }
