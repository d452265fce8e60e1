"""IR text in -> pass(es) -> IR text out, compared exactly: fixtures in tests/lowering/absorb_matmul_operands.ir
(regenerate after a deliberate change with `python -m rt.lowering.lit tests/lowering/absorb_matmul_operands.ir --update`)."""
from pathlib import Path

import pytest

from rt.lowering.lit import parse_cases

CASES = parse_cases((Path(__file__).parent / "lowering" / "absorb_matmul_operands.ir").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_absorb_matmul_operands(case):
    assert case.expect is not None, "fixture has no EXPECT block"
    assert case.run() == case.expect
