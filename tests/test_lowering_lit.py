"""Every IR-text fixture in tests/lowering/*.ir, case by case: IR in -> the case's PASSES -> IR out,
compared exactly. A new fixture file runs without new Python. After a deliberate change, regenerate
with `python -m rt.devtools.lit tests/lowering/FILE.ir --update` and review the diff."""
from pathlib import Path

import pytest

from rt.devtools.lit import format_cases, main, parse_cases

FIXTURES = sorted((Path(__file__).parent / "lowering").glob("*.ir"))
CASES = [(f, c) for f in FIXTURES for c in parse_cases(f.read_text())]


@pytest.mark.parametrize("fixture,case", CASES, ids=[f"{f.stem}: {c.name}" for f, c in CASES])
def test_fixture_case(fixture, case):
    assert case.passes, f"{fixture.name}: case {case.name!r} names no PASSES"
    assert case.expect is not None, f"{fixture.name}: case {case.name!r} has no EXPECT block"
    assert case.run() == case.expect


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_fixture_is_in_canonical_form(fixture):
    # what `--update` writes back: a fixture that passes would be rewritten byte for byte
    assert format_cases(parse_cases(fixture.read_text())) == fixture.read_text()


def test_command_line_reports_failures(tmp_path, capsys):
    case = parse_cases(FIXTURES[0].read_text())[0]
    good = tmp_path / "good.ir"
    good.write_text(format_cases([case]))
    assert main([str(good)]) == 0
    bad = tmp_path / "bad.ir"
    bad.write_text(format_cases([case], ["module @wrong() -> () {\n}\n"]))
    assert main([str(bad)]) == 1 and "FAIL" in capsys.readouterr().out
    assert main([str(bad), "--update"]) == 0 and bad.read_text() == good.read_text()
