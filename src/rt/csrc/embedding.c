/* Embedding lookup: out[i] = table[idx[i]], every index checked before any read. The table is
 * read through strides: a tied table stored transposed for its LM head is gathered in place. */
#include "rt_kernel.h"

int rt_k_embedding(const rt_op *op, char *const *arg)
{
    const float *table = (const float *)arg[0];
    const int64_t *idx = (const int64_t *)arg[1];
    float *out = (float *)arg[2];
    int64_t n = op->ip[0], vocab = op->ip[1], dim = op->ip[2], rs = op->ip[3], cs = op->ip[4];
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= vocab) {
            rt_set_error_detail(idx[i]);
            return RT_ERR_INDEX;
        }
    if (cs == 1)
        RT_FOR(n * dim >= RT_PAR_MIN_ELEMS, i, n,
               memcpy(out + i * dim, table + idx[i] * rs, (size_t)dim * sizeof(float)););
    else
        RT_FOR(n * dim >= RT_PAR_MIN_ELEMS, i, n, {
            const float *row = table + idx[i] * rs;
            for (int64_t j = 0; j < dim; j++) out[i * dim + j] = row[j * cs];
        });
    return RT_OK;
}

int rt_c_embedding(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    if (rt_check_nargs(op, 3, msg, msglen) || rt_check_dims(op, 0, 5, msg, msglen)) return 1;
    int64_t n = op->ip[0], vocab = op->ip[1], dim = op->ip[2];
    int64_t shape[2] = {vocab, dim}, stride[2] = {op->ip[3], op->ip[4]};
    return rt_need(op, avail, 0, rt_reach(2, shape, stride), 4, "table", msg, msglen) ||
           rt_need(op, avail, 1, n, 8, "idx", msg, msglen) ||
           rt_need(op, avail, 2, rt_mul(n, dim), 4, "out", msg, msglen);
}
