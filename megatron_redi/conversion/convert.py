"""HF Qwen2 folder <-> megatron.core dist checkpoint, streamed, in one CPU process.

hf-to-mcore saves `{"model": sharded_state_dict}` of an unsplit (TP1/PP1) model, which is what
`training.checkpoint.load_pretrained` loads; dist_checkpointing reshards it into any TP/PP/CP layout
at load time (vocabulary rows carry TP1 padding; megatron loads them with `allow_shape_mismatch`, so
other paddings work too). The key structure comes from a model built on the meta device by
`build_model`, i.e. it is the one megatron itself saves and loads, and no weight is ever initialised.
Beside the dist checkpoint files the folder keeps the HF config (`hf_config.json`), the tokenizer and
generation files (`hf_assets/`) and where they came from (`redi_conversion.json`), so export needs
nothing else.

mcore-to-hf reads one layer at a time (dist_checkpointing reads only the requested slices, from any
layout a checkpoint was saved in) and writes each safetensors shard as soon as it is complete.
Both directions write to a temporary folder that is renamed into place at the end: an interrupted
conversion never looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from megatron_redi.checkpointing.integrity import newest_readable_model_dir
from megatron_redi.checkpointing.layout import ASSETS_DIR, HF_CONFIG, copy_assets, model_checkpoint_dir
from megatron_redi.conversion.hf_mapping import (
    IGNORED_HF,
    MCORE_LAYER_SUFFIXES,
    TE_NORM_NAMES,
    VOCAB_KEYS,
    Dims,
    HFToMegatron,
    describe_shape_mismatch,
    hf_expected_shapes,
    hf_from_megatron,
    hf_layer_count,
    hf_tensor_order,
    mcore_checkpoint_shapes,
    pad_vocab,
)
from megatron_redi.model.config import Qwen2Shape
from megatron_redi.model.unwrap import unwrap_model
from megatron_redi.model.vocab import check_vocab_fits

CONVERSION_META = "redi_conversion.json"
INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
EMBED = "embedding.word_embeddings.weight"
_ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32",
                torch.float64: "float64"}
# checkpoint keys of the two pre-norms: megatron saves the TE-fused names for both specs; checkpoints
# from other tools may use the local-spec names. Either is read.
_NORM_KEY_ALIASES = {f"decoder.layers.{te}": f"decoder.layers.{local}" for local, te in TE_NORM_NAMES.items()}


class ConversionError(ValueError):
    """A checkpoint, config or flag that cannot be converted; the message says what differs."""


# ------------------------------------------------------------------------------------------------ config

def apply_overrides(cfg: dict, rope_theta: float | None, max_position_embeddings: int | None) -> dict:
    """Copy of an HF config with --rope-theta / --max-position-embeddings written in (the top-level key
    and transformers 5's `rope_parameters` alike, so every loader reads the same value)."""
    cfg = json.loads(json.dumps(cfg))
    if rope_theta is not None:
        cfg["rope_theta"] = float(rope_theta)
        if isinstance(cfg.get("rope_parameters"), dict):
            cfg["rope_parameters"]["rope_theta"] = float(rope_theta)
    if max_position_embeddings is not None:
        cfg["max_position_embeddings"] = int(max_position_embeddings)
    return cfg


def shape_from_config(cfg: dict, src: str) -> Qwen2Shape:
    """Qwen2Shape through the one config reader the trainer and scorer use, which refuses configs whose
    model the megatron side does not implement (the logits would silently differ from HF's)."""
    try:
        return Qwen2Shape.from_hf(cfg, source=src)
    except ValueError as e:
        raise ConversionError(str(e)) from None


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{p}: not valid JSON ({e})") from None


def _numel(shape: Iterable[int]) -> int:
    return int(torch.Size(tuple(shape)).numel())


# ------------------------------------------------------------------------------------------- HF reading

@dataclasses.dataclass
class HFCheckpoint:
    """An HF folder after validation: config, shard files and each tensor's (file, shape, dtype)."""

    path: Path
    config: dict
    shape: Qwen2Shape
    files: list[Path]
    tensors: dict[str, tuple[Path, tuple[int, ...], torch.dtype]]

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors["model.embed_tokens.weight"][2]

    def nbytes(self) -> int:
        return sum(_numel(s) * dt.itemsize for _, s, dt in self.tensors.values())


def _shard_files(hf_dir: Path) -> tuple[list[Path], dict[str, str] | None]:
    index = hf_dir / INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{index}: no weight_map")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (hf_dir / n).is_file()]
        if missing:
            raise ConversionError(f"{hf_dir}: shard(s) {missing} listed in {INDEX} are missing "
                                  f"({len(names) - len(missing)} of {len(names)} present)")
        return [hf_dir / n for n in names], weight_map
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single], None
    found = sorted(hf_dir.glob("*.safetensors"))
    if len(found) == 1:
        return found, None
    if found:
        raise ConversionError(f"{hf_dir}: {len(found)} safetensors files but no {INDEX} saying which to use")
    bins = sorted(p.name for p in hf_dir.glob("*.bin"))
    hint = f" (found {bins[:3]}: save them as safetensors first)" if bins else ""
    raise ConversionError(f"{hf_dir}: no model.safetensors or {INDEX}{hint}")


def _read_headers(files: list[Path]) -> dict[str, tuple[Path, tuple[int, ...], torch.dtype]]:
    from safetensors import safe_open

    tensors: dict[str, tuple[Path, tuple[int, ...], torch.dtype]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                heads = [(n, sf.get_slice(n)) for n in sf.keys()]
                heads = [(n, tuple(s.get_shape()), s.get_dtype()) for n, s in heads]
        except Exception as e:  # safetensors has its own error types for truncated / corrupt files
            raise ConversionError(f"{f}: cannot read the safetensors header ({e})") from None
        for name, shape, st_dtype in heads:
            if name in tensors:
                raise ConversionError(f"{name} is stored twice: in {tensors[name][0].name} and {f.name}")
            if st_dtype not in _ST_DTYPES:
                raise ConversionError(f"{f.name}: {name} has dtype {st_dtype}, expected a float type")
            tensors[name] = (f, shape, _ST_DTYPES[st_dtype])
    return tensors


def inspect_hf(hf_dir: str | Path, *, rope_theta: float | None = None,
               max_position_embeddings: int | None = None) -> HFCheckpoint:
    """Read config.json and the safetensors headers (no weights) and check that they describe one
    Qwen2 model; raises ConversionError naming the config field, tensor or file that differs."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ConversionError(f"--hf-dir {hf_dir} is not a directory")
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{hf_dir}: no config.json")
    cfg = apply_overrides(_read_json(cfg_path), rope_theta, max_position_embeddings)
    shape = shape_from_config(cfg, str(cfg_path))
    files, weight_map = _shard_files(hf_dir)
    tensors = _read_headers(files)
    if weight_map is not None:
        wrong = sorted(n for n, fn in weight_map.items() if n not in tensors or tensors[n][0] != hf_dir / fn)
        if wrong:
            raise ConversionError(f"{INDEX} places {wrong[:4]}{' ...' if len(wrong) > 4 else ''} in shards "
                                  f"that do not hold them")
    for name in [n for n in tensors if IGNORED_HF.match(n)]:
        del tensors[name]
    if shape.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # some tied exports carry a copy; the embedding is the truth
    _check_against_config(tensors, shape, str(cfg_path), hf_dir)
    return HFCheckpoint(hf_dir, cfg, shape, files, tensors)


def _check_against_config(tensors: dict, shape: Qwen2Shape, cfg_src: str, hf_dir: Path) -> None:
    d = Dims.from_shape(shape)
    n_layers = hf_layer_count(tensors)
    if n_layers != d.layers:
        raise ConversionError(f"num_hidden_layers: {cfg_src} says {d.layers} but the weights in {hf_dir} "
                              f"hold {n_layers} layers (model.layers.0 .. model.layers.{n_layers - 1})")
    expected = hf_expected_shapes(d)
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise ConversionError(f"{hf_dir}: tensors {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not "
                              f"part of a Qwen2 model with {cfg_src}")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        hint = " (tie_word_embeddings is false in the config)" if missing == ["lm_head.weight"] else ""
        more = " ..." if len(missing) > 5 else ""
        raise ConversionError(f"{hf_dir}: missing tensors {missing[:5]}{more}{hint}")
    # the embedding first: it names vocab_size and hidden_size, the usual culprits
    for name in ["model.embed_tokens.weight", *expected]:
        msg = describe_shape_mismatch(name, tensors[name][1], expected[name], cfg_src)
        if msg:
            raise ConversionError(msg)


# ------------------------------------------------------------------------------------- megatron side

def init_single_process() -> None:
    """A world of one gloo rank with TP1/PP1 groups. A HashStore instead of MASTER_PORT lets several
    conversions, or a conversion beside a training job, run on one host."""
    import torch.distributed as dist

    from megatron_redi.platform.cpu_patches import apply_cpu_patches
    from megatron_redi.platform.distributed import ParallelConfig, init_model_parallel

    if torch.cuda.is_available():
        raise RuntimeError("checkpoint conversion runs on CPU: hide the GPUs (CUDA_VISIBLE_DEVICES=) as "
                           "tools/convert_checkpoint.py does")
    apply_cpu_patches()
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    if dist.get_world_size() != 1:
        raise RuntimeError("checkpoint conversion runs in a single process (world size 1)")
    init_model_parallel(ParallelConfig())


def skeleton_state_dict(shape: Qwen2Shape) -> dict:
    """`sharded_state_dict()` of an unsplit model built on the meta device: megatron's own keys,
    global shapes and factories (the SwiGLU split), with no memory allocated for weights."""
    from megatron_redi.model.config import ModelBuildConfig
    from megatron_redi.model.provider import build_model

    with torch.device("meta"):
        model = build_model(shape, ModelBuildConfig(transformer_impl="local"))
    return model.sharded_state_dict()


def _is_tensor_entry(entry) -> bool:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    return isinstance(entry, ShardedTensor | ShardedTensorFactory)


def _fill(entry, value: torch.Tensor | tuple[torch.Tensor, torch.Tensor]):
    """One skeleton entry with real data. The SwiGLU factory becomes its two halves directly: its own
    build would `chunk` a fused [gate; up] and the writer then copies such views, doubling memory."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    if isinstance(entry, ShardedTensorFactory):
        gate, up = value
        meta = torch.empty(entry.data.shape, dtype=gate.dtype, device="meta")
        halves = entry.build_fn(entry.key, meta, entry.replica_id, None)
        return [dataclasses.replace(h, data=t) for h, t in zip(halves, (gate, up))]
    assert isinstance(entry, ShardedTensor), entry
    if entry.allow_shape_mismatch:  # vocabulary rows: pad to this (TP1) model's padded size
        value = pad_vocab(value, entry.local_shape[0])
    return dataclasses.replace(entry, data=value, dtype=value.dtype)


def _check_output_dir(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConversionError(f"--output {output} exists and is not empty; choose a new folder")


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                file=sys.stderr, dynamic_ncols=True)


def _staging_dir(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, output: Path) -> None:
    if output.exists():
        output.rmdir()  # empty: checked before converting
    os.replace(tmp, output)


# ---------------------------------------------------------------------------------------- HF -> mcore

def hf_to_mcore(hf_dir: str | Path, output: str | Path, *, rope_theta: float | None = None,
                max_position_embeddings: int | None = None, progress: bool = True) -> Path:
    """Convert an HF Qwen2 folder into a dist checkpoint folder. Shards are read one at a time; the
    only tensors built anew are fused QKV and the padded embedding, so memory stays near the model's
    size (the rest are the tensors read)."""
    ck = inspect_hf(hf_dir, rope_theta=rope_theta, max_position_embeddings=max_position_embeddings)
    output = Path(output)
    _check_output_dir(output)
    # megatron is imported only now: bad inputs fail in a second, without its import time
    from megatron.core import dist_checkpointing
    from safetensors import safe_open

    init_single_process()
    skeleton = skeleton_state_dict(ck.shape)
    mapper = HFToMegatron(Dims.from_shape(ck.shape))
    filled = {k: v for k, v in skeleton.items() if not _is_tensor_entry(v)}  # `_extra_state` objects
    order = {n: i for i, n in enumerate(hf_tensor_order(mapper.d))}
    with _bar(ck.nbytes(), "hf-to-mcore", progress) as bar:
        for f in ck.files:
            names = sorted((n for n, (ff, _, _) in ck.tensors.items() if ff == f), key=order.__getitem__)
            with safe_open(str(f), framework="pt") as sf:
                for name in names:
                    t = sf.get_tensor(name)
                    bar.update(t.numel() * t.element_size())
                    for mname, value in mapper.add(name, t):
                        filled[mname] = _fill(skeleton[mname], value)
                    del t
    missing = sorted(k for k, v in skeleton.items() if _is_tensor_entry(v) and k not in filled)
    if mapper.unfinished() or missing:  # inspect_hf makes this unreachable; keep the invariant loud
        raise ConversionError(f"incomplete conversion: fused {mapper.unfinished()}, missing {missing[:5]}")

    tmp = _staging_dir(output)
    try:
        if progress:
            print(f"[convert] saving the dist checkpoint ({ck.nbytes() / 2**30:.2f} GiB)", file=sys.stderr)
        dist_checkpointing.save({"model": filled}, str(tmp))
        del filled
        (tmp / HF_CONFIG).write_text(json.dumps(ck.config, indent=2) + "\n")
        assets = copy_assets([ck.path], tmp / ASSETS_DIR)
        meta = {"source_hf_dir": str(ck.path.resolve()), "dtype": _DTYPE_NAMES.get(ck.dtype, str(ck.dtype)),
                "tie_word_embeddings": ck.shape.tie_word_embeddings, "rope_theta": ck.shape.rope_theta,
                "max_position_embeddings": ck.shape.max_position_embeddings, "assets": assets}
        (tmp / CONVERSION_META).write_text(json.dumps(meta, indent=1) + "\n")
        _publish(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


@torch.no_grad()
def copy_hf_weights(model, hf_state: dict[str, torch.Tensor], shape: Qwen2Shape) -> None:
    """Load an in-memory HF Qwen2 state dict into an unsplit (TP1/PP1) model: what benchmarks and
    tests use to run megatron and `transformers` on the very same weights without a round trip to disk."""
    params = dict(unwrap_model(model).named_parameters())
    mapper = HFToMegatron(Dims.from_shape(shape))
    done = set()
    for hf_name, t in hf_state.items():
        for name, value in mapper.add(hf_name, t):
            value = torch.cat(value) if isinstance(value, tuple) else value
            if name not in params:
                raise ConversionError(f"{hf_name} maps to {name}, which the model does not have")
            dst = params[name]
            if name == EMBED or name == "output_layer.weight":
                value = pad_vocab(value, dst.shape[0])
            dst.copy_(value)
            done.add(name)
    missing = sorted(set(params) - done - ({"output_layer.weight"} if shape.tie_word_embeddings else set()))
    if mapper.unfinished() or missing:
        raise ConversionError(f"HF state dict is incomplete: fused {mapper.unfinished()}, missing {missing[:5]}")


# ---------------------------------------------------------------------------------------- mcore -> HF

def resolve_checkpoint_dir(load: str | Path) -> tuple[Path, Path]:
    """(folder holding metadata.json, the --load folder): a converted checkpoint, or a training --save
    folder whose newest complete iteration is used."""
    root = Path(load)
    if not root.is_dir():
        raise ConversionError(f"--load {root} is not a directory")
    if model_checkpoint_dir(root) is None:
        raise ConversionError(f"--load {root}: neither a dist checkpoint (no metadata.json) nor a training "
                              f"--save folder (no complete iter_* checkpoint)")
    ckpt, skipped = newest_readable_model_dir(root)
    for reason in skipped:
        print(f"[convert] skipping an unreadable checkpoint: {reason}", file=sys.stderr)
    if ckpt is None:
        raise ConversionError(f"--load {root}: no readable checkpoint ({'; '.join(skipped)})")
    return ckpt, root


def _conversion_sources(ckpt: Path, root: Path) -> list[Path]:
    """HF folders recorded by hf-to-mcore next to the checkpoint (if any)."""
    out = []
    for d in (ckpt, root):
        if (d / CONVERSION_META).is_file():
            out.append(Path(_read_json(d / CONVERSION_META).get("source_hf_dir", "")))
    return out


def _find_config(ckpt: Path, root: Path, model_config: str | Path | None) -> tuple[dict, str]:
    if model_config is not None:
        p = Path(model_config)
        p = p / "config.json" if p.is_dir() else p
        if not p.is_file():
            raise ConversionError(f"--model-config: no HF config.json at {p}")
        return _read_json(p), str(p)
    recorded = [s / "config.json" for s in _conversion_sources(ckpt, root)]
    for p in [ckpt / HF_CONFIG, root / HF_CONFIG, *recorded]:
        if p.is_file():
            return _read_json(p), str(p)
    raise ConversionError(f"--load {root}: no {HF_CONFIG} stored with the checkpoint (training --save "
                          f"folders have none): pass --model-config DIR")


def _asset_sources(ckpt: Path, root: Path, tokenizer_model: str | Path | None) -> list[Path]:
    if tokenizer_model is not None:
        p = Path(tokenizer_model)
        if not p.is_dir():
            raise ConversionError(f"--tokenizer-model {p} is not a directory")
        return [p]
    return [ckpt / ASSETS_DIR, root / ASSETS_DIR, *_conversion_sources(ckpt, root)]


def _check_tokenizer(sources: list[Path], shape: Qwen2Shape) -> None:
    """The tokenizer that will ship with the export must fit the exported embedding."""
    for src in sources:
        if any((src / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            try:
                check_vocab_fits(src, shape, flag="tokenizer")
            except ValueError as e:
                raise ConversionError(str(e)) from None
            return


def _check_against_checkpoint(meta: dict, shape: Qwen2Shape, cfg_src: str, ckpt: Path) -> dict[str, str]:
    """Match the tensors a model with this config has against the checkpoint's metadata; returns
    {canonical key: key in the checkpoint}. Raises naming the config field that disagrees."""
    d = Dims.from_shape(shape)
    has_head = "output_layer.weight" in meta
    if shape.tie_word_embeddings and has_head:
        raise ConversionError(f"tie_word_embeddings: {cfg_src} says true but {ckpt} has a separate "
                              f"output_layer.weight")
    if not shape.tie_word_embeddings and not has_head:
        raise ConversionError(f"tie_word_embeddings: {cfg_src} says false but {ckpt} has no "
                              f"output_layer.weight")
    keys = {}
    for key, want in mcore_checkpoint_shapes(d).items():
        found = key if key in meta else _NORM_KEY_ALIASES.get(key)
        if found not in meta:
            raise ConversionError(f"{ckpt} has no tensor {key} (a Qwen2 model per {cfg_src} needs it)")
        keys[key] = found
        got = tuple(meta[found].global_shape)
        if key.startswith("decoder.layers.") and got and got[0] != d.layers:
            raise ConversionError(f"num_hidden_layers: {cfg_src} says {d.layers} but {ckpt} holds {got[0]} "
                                  f"layers ({found} has shape {list(got)})")
        if key in VOCAB_KEYS and len(got) == 2:  # rows: vocab_size plus a padding that depends on TP
            if got[1] != d.hidden:
                raise ConversionError(f"hidden_size: {cfg_src} says {d.hidden} but {found} in {ckpt} has "
                                      f"{got[1]} columns")
            if got[0] < d.vocab:
                raise ConversionError(f"vocab_size: {cfg_src} says {d.vocab} but {found} in {ckpt} has only "
                                      f"{got[0]} rows")
            continue
        msg = describe_shape_mismatch(f"{found} in {ckpt}", got, want, cfg_src)
        if msg:
            raise ConversionError(msg)
    return keys


def _parse_size(s: str | int) -> int:
    if isinstance(s, int):
        return s
    t = s.strip().upper()
    for unit, mult in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6),
                       ("KB", 10**3), ("B", 1)):
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * mult)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise ConversionError(f"--max-shard-size {s!r}: expected e.g. 5GB, 500MB or a byte count") from None


def _load_slices(wanted: dict[str, tuple[str, int | None]], meta: dict,
                 ckpt: Path) -> dict[str, torch.Tensor]:
    """Load {name: (checkpoint key, layer or None)}: one layer of a stacked tensor, or a whole tensor,
    in its stored dtype; dist_checkpointing reads just those bytes, from whatever layout saved them."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    sub = {}
    for name, (key, layer) in wanted.items():
        m = meta[key]
        if layer is None:
            data = torch.empty(m.global_shape, dtype=m.dtype)
            sub[name] = ShardedTensor.from_rank_offsets(key, data, replica_id=0)
        else:
            data = torch.empty((1, *m.global_shape[1:]), dtype=m.dtype)
            offsets = (0, layer, m.global_shape[0])  # axis 0 (layers) in global_shape[0] parts
            sub[name] = ShardedTensor.from_rank_offsets(key, data, offsets, replica_id=0)
    # partial on purpose: the access-integrity check would demand that every tensor be fully covered
    loaded = dist_checkpointing.load(sub, str(ckpt), validate_access_integrity=False)
    # `loaded` also holds the checkpoint's common (non-tensor) state, e.g. a training run's optimizer
    return {n: (loaded[n][0] if layer is not None else loaded[n]) for n, (_, layer) in wanted.items()}


def _plan_shards(d: Dims, dtypes: dict[str, torch.dtype],
                 max_bytes: int) -> tuple[list[list[str]], list[str]]:
    """HF tensors in HF order, cut into shards of at most max_bytes (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, dims in ((n, hf_expected_shapes(d)[n]) for n in hf_tensor_order(d)):
        nb = _numel(s for s, _ in dims) * dtypes[name].itemsize
        if shards[-1] and size + nb > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nb
    if len(shards) == 1:
        return shards, ["model.safetensors"]
    return shards, [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]


def mcore_to_hf(load: str | Path, output: str | Path, *, model_config: str | Path | None = None,
                tokenizer_model: str | Path | None = None, rope_theta: float | None = None,
                max_position_embeddings: int | None = None,
                max_shard_size: str | int = DEFAULT_MAX_SHARD_BYTES, progress: bool = True) -> Path:
    """Export a converted or training checkpoint as an HF Qwen2 folder, in the dtype it was stored in.
    Memory: the output shard being filled plus one layer."""
    ckpt, root = resolve_checkpoint_dir(load)
    output = Path(output)
    _check_output_dir(output)
    cfg_raw, cfg_src = _find_config(ckpt, root, model_config)
    cfg = apply_overrides(cfg_raw, rope_theta, max_position_embeddings)
    shape = shape_from_config(cfg, cfg_src)
    d = Dims.from_shape(shape)
    sources = _asset_sources(ckpt, root, tokenizer_model)
    _check_tokenizer(sources, shape)
    max_bytes = _parse_size(max_shard_size)
    from megatron.core import dist_checkpointing
    from safetensors.torch import save_file

    init_single_process()
    meta = dist_checkpointing.load_tensors_metadata(str(ckpt))
    # keys saved through a wrapper (DDP's `module.`) carry a prefix: accept one, applied consistently
    prefix = next((k[: -len(EMBED)] for k in sorted(meta, key=len) if k.endswith(EMBED)), "")
    unprefixed = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
    keys = {k: prefix + v for k, v in _check_against_checkpoint(unprefixed, shape, cfg_src, ckpt).items()}

    # what to load, in HF's tensor order: embedding, one group per layer, final norm, head
    groups = [{EMBED: (keys[EMBED], None)}]
    groups += [{f"decoder.layers.{i}.{sfx}": (keys[f"decoder.layers.{sfx}"], i)
                for sfx in MCORE_LAYER_SUFFIXES} for i in range(d.layers)]
    groups.append({"decoder.final_layernorm.weight": (keys["decoder.final_layernorm.weight"], None)})
    if not d.tied:
        groups.append({"output_layer.weight": (keys["output_layer.weight"], None)})
    dtypes = {}  # per HF tensor, from its source tensor (a dry run of the mapping on meta tensors)
    for group in groups:
        for name, (key, layer) in group.items():
            m = meta[key]
            dry = torch.empty(m.global_shape[1:] if layer is not None else m.global_shape, device="meta")
            dtypes.update({hf_name: m.dtype for hf_name, _ in hf_from_megatron(name, dry, d)})
    shards, file_names = _plan_shards(d, dtypes, max_bytes)
    shard_of = {n: i for i, names in enumerate(shards) for n in names}
    nbytes = {n: _numel(s for s, _ in dims) * dtypes[n].itemsize for n, dims in hf_expected_shapes(d).items()}

    tmp = _staging_dir(output)
    try:
        pending: list[dict[str, torch.Tensor]] = [{} for _ in shards]
        nonzero_padding = []
        with _bar(sum(nbytes.values()), "mcore-to-hf", progress) as bar:
            for group in groups:
                loaded = _load_slices(group, meta, ckpt)
                for name in group:
                    t = loaded.pop(name)
                    if name in VOCAB_KEYS and t.shape[0] > d.vocab and bool(t[d.vocab:].any()):
                        nonzero_padding.append(name)
                    for hf_name, ht in hf_from_megatron(name, t, d):
                        i = shard_of[hf_name]
                        pending[i][hf_name] = ht.contiguous()
                        bar.update(nbytes[hf_name])
                        if len(pending[i]) == len(shards[i]):
                            save_file(pending[i], str(tmp / file_names[i]), metadata={"format": "pt"})
                            pending[i] = {}
                    del t
        if any(pending):  # unreachable unless the mapping tables disagree
            raise ConversionError(f"tensors never produced: {[n for p in pending for n in p]}")
        if nonzero_padding:
            print(f"[convert] warning: padding rows (>= vocab_size {d.vocab}) of {nonzero_padding} are not "
                  f"zero: check that {cfg_src} matches the checkpoint", file=sys.stderr)
        if len(shards) > 1:
            weight_map = dict(sorted((n, file_names[i]) for i, names in enumerate(shards) for n in names))
            index = {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map}
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        _write_hf_metadata(tmp, cfg, shape, dtypes["model.embed_tokens.weight"], sources)
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # safetensors creates 0600 files; a serving user may need to read them
            f.chmod(0o666 & ~umask)
        _publish(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def _write_hf_metadata(out: Path, cfg: dict, shape: Qwen2Shape, dtype: torch.dtype,
                       sources: list[Path]) -> None:
    """config.json (exported dtype, overrides applied), generation_config.json and the tokenizer."""
    cfg = dict(cfg)
    cfg.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", rope_theta=shape.rope_theta,
               max_position_embeddings=shape.max_position_embeddings)
    name = _DTYPE_NAMES.get(dtype, "float32")
    cfg["torch_dtype"] = name
    if "dtype" in cfg:  # transformers 5 writes this key instead
        cfg["dtype"] = name
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    copied = copy_assets(sources, out)
    if not copied:
        raise ConversionError(f"no tokenizer files (tokenizer.json / tokenizer_config.json) in "
                              f"{[str(s) for s in sources]}: pass --tokenizer-model DIR")
    if "generation_config.json" not in copied:
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.get(k) is not None}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
