"""Full-size Qwen3.5 on a CUDA GPU: load time, memory bf16 / 8-bit / 4-bit, TTFT and tokens/s.

The published Qwen3.5 sizes (0.8B, 2B, 4B, 9B: widths, layer mix, attention and linear-attention
heads, vision tower) are rebuilt with random weights, so nothing is downloaded. The vocabulary
keeps its real size (248,320) for realistic embedding and output memory; the tokenizer is the
tiny one, and the output rows of ids it cannot decode are zeroed so greedy answers stay
readable text of the requested length.

On a machine with CUDA, for each size: build the checkpoint on the GPU in bf16 and save it to
`--workdir` (the 9B takes about 19 GB of disk; each is deleted after its size), then for each
quantization load it through the app's own `LocalEngine` (bitsandbytes for 8-bit and NF4
4-bit, the family's modules kept unquantized) and record the load time, the weights'
footprint, the peak GPU memory after loading and while answering, and time to first token and
tokens/s for 1 user and for `--users` users at once (decoded together in batches, as the app
serves them). A question is a 640x480 image (300 vision tokens with the published processor
bounds) and a short question, greedy, thinking off, `--max-new-tokens` tokens.

Without CUDA it says so and only checks the configs: each one is instantiated on the meta
device (parameters counted by part, no memory used), and a slice of it (the published widths
with two text layers, one linear-attention and one full-attention, a one-block ViT and the
tokenizer-sized vocabulary) runs a real forward pass on the CPU with an image, which proves
the shapes fit together (head dims, mrope sections, vision merge into the text width).
`--smoke` also runs the measuring path on the CPU with the 0.8B slice, quantizations
included, to prove the script end to end.

    python -m bench.gpu [--sizes 0.8B 2B 4B 9B] [--quantizations none 8bit 4bit] [--users 8]
                        [--app 2B:4bit --app-seconds 60] [--deadline-s 520]

`--app SIZE:QUANTIZATION` also serves that size through the app itself (`python app.py
--model PATH` on the GPU, the same question through `gradio_client` on the "chat" endpoint,
one user, for about `--app-seconds`), right after the in-process engine answered it, and
reports the app's tokens/s over the engine's, and its time to first token from the call
(the image's upload included) and from sending the question after the upload. The client is
`bench.common.app_client`'s lean one: it does not download the files of streamed updates,
which stock `gradio_client` does for every update, and reuses its connections, so what is
measured is the app, not the client. `--deadline-s` bounds the whole run: a
measurement that would start after it is reported as not run, so one bounded call on a lent
GPU returns every figure it could take.

A Qwen3.5 on CUDA without the `flash-linear-attention` and `causal-conv1d` packages runs its
linear-attention layers in reference PyTorch; install them for figures a deployment would see.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import (
    fixed,
    ms,
    percentile,
    print_machine,
    print_table,
    quiet_transformers,
    scene_image,
)
from bench.models import QwenSize, build_qwen3_5, qwen3_5_config, tokenizer_and_processor
from bench.workload import QUESTION, ask_engine, crowd
from engine.tiny.common import folder_size

VOCAB = 248_320
CONTEXT = 262_144
# From the published config.json files of Qwen/Qwen3.5-{0.8B,2B,4B,9B}. The 2B's vision tower
# is taken to be the 4B's (24 blocks of width 1024), as for Qwen3-VL-2B and -4B.
SIZES: dict[str, QwenSize] = {
    "0.8B": QwenSize(hidden=1024, intermediate=3584, layers=24, heads=8, kv_heads=2,
                     head_dim=256, linear_key_heads=16, linear_value_heads=16,
                     linear_key_head_dim=128, linear_value_head_dim=128, vision_depth=12,
                     vision_hidden=768, vision_heads=12, vision_intermediate=3072,
                     tie_embeddings=True, vocab_size=VOCAB, max_position_embeddings=CONTEXT),
    "2B": QwenSize(hidden=2048, intermediate=6144, layers=24, heads=8, kv_heads=2,
                   head_dim=256, linear_key_heads=16, linear_value_heads=16,
                   linear_key_head_dim=128, linear_value_head_dim=128, vision_depth=24,
                   vision_hidden=1024, vision_heads=16, vision_intermediate=4096,
                   tie_embeddings=True, vocab_size=VOCAB, max_position_embeddings=CONTEXT),
    "4B": QwenSize(hidden=2560, intermediate=9216, layers=32, heads=16, kv_heads=4,
                   head_dim=256, linear_key_heads=16, linear_value_heads=32,
                   linear_key_head_dim=128, linear_value_head_dim=128, vision_depth=24,
                   vision_hidden=1024, vision_heads=16, vision_intermediate=4096,
                   tie_embeddings=True, vocab_size=VOCAB, max_position_embeddings=CONTEXT),
    "9B": QwenSize(hidden=4096, intermediate=12288, layers=32, heads=16, kv_heads=4,
                   head_dim=256, linear_key_heads=16, linear_value_heads=32,
                   linear_key_head_dim=128, linear_value_head_dim=128, vision_depth=27,
                   vision_hidden=1152, vision_heads=16, vision_intermediate=4304,
                   tie_embeddings=False, vocab_size=VOCAB, max_position_embeddings=CONTEXT),
}
GIB = 1024**3


def slice_of(size: QwenSize, keep_vocab: bool = False) -> QwenSize:
    """The published widths with two text layers (linear + full attention) and one ViT block;
    the vocabulary shrinks to the tokenizer's unless `keep_vocab`."""
    return replace(size, layers=2, vision_depth=1,
                   vocab_size=size.vocab_size if keep_vocab else None)


# -- config check (any machine) ------------------------------------------------------------


def count_parameters(size: QwenSize, tokenizer) -> dict[str, int]:
    """Parameters by part, from the model instantiated on the meta device."""
    import torch
    from transformers import AutoModelForImageTextToText

    config = qwen3_5_config(size, tokenizer)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    parts = {"vision": 0, "embeddings": 0, "text layers": 0, "lm_head": 0, "other": 0}
    seen: set[int] = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:  # a tied lm_head is the embedding matrix, counted once
            continue
        seen.add(id(parameter))
        if name.startswith("model.visual"):
            part = "vision"
        elif "embed_tokens" in name:
            part = "embeddings"
        elif ".layers." in name:
            part = "text layers"
        elif name.startswith("lm_head"):
            part = "lm_head"
        else:
            part = "other"
        parts[part] += parameter.numel()
    parts["total"] = sum(parts.values())
    return parts


def check_slice(size: QwenSize, tokenizer, processor, image) -> str:
    """Run a real forward pass of the size's slice on the CPU; returns what came out."""
    import torch
    from transformers import AutoModelForImageTextToText

    small = slice_of(size)
    config = qwen3_5_config(small, tokenizer)
    model = AutoModelForImageTextToText.from_config(config).eval()
    conversation = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": QUESTION}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt",
                                           enable_thinking=False)
    with torch.inference_mode():
        logits = model(**inputs).logits
    if not torch.isfinite(logits).all():
        raise RuntimeError("the forward pass gave non-finite logits")
    vision_tokens = int((inputs["input_ids"] == config.image_token_id).sum())
    return f"ok: {inputs['input_ids'].shape[1]} tokens ({vision_tokens} vision) -> logits " \
           f"{tuple(logits.shape)}"


def check_configs(names: list[str]) -> None:
    from PIL import Image

    tokenizer, processor = tokenizer_and_processor(image_tokens=(4, 16))
    image = Image.new("RGB", (128, 96), (120, 160, 200))
    rows = []
    for name in names:
        size = SIZES[name]
        parts = count_parameters(size, tokenizer)
        started = time.perf_counter()
        result = check_slice(size, tokenizer, processor, image)
        rows.append([name, size.layers, size.hidden, size.intermediate,
                     f"{size.heads}/{size.kv_heads}",
                     f"{size.linear_key_heads}/{size.linear_value_heads}",
                     f"{size.vision_depth}x{size.vision_hidden}",
                     "yes" if size.tie_embeddings else "no",
                     fixed(parts["text layers"] / 1e9, 3), fixed(parts["embeddings"] / 1e9, 3),
                     fixed(parts["lm_head"] / 1e9, 3), fixed(parts["vision"] / 1e9, 3),
                     fixed(parts["total"] / 1e9, 3), fixed(parts["total"] * 2 / GIB, 2),
                     f"{result} in {time.perf_counter() - started:.1f} s"])
    print_table("Published Qwen3.5 configs (parameters in billions, from the meta device)",
                ["size", "layers", "hidden", "intermediate", "heads q/kv",
                 "linear heads k/v", "ViT", "tied", "text layers", "embeddings", "lm_head",
                 "vision", "total", "bf16 GiB", "CPU slice forward"], rows)


# -- measuring (CUDA, or the CPU with --smoke) -----------------------------------------------


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else float("nan")


def measure_quantization(path: Path, quantization: str, device: str, image, reps: int,
                         users: int, max_new_tokens: int, rounds: int = 2) -> list:
    import torch

    from engine.local import LocalEngine

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    engine = LocalEngine(str(path), quantize=quantization, device=device)
    report = engine.load()
    after_load = _peak_gib(device)
    ask_engine(engine, image, max_new_tokens)  # warm-up
    single = [ask_engine(engine, image, max_new_tokens) for _ in range(reps)]
    crowd_started = time.perf_counter()
    together = crowd(engine, image, users, rounds, max_new_tokens)
    crowd_wall = time.perf_counter() - crowd_started
    peak = _peak_gib(device)
    errors = [e for *_, e in single + together if e]

    def ttft(outcomes):
        return [first - started for started, first, *_ in outcomes if first is not None]

    speeds = [s.tokens_per_s for *_, s, _ in single if s is not None]
    crowd_tokens = sum(s.total_tokens for *_, s, _ in together if s is not None)
    row = [quantization, fixed(report.load_seconds, 1), fixed(report.footprint_bytes / GIB, 2),
           fixed(after_load, 2), fixed(peak, 2), ms(percentile(ttft(single), 50)),
           fixed(percentile(speeds, 50)), fixed(crowd_tokens / crowd_wall),
           ms(percentile(ttft(together), 50)), ms(percentile(ttft(together), 95)), len(errors)]
    engine.close()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


class Deadline:
    """The end of the run, so that a bounded call on a lent GPU returns what it measured."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        """Whether a step expected to take `seconds` still fits."""
        return self.end is None or time.monotonic() + seconds < self.end


def report_build(label: str, seconds: float, folder: Path) -> None:
    print(f"- {label}: random checkpoint built and saved in {seconds:.0f} s, "
          f"{folder_size(folder) / GIB:.1f} GiB on disk", flush=True)


def measure_quantizations(folder: Path, quantizations: list[str], device: str, image,
                          reps: int, users: int, max_new_tokens: int, rounds: int = 2,
                          deadline: Deadline | None = None, label: str = "") -> list[list]:
    """One table row per quantization of the checkpoint in `folder` (see
    `print_measurements`); a quantization that fails or would pass the deadline gets a row
    saying so, so one failure does not hide the others."""
    deadline = deadline or Deadline(None)
    rows = []
    for quantization in quantizations:
        if not deadline.allows(30):
            rows.append([quantization, "not run: the run's deadline came first"] + [""] * 9)
            continue
        try:
            rows.append(measure_quantization(folder, quantization, device, image, reps,
                                             users, max_new_tokens, rounds))
        except Exception as exc:  # one failing quantization must not hide the others
            rows.append([quantization, f"failed: {type(exc).__name__}: {exc}"[:200]]
                        + [""] * 9)
        print(f"  {label or folder.name} {quantization}: {rows[-1]}", flush=True)
    return rows


def print_measurements(title: str, users: int, rows: list[list]) -> None:
    print_table(title,
                ["quantization", "load s", "weights GiB", "peak GiB after load",
                 "peak GiB answering", "TTFT p50 ms (1 user)", "tok/s (1 user)",
                 f"aggregate tok/s ({users} users)", f"TTFT p50 ms ({users} users)",
                 f"TTFT p95 ms ({users} users)", "errors"], rows)


def measure_sizes(names: list[str], quantizations: list[str], device: str, workdir: Path,
                  reps: int, users: int, max_new_tokens: int, smoke: bool,
                  rounds: int = 2, app: tuple[str, str] | None = None,
                  app_seconds: float = 60.0, deadline: Deadline | None = None) -> None:
    import torch

    from engine.images import ImagePolicy, load_image

    deadline = deadline or Deadline(None)
    image_path = scene_image(workdir / "scene.png")
    image = load_image(str(image_path), ImagePolicy())
    for name in names:
        if not deadline.allows(60):
            print(f"- {name}: not run, the run's deadline came first", flush=True)
            continue
        size = slice_of(SIZES[name], keep_vocab=True) if smoke else SIZES[name]
        folder = workdir / f"qwen3_5-{name}"
        started = time.perf_counter()
        # Built in bf16 where it runs; the CPU smoke slice stays in float32.
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        build_qwen3_5(folder, size, image_tokens=None, device=device, dtype=dtype)
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        label = f"{name} slice on CPU (smoke)" if smoke else name
        report_build(label, time.perf_counter() - started, folder)
        rows = measure_quantizations(folder, quantizations, device, image, reps, users,
                                     max_new_tokens, rounds, deadline, label)
        if app is not None and app[0] == name:
            if deadline.allows(app_seconds + 60):
                measure_app(folder, app[1], device, image, image_path, app_seconds,
                            max_new_tokens, workdir)
            else:
                print(f"- app with {name} {app[1]}: not run, the run's deadline came first")
        shutil.rmtree(folder, ignore_errors=True)
        print_measurements(
            f"Qwen3.5-{label}: {reps} single questions, then {users} users x {rounds}",
            users, rows)


def measure_app(folder: Path, quantization: str, device: str, image, image_path: Path,
                seconds: float, max_new_tokens: int, workdir: Path) -> None:
    """One user: the engine in this process, then the app serving the same checkpoint."""
    import torch

    from bench.common import app_client, running_app
    from bench.overhead import ask_app
    from bench.overhead import ask_engine as timed_answer
    from bench.workload import chat_arguments, fresh_session
    from engine.local import LocalEngine

    engine = LocalEngine(str(folder), quantize=quantization, device=device)
    engine.load()
    timed_answer(engine, image, max_new_tokens)  # warm-up
    in_process = []
    started = time.monotonic()
    while time.monotonic() - started < seconds / 3 or len(in_process) < 3:
        in_process.append(timed_answer(engine, image, max_new_tokens))
    engine.close()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    served = []
    with (running_app(str(folder), workdir / "app", "--quantize", quantization) as app,
          app_client(app.url) as client):
        arguments = chat_arguments(image_path, max_new_tokens)
        fresh_session(client, saving=True)
        ask_app(client, arguments, 0.002)  # warm-up
        started = time.monotonic()
        while time.monotonic() - started < seconds or len(served) < 3:
            fresh_session(client, saving=True)
            served.append(ask_app(client, arguments, 0.002))

    def median_of(samples, attribute):
        values = sorted(getattr(sample, attribute) for sample in samples)
        return values[len(values) // 2]

    engine_speed = median_of(in_process, "tokens_per_s")
    app_speed = median_of(served, "tokens_per_s")
    same = sum(sample.text == in_process[0].text for sample in served)
    print_table(f"The app on {device} ({folder.name}, {quantization}), one user, "
                f"{max_new_tokens} new tokens, saving on",
                ["path", "answers", "TTFT p50 ms (call)", "TTFT p50 ms (sent)", "tok/s p50",
                 "ratio", "same answer"],
                [["engine in-process", len(in_process), ms(median_of(in_process, "ttft_s")),
                  ms(median_of(in_process, "ttft_sent_s")), fixed(engine_speed), "", ""],
                 ["app via gradio_client", len(served), ms(median_of(served, "ttft_s")),
                  ms(median_of(served, "ttft_sent_s")), fixed(app_speed),
                  fixed(app_speed / engine_speed, 2),
                  f"{same}/{len(served)}"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--quantizations", nargs="+", default=["none", "8bit", "4bit"],
                        choices=["none", "8bit", "4bit"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where checkpoints are written (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="questions each of the --users asks one after another")
    parser.add_argument("--app", default=None, metavar="SIZE:QUANTIZATION",
                        help="also measure the app serving this size, e.g. 2B:4bit")
    parser.add_argument("--app-seconds", type=float, default=60.0)
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="skip what would start after this many seconds")
    parser.add_argument("--smoke", action="store_true",
                        help="without CUDA, also run the measuring path on CPU with the "
                             "0.8B slice")
    args = parser.parse_args(argv)
    app = None
    if args.app:
        size, _, quantization = args.app.partition(":")
        if size not in SIZES or quantization not in ("none", "8bit", "4bit"):
            parser.error(f"--app takes SIZE:QUANTIZATION with a size of {list(SIZES)}, "
                         f"got {args.app!r}")
        app = (size, quantization)
    deadline = Deadline(args.deadline_s)
    quiet_transformers()
    import torch

    print_machine("GPU: full-size Qwen3.5 configs")
    cuda = torch.cuda.is_available()  # the machine lines name the GPU
    if not cuda:
        print("- no CUDA device: checking the configs only\n", flush=True)
        torch.set_num_threads(1)
    check_configs(args.sizes)
    if not cuda and not args.smoke:
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if cuda:
            measure_sizes(args.sizes, args.quantizations, "cuda", workdir, args.reps,
                          args.users, args.max_new_tokens, smoke=False, rounds=args.rounds,
                          app=app, app_seconds=args.app_seconds, deadline=deadline)
        else:
            measure_sizes(["0.8B"], args.quantizations, "cpu", workdir, reps=1, users=2,
                          max_new_tokens=8, smoke=True, rounds=1,
                          app=("0.8B", app[1]) if app else None,
                          app_seconds=args.app_seconds, deadline=deadline)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
