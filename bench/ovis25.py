"""Full-size Ovis2.5 (2B, 9B) with random weights: load time, memory, TTFT and tokens/s.

`write_random_checkpoint(config, folder)` writes a folder in the published layout (config.json
with `llm_config` / `vit_config` and `auto_map`, weights by the published names in safetensors
shards with an index, the SigLIP preprocessor config, a tokenizer with the published chat
template) holding random weights for `config`, a published config.json's content. The engine
then loads it through its ordinary path, as it would the Hub folder. The vocabulary keeps its
real size (151,936 rows) for realistic embedding and output memory; the tokenizer is a small
trained one, so the output rows of ids it cannot decode are zeroed and greedy answers stay
readable text of the requested length.

`published_sizes(name)` is AIDC-AI/Ovis2.5-9B's config.json (`--config` reads one from a file
instead); the 2B swaps in Qwen3-1.7B's text sizes (width 2048, 28 layers, 16/8 heads, tied
embeddings), the vision tower being the same.

With CUDA, per size: build on the GPU in bf16, save to `--workdir` (the 9B takes about 18 GB of
disk; deleted after its size), then per quantization load it with the app's `LocalEngine` and
measure as `bench.gpu` does (a 640x480 image, thinking off, greedy). Without CUDA it checks
the configs on the meta device (tensor names and parameters, no memory), and `--smoke` runs
the whole path on the CPU with the published structure at tiny widths.

    python -m bench.ovis25 [--sizes 2B 9B] [--quantizations none 4bit] [--users 8]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import fixed, print_machine, print_table, quiet_transformers, scene_image
from engine.tiny.sizes import OVIS2_5_VISION_SIZES, TEXT_SIZES

VOCAB = 151_936
GIB = 1024**3
_VIT = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
        "num_attention_heads": 16, "image_size": 512}
_TEXT = {
    "9B": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
           "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False},
    "2B": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
           "num_attention_heads": 16, "num_key_value_heads": 8, "tie_word_embeddings": True},
}


def published_sizes(name: str) -> dict:
    """config.json of AIDC-AI/Ovis2.5-`name` (see the module docstring for the 2B)."""
    from engine.tiny.ovis25 import published_config

    llm = {**_TEXT[name], "vocab_size": VOCAB, "head_dim": 128,
           "max_position_embeddings": 40960, "bos_token_id": 151643, "eos_token_id": 151645}
    return published_config(llm, dict(_VIT))


def shrunk(config: dict) -> dict:
    """The same config at tiny widths and depths (vocabulary included): for CPU checks."""
    small = copy.deepcopy(config)
    small["llm_config"].update(**TEXT_SIZES, max_window_layers=TEXT_SIZES["num_hidden_layers"],
                               vocab_size=1024)
    small["vit_config"].update(**OVIS2_5_VISION_SIZES, image_size=64)
    small.update(hidden_size=TEXT_SIZES["hidden_size"], vocab_size=1024,
                 num_attention_heads=TEXT_SIZES["num_attention_heads"], visual_vocab_size=68)
    return small


def write_random_checkpoint(config: dict | Path, folder: Path, *, device: str = "cpu",
                            dtype=None) -> Path:
    """A loadable folder in the published layout with random weights for `config`."""
    import torch
    from transformers import GenerationConfig, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from engine.ovis25_config import Ovis25Config
    from engine.ovis25_model import Ovis25ForConditionalGeneration
    from engine.ovis25_processing import PLACEHOLDERS
    from engine.tiny.common import (
        qwen_style_tokenizer,
        seed_everything,
        silence_tokens,
        unprintable_ids,
    )
    from engine.tiny.ovis25 import EOS_TOKENS, PUBLISHED_TEMPLATE, VISION_TOKENS, save_published

    if isinstance(config, Path):
        config = json.loads(config.read_text())
    config = copy.deepcopy(config)
    dtype = dtype or torch.float32
    tokenizer = qwen_style_tokenizer(Qwen2Tokenizer, PRETOKENIZE_REGEX, VISION_TOKENS,
                                     PUBLISHED_TEMPLATE)
    if config["llm_config"]["vocab_size"] < len(tokenizer) + len(PLACEHOLDERS):
        raise ValueError("The vocabulary is smaller than the tokenizer.")
    # The small tokenizer's ids stand in for the published ones.
    config["llm_config"].update(bos_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    seed_everything()
    with torch.device(device):
        model = Ovis25ForConditionalGeneration._from_config(
            Ovis25Config(**copy.deepcopy(config)), dtype=dtype).eval()
    silent = list(tokenizer.added_tokens_decoder)
    silent += [tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens]
    beyond = range(len(tokenizer), config["llm_config"]["vocab_size"])
    # A random model with tied embeddings (the 2B) tends to repeat its last input, a newline:
    # whitespace-only tokens are silenced too, so the answers have text to time.
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
    silence_tokens(model, [*silent, *beyond, *blank, *unprintable_ids(tokenizer)])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(list(EOS_TOKENS)),
        pad_token_id=tokenizer.pad_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_published(folder, model, config, max_shard_size="5GB")
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    return folder


def tensor_names(config: dict) -> tuple[list[str], int]:
    """Tensor names a checkpoint of `config` holds, and its unique parameter count (meta device,
    no memory)."""
    import torch

    from engine.ovis25_config import Ovis25Config
    from engine.ovis25_model import Ovis25ForConditionalGeneration

    with torch.device("meta"):
        model = Ovis25ForConditionalGeneration(Ovis25Config(**copy.deepcopy(config)))
    tied = set(model.all_tied_weights_keys)
    names = [name for name in model.state_dict() if name not in tied]
    return names, sum(parameter.numel() for parameter in model.parameters())


def check_configs(configs: dict[str, dict]) -> None:
    rows = []
    for name, config in configs.items():
        names, parameters = tensor_names(config)
        llm = config["llm_config"]
        rows.append([name, llm["num_hidden_layers"], llm["hidden_size"],
                     "yes" if llm.get("tie_word_embeddings") else "no", len(names),
                     fixed(parameters / 1e9, 3), fixed(parameters * 2 / GIB, 2)])
    print_table("Published Ovis2.5 configs (from the meta device)",
                ["size", "text layers", "text width", "tied", "tensors", "parameters (B)",
                 "bf16 GiB"], rows)


def measure(configs: dict[str, dict], quantizations: list[str], device: str, workdir: Path,
            reps: int, users: int, max_new_tokens: int) -> None:
    import torch

    from bench.gpu import measure_quantizations, print_measurements, report_build
    from engine.images import ImagePolicy, load_image

    image = load_image(str(scene_image(workdir / "scene.png")), ImagePolicy())
    for name, config in configs.items():
        folder = workdir / f"ovis2_5-{name}"
        started = time.perf_counter()
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        write_random_checkpoint(config, folder, device=device, dtype=dtype)
        if device == "cuda":
            torch.cuda.empty_cache()
        report_build(name, time.perf_counter() - started, folder)
        rows = measure_quantizations(folder, quantizations, device, image, reps, users,
                                     max_new_tokens, label=name)
        shutil.rmtree(folder, ignore_errors=True)
        print_measurements(f"Ovis2.5-{name}: {reps} single questions, then {users} users x 2",
                           users, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ovis25",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(_TEXT), choices=list(_TEXT))
    parser.add_argument("--config", type=Path, default=None,
                        help="a published config.json to use instead of the built-in sizes")
    parser.add_argument("--quantizations", nargs="+", default=["none", "4bit"],
                        choices=["none", "8bit", "4bit"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="without CUDA, run the measuring path on the CPU at tiny widths")
    args = parser.parse_args(argv)
    quiet_transformers()
    import torch

    if args.config is not None:
        configs = {args.config.parent.name: json.loads(args.config.read_text())}
    else:
        configs = {name: published_sizes(name) for name in args.sizes}
    print_machine("Ovis2.5: full-size published configs with random weights")
    cuda = torch.cuda.is_available()
    check_configs(configs)
    if not cuda and not args.smoke:
        print("- no CUDA device: configs checked only\n")
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ovis25-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if cuda:  # the machine lines name the GPU
            measure(configs, args.quantizations, "cuda", workdir, args.reps, args.users,
                    args.max_new_tokens)
        else:
            torch.set_num_threads(1)
            small = {f"{name} at tiny widths": shrunk(config) for name, config in configs.items()}
            measure(small, args.quantizations, "cpu", workdir, reps=1, users=2,
                    max_new_tokens=8)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
