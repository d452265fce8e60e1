"""Developer tools, not part of the compiler: `python -m rt.devtools.lit` (IR-text pass fixtures),
`python -m rt.devtools.stats` (op counts per stage for the reference models), `python -m
rt.devtools.fuzz_files` (mutated model files, loaded and run in child processes)."""
