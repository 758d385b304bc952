"""Run pretrain_redi.main once per layout inside ONE torchrun job (imports and start-up paid once).

usage: layout_driver.py OUT_DIR NAME=--flag,value,... [NAME=...] -- <common pretrain args>
"""

from __future__ import annotations

import sys


def main() -> None:
    from megatron.core import parallel_state

    import pretrain_redi

    out_dir = sys.argv[1]
    sep = sys.argv.index("--")
    specs, common = sys.argv[2:sep], sys.argv[sep + 1 :]
    for spec in specs:
        name, _, flags = spec.partition("=")
        extra = [f for f in flags.split(",") if f]
        pretrain_redi.main([*common, *extra, "--metrics-file", f"{out_dir}/{name}.jsonl"])
        parallel_state.destroy_model_parallel()


if __name__ == "__main__":
    main()
