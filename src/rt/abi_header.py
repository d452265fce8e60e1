"""Writes rt_abi.h, C's view of rt/abi.py (run by the build: `python abi_header.py abi.py rt_abi.h`).

For each op family: a struct of its int fields and one of its float fields (members of the unions
`rt_op.ip` and `rt_op.fp`), an enum of its operand indices (RT_<FAMILY>_<ARG>, RT_<FAMILY>_NARGS) and a
table of its int fields for the generic range check; for the whole ABI: constants, enums and the op
list as the X-macro RT_OPS(X) with X(NAME, family, kernel, checker).
"""
from __future__ import annotations

import importlib.util
import sys


def _load(path: str):
    spec = importlib.util.spec_from_file_location("rt_abi_source", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod           # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _c_id(name: str) -> str:
    return name.replace(".", "_").upper()


def render(abi) -> str:
    out = ["/* Generated from rt/abi.py by rt/abi_header.py: edit abi.py, not this file. */",
           "#ifndef RT_ABI_H", "#define RT_ABI_H", "", "#include <stddef.h>", "#include <stdint.h>", ""]
    for name in ("MAX_ARGS", "MAX_IP", "MAX_FP", "MAX_NDIM", "ALIGN", "MATVEC_SMALL_ELEMS", "SPLIT_CHUNK", "QPANEL", "QBLOCK",
                 "ATTENTION_BQ", "ATTENTION_BK", "ATTENTION_LANES", "WINO_CHUNK_BYTES", "WINO_MIN_CHUNK"):
        out.append(f"#define RT_{name} {getattr(abi, name)}")
    out.append(f"#define RT_INT4NL_LEVELS {{{', '.join(map(str, abi.INT4NL_LEVELS))}}}")
    out.append(f"#define RT_MAX_EXTENT (INT64_C(1) << {abi.MAX_EXTENT.bit_length() - 1})")
    out.append("")
    for enum, names in abi.ENUMS.items():
        prefix = "RT_ERR" if enum == "error" else f"RT_{enum.upper()}"
        items = ", ".join(f"{prefix}_{_c_id(n)} = {i}" for i, n in enumerate(names))
        out.append(f"enum rt_{enum} {{ {items}, {prefix}_COUNT }};")
    out.append("#define RT_OK RT_ERR_OK")
    feats = " ".join(f'X({_c_id(f)}, "{f}")' for f in abi.CPU_FEATURES)
    out += [f"/* X(NAME, name for __builtin_cpu_supports): bit i of rt_cpu_features() */",
            f"#define RT_CPU_FEATURES(X) {feats}", ""]

    for fam in abi.FAMILIES:
        F = fam.name.upper()
        out.append("/* " + fam.name + ": " + " ".join(fam.doc.split()) + " */")
        args = ", ".join(f"RT_{F}_{a.name.upper()}" for a in fam.args)
        out.append(f"enum {{ {args}, RT_{F}_NARGS }};")
        members = " ".join(f"int64_t {f.name}" + (f"[{f.count}]" if f.count > 1 else "") + ";"
                           for f in fam.ints) or "int64_t unused_;"
        out.append(f"typedef struct {{ {members} }} rt_{fam.name}_ints;")
        floats = " ".join(f"double {f.name};" for f in fam.floats) or "double unused_;"
        out.append(f"typedef struct {{ {floats} }} rt_{fam.name}_floats;")
        out.append("")

    ints = " ".join(f"rt_{f.name}_ints {f.name};" for f in abi.FAMILIES)
    floats = " ".join(f"rt_{f.name}_floats {f.name};" for f in abi.FAMILIES)
    out += [f"typedef union {{ int64_t all[RT_MAX_IP]; {ints} }} rt_op_ints;",
            f"typedef union {{ double all[RT_MAX_FP]; {floats} }} rt_op_floats;", ""]

    ops = " ".join(f"X({o.name}, {o.family.name}, {o.kernel}, rt_c_{o.family.name})" for o in abi.OPS)
    out += ["/* X(NAME, family, kernel, checker); the op code is the position. */",
            f"#define RT_OPS(X) {ops}", ""]

    # Int-field tables (offset, count, largest valid value) for the generic check in program.c.
    out += ["typedef struct { const char *name; int32_t offset, count; int64_t limit; } rt_field;",
            "typedef struct { const char *name; int32_t nargs, nfields; const rt_field *fields; } rt_family_desc;",
            "#ifdef RT_ABI_FIELD_TABLES"]
    for fam in abi.FAMILIES:
        rows = ", ".join(f'{{"{f.name}", {off}, {f.count}, {"RT_MAX_EXTENT" if f.enum is None else f.limit}}}'
                         for f, off in ((f, o) for (o, f) in fam.int_offsets().values()))
        out.append(f"static const rt_field rt_{fam.name}_fields[] = {{ {rows or '{0}'} }};")
    out.append("/* Per op code: its family's operand count and int fields. */")
    out.append("static const rt_family_desc rt_op_families[] = {")
    out += [f"    {{\"{o.family.name}\", RT_{o.family.name.upper()}_NARGS, {len(o.family.ints)}, "
            f"rt_{o.family.name}_fields}}," for o in abi.OPS]
    out += ["};", "#endif", "", "#endif", ""]
    return "\n".join(out)


if __name__ == "__main__":
    src, dst = sys.argv[1:]
    text = render(_load(src))
    with open(dst, "w") as f:
        f.write(text)
