"""Convert Qwen2 / Qwen2.5 checkpoints between HF safetensors folders and megatron.core dist checkpoints.

    python tools/convert_checkpoint.py hf-to-mcore --hf-dir Qwen2.5-1.5B --output ckpt/qwen-mcore
    python tools/convert_checkpoint.py mcore-to-hf --load runs/redi --output Qwen2.5-1.5B-redi \
        [--model-config DIR] [--tokenizer-model DIR]

hf-to-mcore output opens at any TP/PP/CP layout with `pretrain_redi.py --pretrained-checkpoint DIR`
(dist_checkpointing reshards on load). mcore-to-hf accepts that folder or a training `--save` folder (its
newest complete iteration). Runs in one CPU process; GPUs are hidden.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    def common(s: argparse.ArgumentParser) -> None:
        s.add_argument("--output", required=True, help="new (or empty) folder to write")
        s.add_argument("--rope-theta", type=float, default=None, help="override rope_theta in the config")
        s.add_argument("--max-position-embeddings", type=int, default=None,
                       help="override max_position_embeddings in the config")
        s.add_argument("--no-progress", action="store_true")

    h = sub.add_parser("hf-to-mcore", help="HF Qwen2 folder -> megatron dist checkpoint")
    h.add_argument("--hf-dir", required=True, help="HF folder: config.json + safetensors shard(s)")
    common(h)
    m = sub.add_parser("mcore-to-hf", help="megatron dist checkpoint -> HF Qwen2 folder")
    m.add_argument("--load", required=True, help="converted checkpoint folder or training --save folder")
    m.add_argument("--model-config", default=None,
                   help="HF config.json (or folder) when the checkpoint does not carry one (training --save)")
    m.add_argument("--tokenizer-model", default=None,
                   help="folder with the tokenizer files (default: those stored at conversion time)")
    m.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB")
    common(m)
    return p


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    # megatron's notices (no TE / Apex here, deprecations inside it) say nothing about a conversion
    warnings.filterwarnings("ignore", module=r"megatron\.")
    from megatron_redi.conversion import convert

    if args.command == "hf-to-mcore":
        out = convert.hf_to_mcore(args.hf_dir, args.output, rope_theta=args.rope_theta,
                                  max_position_embeddings=args.max_position_embeddings,
                                  progress=not args.no_progress)
    else:
        out = convert.mcore_to_hf(args.load, args.output, model_config=args.model_config,
                                  tokenizer_model=args.tokenizer_model, rope_theta=args.rope_theta,
                                  max_position_embeddings=args.max_position_embeddings,
                                  max_shard_size=args.max_shard_size, progress=not args.no_progress)
    print(f"[convert] {args.command}: wrote {out}")
    return out


if __name__ == "__main__":
    # conversion is a CPU job: hide GPUs before torch is imported (megatron's CPU path is the tested one)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from megatron_redi.platform.distributed import run_main

    run_main(main)
