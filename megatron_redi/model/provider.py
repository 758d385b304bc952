"""Model provider: build this rank's stage of a Qwen2 model, identically initialised in any layout."""

from __future__ import annotations

import hashlib

import torch

from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape, transformer_config
from megatron_redi.model.gpt import RediGPTModel
from megatron_redi.model.liger import check_liger_request
from megatron_redi.model.specs import final_norm_spec, layer_spec, resolve_impl
from megatron_redi.platform.gpu_features import check_fp8_request


def build_model(shape: Qwen2Shape, build: ModelBuildConfig, *, seed: int = 1234, pre_process: bool = True,
                post_process: bool = True, vp_stage: int | None = None) -> RediGPTModel:
    """Build the model chunk for this rank (pre/post_process say whether it holds embedding/head)."""
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    shape.check_parallel(build.tensor_model_parallel_size, build.pipeline_model_parallel_size)
    check_fp8_request(build.fp8_format, build.transformer_impl)  # never silently train FP8 as BF16
    impl = resolve_impl(build.transformer_impl)
    if impl != "transformer_engine" and "layernorm" in (build.recompute_modules or ()):
        raise RuntimeError("--recompute-modules layernorm needs Transformer Engine (megatron-core's "
                           "output-discarding checkpoint reads TE's FP8 state); without TE use mlp")
    check_liger_request(build.liger_kernels, impl)
    cfg = transformer_config(shape, build)
    spec = layer_spec(impl, build.liger_kernels)
    norm = final_norm_spec(impl, build.liger_kernels)
    if norm is not None:
        # our RMSNorm also for the final norm (megatron's default torch norm refuses SP)
        spec = TransformerBlockSubmodules(layer_specs=[spec] * get_num_layers_to_build(cfg, vp_stage),
                                          layer_norm=norm)
    model = RediGPTModel(
        config=cfg,
        transformer_layer_spec=spec,
        vocab_size=shape.padded_vocab_size(build.tensor_model_parallel_size),
        max_sequence_length=shape.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=shape.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=int(shape.rope_theta) if float(shape.rope_theta).is_integer() else shape.rope_theta,
        true_vocab_size=shape.vocab_size,
        logprob_chunk_size=build.logprob_chunk_size,
        transformer_impl=impl,
        vp_stage=vp_stage,
    )
    if not build.fast_init:
        deterministic_init(model, seed, shape)
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    return model


def _seed_for(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") % (2**63)


def global_param_name(model, local_name: str) -> str:
    """Name of a parameter in the unsplit single-stage model (pipeline layer offset applied)."""
    if local_name.startswith("decoder.layers."):
        parts = local_name.split(".")
        layer = model.decoder.layers[int(parts[2])]
        parts[2] = str(layer.layer_number - 1)
        return ".".join(parts)
    if local_name == "output_layer.weight" and model.share_embeddings_and_output_weights:
        return "embedding.word_embeddings.weight"  # the last stage's copy of a tied embedding
    return local_name


@torch.no_grad()
def deterministic_init(model, seed: int, shape: Qwen2Shape) -> None:
    """Re-initialise every weight from a generator keyed by (seed, global name), then keep this rank's
    shard. Megatron's CPU init already agrees across TP, but its RNG stream depends on which layers a
    pipeline stage builds; keying by name makes TP, PP, CP and DP layouts start from one model."""
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    std = shape.initializer_range
    for name, p in model.named_parameters():
        gname = global_param_name(model, name)
        if name.endswith("layer_norm_weight") or "layernorm" in name or name.endswith("norm.weight"):
            p.fill_(1.0)
            continue
        if name.endswith(".bias"):
            p.zero_()
            continue
        gen = torch.Generator().manual_seed(_seed_for(seed, gname))
        if getattr(p, "tensor_model_parallel", False) and tp > 1:
            dim = p.partition_dim
            stride = getattr(p, "partition_stride", 1)
            full_shape = list(p.shape)
            full_shape[dim] *= tp
            full = torch.empty(full_shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
            per = p.shape[dim] // stride
            pieces = torch.split(full, per, dim=dim)
            mine = torch.cat(pieces[rank::tp], dim=dim)
            p.copy_(mine.to(p.dtype))
        else:
            full = torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
            p.copy_(full.to(p.dtype))
    # padded vocabulary rows stay zero so they never look like real tokens
    _zero_vocab_padding(model, shape, tp, rank)


def _zero_vocab_padding(model, shape: Qwen2Shape, tp: int, rank: int) -> None:
    mats = []
    if getattr(model, "pre_process", False):
        mats.append(model.embedding.word_embeddings.weight)
    if getattr(model, "post_process", False) and not model.share_embeddings_and_output_weights:
        mats.append(model.output_layer.weight)
    for w in mats:
        start = rank * w.shape[0]
        pad_from = shape.vocab_size - start
        if pad_from < w.shape[0]:
            w[max(pad_from, 0):].zero_()
