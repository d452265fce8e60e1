/* Embedding lookup: out[i] = table[idx[i]], every index checked before any read. The table is
 * read through strides: a tied table stored transposed for its LM head is gathered in place. */
#include "rt_kernel.h"

int rt_k_embedding(const rt_op *op, char *const *arg)
{
    const rt_embedding_ints *ip = &op->ip.embedding;
    const float *table = (const float *)arg[RT_EMBEDDING_TABLE];
    const int64_t *idx = (const int64_t *)arg[RT_EMBEDDING_IDX];
    float *out = (float *)arg[RT_EMBEDDING_OUT];
    int64_t n = ip->n, vocab = ip->vocab, dim = ip->dim, rs = ip->row_stride, cs = ip->col_stride;
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
    const rt_embedding_ints *ip = &op->ip.embedding;
    int64_t shape[2] = {ip->vocab, ip->dim}, stride[2] = {ip->row_stride, ip->col_stride};
    return rt_need(op, avail, RT_EMBEDDING_TABLE, rt_reach(2, shape, stride), 4, "table", msg, msglen) ||
           rt_need(op, avail, RT_EMBEDDING_IDX, ip->n, 8, "idx", msg, msglen) ||
           rt_need(op, avail, RT_EMBEDDING_OUT, rt_mul(ip->n, ip->dim), 4, "out", msg, msglen);
}
