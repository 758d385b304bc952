import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_package_imports_nothing_heavy_or_outside_itself():
    """Usable without megatron-core: importing the CLI and runner pulls in neither megatron, nor the
    rest of megatron_redi (but the grading package), nor torch / transformers / vLLM (those load only
    when a model runs)."""
    code = (
        "import sys\n"
        "import megatron_redi.evaluation.cli, megatron_redi.evaluation.runner\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('megatron', 'torch', 'transformers', 'vllm')"
        " or (m.startswith('megatron_redi.') and not m.startswith(('megatron_redi.evaluation',"
        " 'megatron_redi.grading'))))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tool_script_help():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "eval_math.py"), "--help"], cwd="/",
                         capture_output=True, text=True, check=True)
    assert "--grade-jsonl" in out.stdout and "math500:prm800k" in out.stdout
