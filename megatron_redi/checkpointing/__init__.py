"""Training checkpoints (dist_checkpointing, atomic) and HF Qwen2 <-> megatron weight mapping."""
