/* rt runtime ABI: the op record, kernel/checker signatures, program entry points. */
#ifndef RT_PROGRAM_H
#define RT_PROGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "rt_abi.h"

/* One op of a program: operands, then its family's fields (rt/abi.py). Mirrored by
 * rt.kernels.records.RECORD_DTYPE, checked against it at import. */
typedef struct rt_op {
    int32_t code;
    int32_t nargs;
    int32_t slot[RT_MAX_ARGS];   /* buffer slot of each operand; -1 = absent optional operand */
    int64_t offset[RT_MAX_ARGS]; /* byte offset inside the slot */
    rt_op_ints ip;               /* ip.<family>.<field> */
    rt_op_floats fp;             /* fp.<family>.<field> */
    void *state;                 /* what rt_op_prepare made for the op (NULL from Python) */
} rt_op;

enum rt_op_code {
#define RT_OP_ENUM(name, family, kernel, checker) RT_OP_##name,
    RT_OPS(RT_OP_ENUM)
#undef RT_OP_ENUM
    RT_OP_COUNT
};

/* arg[i] = slot base + offset, or NULL when absent. Returns RT_OK or an rt_error. */
typedef int (*rt_kernel_fn)(const rt_op *op, char *const *arg);
/* avail[i] = bytes from operand i's offset to the end of its slot (-1 absent).
 * Returns 0, or nonzero with a message in msg. */
typedef int (*rt_checker_fn)(const rt_op *op, const int64_t *avail, char *msg, size_t msglen);

#define RT_OP_DECL(name, family, kernel, checker)              \
    int kernel(const rt_op *op, char *const *arg);             \
    int checker(const rt_op *op, const int64_t *avail, char *msg, size_t msglen);
RT_OPS(RT_OP_DECL)
#undef RT_OP_DECL

/* Why a run stopped: kernel error code, failing op, and a detail (e.g. the bad index). */
typedef struct rt_status {
    int32_t code;
    int32_t op_index;
    int64_t detail;
} rt_status;

const char *rt_op_name(int32_t code); /* NULL when out of range */

/* Scratch floats one thread of ATTENTION needs (the planner sizes its scratch buffer with it). */
int64_t rt_attention_scratch_floats(int64_t Sk, int64_t D, int64_t Dv);
/* matmul_packed.c: bytes of a [n, k] weight packed in weight format fmt, and QMATMUL's scratch bytes. */
int64_t rt_qweight_bytes(int fmt, int64_t n, int64_t k, int64_t group, int zp);
int64_t rt_qmatmul_scratch_bytes(int fmt, int64_t m, int64_t k);
/* conv.c: a Winograd CONV's tiles per chunk, and its scratch bytes (n images of oh x ow outputs,
 * c -> o channels, m x m output tiles). */
int64_t rt_conv_winograd_chunk(int64_t tiles, int64_t c, int64_t o, int64_t m);
int64_t rt_conv_winograd_scratch_bytes(int64_t n, int64_t oh, int64_t ow, int64_t c, int64_t o, int64_t m);

/* Validate a whole program once. Returns the index of the first bad op (message in
 * msg), or -1 when all ops are valid. */
int64_t rt_program_check(const rt_op *ops, int64_t nops, const int64_t *slot_nbytes,
                         int64_t nslots, char *msg, size_t msglen);

/* Make what a validated op needs before it can run (oneDNN primitives, packed weights)
 * and store it in op->state; arg as at run time, with NULL for arena, input and output
 * operands. Returns 0, or nonzero with a message. rt_op_release frees it. */
int rt_op_prepare(rt_op *op, char *const *arg, char *msg, size_t msglen);
void rt_op_release(rt_op *op);
/* Called once a program's ops are all prepared: gives back memory only preparing needed
 * (when some op made oneDNN primitives: the library code their creation touched). */
void rt_program_prepared(const rt_op *ops, int64_t nops);
/* Whether rt was built with oneDNN (MATMUL's b_mode may then be oneDNN or packed). */
int rt_have_onednn(void);
/* 1 when this CPU runs the split form's fast decoder (b_mode split is accepted only then). */
int rt_split_fast(void);
/* This CPU's features: bit i set when RT_CPU_FEATURES' i-th feature is present. */
int64_t rt_cpu_features(void);
/* How a prepared op runs when that differs from its record (state, never a rewritten record):
 * MATMUL's b_mode after preparing (split weights too spread out for the form run on BLAS);
 * -1 for ops that have no such choice. */
int rt_op_variant(const rt_op *op);

/* Run a validated program; slots[i] is the base address of slot i. Returns status.code. */
int rt_program_run(const rt_op *ops, int64_t nops, char *const *slots, rt_status *st);

/* Threads for rt's OpenMP loops (OpenBLAS stays on one): n asked for; with adapt, runs use fewer while
 * other processes keep cores busy (threads.c). rt_get_num_threads is n, rt_threads_in_use the count now. */
void rt_set_num_threads(int n, int adapt);
int rt_get_num_threads(void);
int rt_threads_in_use(void);
/* Around each run: where the count may follow the free cores (threads.c). */
void rt_threads_run_begin(void);
void rt_threads_run_end(void);

#endif
