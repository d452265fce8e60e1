/* The dispatch tables built from rt_ops.def, program validation and the run loop. */
#include <cblas.h>

#define RT_ABI_FIELD_TABLES /* rt_op_families, for the generic check */
#include "rt_kernel.h"

static const char *const op_names[RT_OP_COUNT] = {
#define RT_NAME(name, family, kernel, checker) #name,
    RT_OPS(RT_NAME)
#undef RT_NAME
};

static const rt_kernel_fn kernels[RT_OP_COUNT] = {
#define RT_KERNEL(name, family, kernel, checker) kernel,
    RT_OPS(RT_KERNEL)
#undef RT_KERNEL
};

static const rt_checker_fn checkers[RT_OP_COUNT] = {
#define RT_CHECKER(name, family, kernel, checker) checker,
    RT_OPS(RT_CHECKER)
#undef RT_CHECKER
};

/* Ops that make something once before they run (rt_op_prepare), how it is freed, and how a
 * prepared op reports a run-time choice (rt_op_variant). */
typedef int (*rt_prepare_fn)(rt_op *op, char *const *arg, char *msg, size_t msglen);
typedef void (*rt_release_fn)(rt_op *op);
typedef int (*rt_variant_fn)(const rt_op *op);
static const rt_prepare_fn preparers[RT_OP_COUNT] = {[RT_OP_MATMUL] = rt_p_matmul, [RT_OP_CONV] = rt_p_conv};
static const rt_release_fn releasers[RT_OP_COUNT] = {[RT_OP_MATMUL] = rt_r_matmul, [RT_OP_CONV] = rt_r_conv};
static const rt_variant_fn variants[RT_OP_COUNT] = {[RT_OP_MATMUL] = rt_v_matmul};
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
        if (ops[i].state && rt_op_variant(&ops[i]) != RT_B_MODE_SPLIT) { /* a oneDNN matmul */
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

int rt_op_variant(const rt_op *op) { return variants[op->code] ? variants[op->code](op) : -1; }

const char *rt_op_name(int32_t code)
{
    return code >= 0 && code < RT_OP_COUNT ? op_names[code] : NULL;
}

/* Generic part of the check (code, operand count, slots, offsets, every int field against its
 * declared range), then the family's own. */
static int check_op(const rt_op *op, const int64_t *slot_nbytes, int64_t nslots, char *msg,
                    size_t msglen)
{
    RT_CHECK(op->code >= 0 && op->code < RT_OP_COUNT, "unknown op code %d", (int)op->code);
    const rt_family_desc *fam = &rt_op_families[op->code];
    RT_CHECK(op->nargs == fam->nargs, "expects %d operands, got %d", (int)fam->nargs, (int)op->nargs);
    for (int f = 0; f < fam->nfields; f++)
        for (int e = 0; e < fam->fields[f].count; e++) {
            int64_t v = op->ip.all[fam->fields[f].offset + e];
            RT_CHECK(v >= 0 && v <= fam->fields[f].limit, "%s field %s%s = %lld is not in [0, %lld]",
                     fam->name, fam->fields[f].name, fam->fields[f].count > 1 ? "[]" : "", (long long)v,
                     (long long)fam->fields[f].limit);
        }
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

static int run_ops(const rt_op *ops, int64_t nops, char *const *slots, rt_status *st)
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

int rt_program_run(const rt_op *ops, int64_t nops, char *const *slots, rt_status *st)
{
    rt_threads_run_begin();
    int rc = run_ops(ops, nops, slots, st);
    rt_threads_run_end();
    return rc;
}


int64_t rt_cpu_features(void)
{
    int64_t bits = 0, bit = 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
#define RT_FEATURE(NAME, name) if (__builtin_cpu_supports(name)) bits |= bit; bit <<= 1;
    RT_CPU_FEATURES(RT_FEATURE)
#undef RT_FEATURE
#endif
    (void)bit;
    return bits;
}
