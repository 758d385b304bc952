"""Qwen2-architecture GPT models on megatron-core: config mapping, layer specs, attention."""
