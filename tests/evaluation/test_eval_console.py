"""What the console says: the run's set-up line, plain progress lines when stderr is not a terminal,
and the warning for an accuracy-vs-length plot with too few samples."""

from megatron_redi.evaluation import runner
from megatron_redi.evaluation.config import SamplingConfig
from megatron_redi.evaluation.report import plot_accuracy_vs_length


def test_progress_in_a_log_has_no_escape_codes(capsys):
    bar = runner._tqdm(total=8, desc="math500 generate", unit="sample", dynamic_ncols=True)
    assert isinstance(bar, runner.LineProgress)  # pytest's stderr is not a terminal
    for _ in range(8):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert [ln.split(" (")[0] for ln in lines] == [f"math500 generate: {k}/8" for k in (2, 4, 6, 8)]


def test_disabled_progress_prints_nothing(capsys):
    bar = runner._tqdm(total=3, desc="x", disable=True)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""


def test_start_line_names_backend_device_model_dtype_and_sampling():
    text = runner.describe_run({"backend": "vllm", "device": "cpu", "dtype": "float32", "model": "/m",
                                "tensor_parallel_size": 1, "data_parallel_size": 1},
                               SamplingConfig(n=4, temperature=0.0, top_p=1.0, max_tokens=64, seed=3))
    assert text.splitlines() == [
        "generation: backend=vllm device=cpu dtype=float32 model=/m (tensor_parallel_size=1 data_parallel_size=1)",
        "sampling: n=4 temperature=0.0 top_p=1.0 max_tokens=64 seed=3 (greedy)"]


def test_plot_says_when_it_has_too_few_points(tmp_path):
    recs = lambda k: [{"num_tokens": i, "correct": i % 2 == 0} for i in range(k)]  # noqa: E731
    warning = plot_accuracy_vs_length({"aime24": recs(12), "math500": recs(400)}, tmp_path / "p.png")
    assert warning and "aime24: 12" in warning and "math500" not in warning
    assert (tmp_path / "p.png").stat().st_size > 0
    assert plot_accuracy_vs_length({"math500": recs(80)}, tmp_path / "q.png") is None
