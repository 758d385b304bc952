"""megatron-redi: Reinforcement Distillation (REDI) post-training on Megatron-Core."""

__version__ = "0.1.0"
