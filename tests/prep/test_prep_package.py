import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported(modules: str, outside: str) -> list[str]:
    code = (
        "import sys\n"
        f"import {modules}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'megatron' or m == 'torch.distributed'"
        f" or m.startswith({outside})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return eval(out.stdout.strip())


def test_prep_imports_only_downward():
    """prep sits below training and evaluation and needs no megatron: the builder imports neither."""
    names = ("builder", "config", "rules", "regrade", "sink", "report", "lengths", "decontaminate", "raw_synthetic")
    mods = ", ".join(f"megatron_redi.prep.{m}" for m in names)
    assert _imported(mods, "('megatron_redi.training', 'megatron_redi.evaluation', 'megatron_redi.model')") == []


def test_data_readers_import_nothing_above_data():
    mods = "megatron_redi.data.schema, megatron_redi.data.readers, megatron_redi.data.errors"
    assert _imported(mods, "('megatron_redi.prep', 'megatron_redi.grading', 'megatron_redi.evaluation')") == []
