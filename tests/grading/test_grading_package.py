import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_grading_imports_nothing_outside_itself():
    """The grading package sits below evaluation and prep: it imports neither of them, nor megatron,
    torch or transformers."""
    code = (
        "import sys\n"
        "import megatron_redi.grading.extraction, megatron_redi.grading.graders, megatron_redi.grading.pool\n"
        "import megatron_redi.grading.problem, megatron_redi.grading._worker\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('megatron', 'torch', 'transformers', 'vllm')"
        " or (m.startswith('megatron_redi.') and not m.startswith('megatron_redi.grading')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
