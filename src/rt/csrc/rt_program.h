/* rt runtime ABI: the op record, kernel/checker signatures, program entry points. */
#ifndef RT_PROGRAM_H
#define RT_PROGRAM_H

#include <stddef.h>
#include <stdint.h>

#define RT_MAX_ARGS 8
#define RT_MAX_IP 40
#define RT_MAX_FP 4
#define RT_MAX_NDIM 6

/* One op of a program. Mirrored by rt.kernels._runtime.RECORD_DTYPE. */
typedef struct rt_op {
    int32_t code;
    int32_t nargs;
    int32_t slot[RT_MAX_ARGS];   /* buffer slot of each operand; -1 = absent optional operand */
    int64_t offset[RT_MAX_ARGS]; /* byte offset inside the slot */
    int64_t ip[RT_MAX_IP];       /* integer params, layout per op in rt_ops.def */
    double fp[RT_MAX_FP];        /* float params */
    void *state;                 /* what rt_op_prepare made for the op (NULL from Python) */
} rt_op;

/* Changing the record is an ABI break for saved programs: these pin it. */
_Static_assert(sizeof(rt_op) == 464, "rt_op size");
_Static_assert(offsetof(rt_op, slot) == 8, "rt_op.slot");
_Static_assert(offsetof(rt_op, offset) == 40, "rt_op.offset");
_Static_assert(offsetof(rt_op, ip) == 104, "rt_op.ip");
_Static_assert(offsetof(rt_op, fp) == 424, "rt_op.fp");
_Static_assert(offsetof(rt_op, state) == 456, "rt_op.state");

enum rt_op_code {
#define RT_OP(name, kernel, checker) RT_OP_##name,
#include "rt_ops.def"
#undef RT_OP
    RT_OP_COUNT
};

enum rt_dtype { RT_DTYPE_F32 = 0, RT_DTYPE_I64 = 1, RT_DTYPE_BOOL = 2, RT_DTYPE_I32 = 3, RT_DTYPE_COUNT };

/* MATMUL epilogue activations (ip[16]). */
enum rt_act { RT_ACT_NONE = 0, RT_ACT_RELU = 1, RT_ACT_GELU_TANH = 2, RT_ACT_GELU_ERF = 3, RT_ACT_COUNT };

/* Kernel return codes. */
enum rt_error { RT_OK = 0, RT_ERR_INDEX = 1, RT_ERR_NOMEM = 2, RT_ERR_BACKEND = 3 };

/* One-row products on weights of at most this many elements run rt's own loops (matvec.c);
 * larger constant ones are worth the split form (b_mode split). */
#define RT_MATVEC_SMALL_ELEMS (128 * 128)
/* Inputs per encoded chunk of the split form; a row's last k % RT_SPLIT_CHUNK stay plain floats. */
#define RT_SPLIT_CHUNK 64

/* How MATMUL reads B (ip[19]): BLAS; oneDNN reading the constant B in place; oneDNN reading
 * a copy of the constant B reordered once into the layout its kernel prefers; rt's one-row
 * kernel reading a copy of the constant B stored in 3.5 bytes per float (matvec_split.c). */
enum rt_matmul_b {
    RT_MATMUL_B_BLAS = 0,
    RT_MATMUL_B_ONEDNN = 1,
    RT_MATMUL_B_PACKED = 2,
    RT_MATMUL_B_SPLIT = 3
};

/* arg[i] = slot base + offset, or NULL when absent. Returns RT_OK or an rt_error. */
typedef int (*rt_kernel_fn)(const rt_op *op, char *const *arg);
/* avail[i] = bytes from operand i's offset to the end of its slot (-1 absent).
 * Returns 0, or nonzero with a message in msg. */
typedef int (*rt_checker_fn)(const rt_op *op, const int64_t *avail, char *msg, size_t msglen);

#define RT_OP(name, kernel, checker)                           \
    int kernel(const rt_op *op, char *const *arg);             \
    int checker(const rt_op *op, const int64_t *avail, char *msg, size_t msglen);
#include "rt_ops.def"
#undef RT_OP

/* Why a run stopped: kernel error code, failing op, and a detail (e.g. the bad index). */
typedef struct rt_status {
    int32_t code;
    int32_t op_index;
    int64_t detail;
} rt_status;

const char *rt_op_name(int32_t code); /* NULL when out of range */

/* Scratch floats one thread of ATTENTION needs (the planner sizes its scratch buffer with it). */
int64_t rt_attention_scratch_floats(int64_t Sk, int64_t D, int64_t Dv);

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
/* 1 when this CPU runs the split form's fast decoder (b_mode split is chosen only then). */
int rt_split_fast(void);

/* Run a validated program; slots[i] is the base address of slot i. Returns status.code. */
int rt_program_run(const rt_op *ops, int64_t nops, char *const *slots, rt_status *st);

/* Threads used by rt's OpenMP loops and by OpenBLAS, kept in step. */
void rt_set_num_threads(int n);
int rt_get_num_threads(void);

#endif
