"""Log-prob kernels and the training objectives (sft, redi, simpo, dpo)."""
