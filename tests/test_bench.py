"""The benchmark harness runs end to end on the smallest case and writes its JSON (no timing asserted)."""
import json
import subprocess
import sys


def test_bench_smoke(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "rt.cli", "bench", "--cases", "mlp_tiny", "--engines", "rt", "eager",
                        "--rounds", "1", "--round-seconds", "0.05", "--quiet-wait", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mlp_tiny_64_b1" in r.stdout and "eager" in r.stdout
    data = json.loads(out.read_text())
    assert "mlp_tiny" in json.dumps(data)
