"""`rt compile --generator` and `rt generate`: a generator compiled from a file, and text from it.

A generator compiles from a transformers checkpoint directory (config.json and weights, read with
`from_pretrained(..., local_files_only=True)`: nothing is downloaded) or from a torch.export.save file
whose sequence length is dynamic. `rt generate` prints each new token id as it is chosen, or, with a
tokenizer (the optional `tokenizers` package), the text."""
from __future__ import annotations

import os
import sys

from .errors import InputError, ModelFileError, UsageError, require


def load_source(path: str):
    """The model a generator compiles from: an HF checkpoint directory's causal LM, or a .pt2."""
    torch = require("torch", "rt compile --generator")
    if os.path.isdir(path):
        transformers = require("transformers", "rt compile --generator from a checkpoint directory")
        try:
            return transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                                     dtype=torch.float32).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ModelFileError(f"cannot load a causal LM from {path}: {e}") from None
    from .cli import load_exported
    return load_exported(path)


def compile_to_file(args) -> int:
    import rt
    if args.max_context is None:
        raise UsageError("--generator needs --max-context (the most tokens a prompt and its continuation hold)")
    source = load_source(args.model)
    from .weight_formats import describe_weight_bytes
    gen = rt.compile_generator(source, max_context=args.max_context, max_batch=args.max_batch,
                               weights=args.weights, lm_head=args.lm_head)
    gen.save(args.output)
    print(f"compiled {args.model} -> {args.output}: generator, {gen.plan_summary()}; "
          f"weights: {describe_weight_bytes(gen.weight_bytes())}")
    return 0


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"--prompt-ids takes integers separated by commas, got {text!r}") from None


def _tokenizer(path: str):
    tokenizers = require("tokenizers", "rt generate --tokenizer")
    try:
        return tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - any reason the file is not a tokenizer
        raise InputError(f"cannot read the tokenizer {path}: {e}") from None


def generate(args) -> int:
    import rt
    from .generation import Generator
    if (args.prompt_ids is None) == (args.prompt is None):
        raise UsageError("give the prompt as --prompt-ids 1,2,3 or as --prompt TEXT with --tokenizer")
    tok = None
    if args.prompt is not None:
        if args.tokenizer is None:
            raise UsageError("--prompt TEXT needs --tokenizer tokenizer.json (or give --prompt-ids)")
        tok = _tokenizer(args.tokenizer)
        prompt = tok.encode(args.prompt).ids
    else:
        prompt = _ids(args.prompt_ids[0])
    gen = rt.load(args.model)
    if not isinstance(gen, Generator):
        raise UsageError(f"{args.model} is a model, not a generator: compile it with `rt compile --generator`")
    if args.prompt_ids is not None and len(args.prompt_ids) > 1:
        return _generate_batch(gen, [_ids(p) for p in args.prompt_ids], args)
    stream = gen.stream(prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, seed=args.seed, stop_tokens=_ids(args.stop) if args.stop else ())
    new: list[int] = []
    shown = ""
    for token in stream:
        new.append(token)
        if tok is None:
            print(token, end=" ", flush=True)
        else:                       # the text so far, less what is already on screen
            text = tok.decode(new)
            print(text[len(shown):], end="", flush=True)
            shown = text
    print()
    if args.timing:
        t = gen.last_timings
        rate = f", decode {t['decode_tokens_per_s']:.1f} tokens/s" if "decode_tokens_per_s" in t else ""
        print(f"prefill {t.get('prefill_ms', 0):.1f} ms ({len(prompt)} tokens){rate}, {len(new)} new tokens",
              file=sys.stderr)
    return 0


def _generate_batch(gen, prompts: list[list[int]], args) -> int:
    """Several --prompt-ids: decoded together, each sequence's ids on a line of its own."""
    for seq in gen.generate_batch(prompts, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, seed=args.seed, stop_tokens=_ids(args.stop) if args.stop else ()):
        print(" ".join(map(str, seq)))
    if args.timing:
        t = gen.last_timings
        print(f"prefill {t['prefill_ms']:.1f} ms ({t['prompt_tokens']} tokens in {len(prompts)} prompts), decode "
              f"{t.get('decode_tokens_per_s', 0):.1f} tokens/s", file=sys.stderr)
    return 0


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate tokens from a compiled generator (torch not needed)")
    p.add_argument("model", help="a generator file (from `rt compile --generator` or Generator.save)")
    p.add_argument("--prompt-ids", action="append", help="the prompt's token ids: 1,2,3 (repeated: a batch, "
                                                         "for a generator compiled with --max-batch)")
    p.add_argument("--prompt", help="the prompt as text (with --tokenizer; needs the tokenizers package)")
    p.add_argument("--tokenizer", help="a tokenizer.json (tokenizers package) to encode --prompt and print text")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", help="token ids that end the generation (included): 2,7")
    p.add_argument("--timing", action="store_true", help="print prefill ms and decode tokens/s to stderr")
    p.set_defaults(func=generate)
