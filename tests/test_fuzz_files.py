"""The file fuzzer's bounded run (rt.devtools.fuzz_files; the long run is its command line): mutants of
an MLP's and a causal block's files, each loaded and run in a child process, give no crash, hang,
non-rt exception or answer that disagrees with the reference interpreter of the program that loaded."""
from rt.devtools.fuzz_files import DEFECTS, fuzz, reference_models


def test_a_hundred_and_fifty_mutants_of_each_model_show_no_defect(tmp_path):
    report = fuzz(reference_models(["mlp", "causal"]), 150, seed=15, timeout=60, keep=str(tmp_path))
    assert report.defects == [], report.defects[:5]
    for model, row in report.counts.items():
        assert sum(row.values()) == 150 and not any(row[d] for d in DEFECTS), (model, row)
        assert row["refused"] > 75 and row["same"] > 0 and row["other"] > 0, (model, row)
