"""The fused dialect's pattern passes: one module per pass, each a list of `Pattern`s handed to the one
rewrite engine (lowering/rewrite.py). A new fusion is a new `Pattern(...)` in the right list (and a
kernel), not a new pass. Importing this package registers every pass.
"""
from . import (absorb_causal_mask, absorb_matmul_operands, canonicalize, channels_last, fuse_attention,  # noqa: F401
               fuse_attention_views, fuse_conv, fuse_dag, fuse_matmul_epilogues, lower_composites)
