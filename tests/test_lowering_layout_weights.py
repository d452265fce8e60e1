"""IR text in -> pass(es) -> IR text out, compared exactly: fixtures in tests/lowering/layout_weights.ir
(regenerate after a deliberate change with `python -m rt.lowering.lit tests/lowering/layout_weights.ir --update`)."""
from pathlib import Path

import pytest

from rt.lowering.lit import parse_cases

CASES = parse_cases((Path(__file__).parent / "lowering" / "layout_weights.ir").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_layout_weights(case):
    assert case.expect is not None, "fixture has no EXPECT block"
    assert case.run() == case.expect
