"""The workflow's GPU work on one device, each part against what the device itself does in the same run.

1. finetune: a roberta-base-shaped classifier (random weights from transformers.RobertaConfig(),
   two labels, nothing downloaded) trained by weightspace.finetuning.train, our own loop (bf16
   autocast on CUDA), at the paper config's batch size (256) on synthetic examples of
   BENCH_GPU_LENGTH (128) tokens each, so no batch carries padding. Reported: examples/s,
   tokens/s, time per step and MFU = achieved FLOP/s / the device's peak dense bf16 FLOP/s
   (PEAK_BF16, by device name; an unknown device gets n/a). Training FLOPs per token =
   6 x parameters + 12 x layers x hidden x seq_len (the attention products QK^T and AV, forward
   and backward), with the parameters outside the embedding tables: a lookup multiplies nothing.
2. probe features: weightspace.probing.first_token_features on the same encoder at the paper's
   region.probe batch size (256), tokenisation included as in a probe job: examples/s, tokens/s,
   MFU with forward FLOPs per token = 2 x parameters + 4 x layers x hidden x seq_len, and the
   time of an example against a training example (weightspace.slurm_runtime.EVAL_COST assumes 1/3).
3. similarity: weightspace.similarity.stream_similarity(vectors, geometry.memory_mb, device) over
   a few roberta-base-shaped safetensors checkpoints (a random base, each model the base plus a
   shared direction and its own noise) in a temp folder, read from the page cache: GB/s of
   weights read (each model and the base once), against a plain copy of as many bytes between
   pageable host memory and the device (preallocated tensors, copy_), in both directions, each
   synchronised.
4. peak GPU memory (torch.cuda.max_memory_allocated) of each part.

Then the value to put in the config's `cluster.examples_per_second` (the time limits SLURM jobs ask
for, weightspace.slurm_runtime): the finetune's examples/s over a safety factor of 2, because the
paper config pads to finetune.max_length 256, not 128, and scores the validation split during
training; cluster.margin comes on top.

Each part runs a fixed number of steps after a warm-up; a part that would start after
BENCH_GPU_SECONDS (300) is skipped, so the whole stays within one time limit:

    timeout 330 python -m bench gpu

Without CUDA it prints one line and returns. BENCH_GPU_DEVICE=cpu BENCH_GPU_SIZE=tiny runs the same
code on the CPU at a tiny size: a check of the code (the tests use it), not a measurement.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "config/config.yaml"
SAFETY_FACTOR = 2.0
DEFAULT_EXAMPLES_PER_SECOND = 100  # workflow/schemas/config.schema.yaml, cluster.examples_per_second

# Peak dense bf16 tensor FLOP/s (no sparsity) from the vendors' data sheets, the first match wins.
PEAK_BF16 = [
    (r"H100.*PCIe", 756e12),
    (r"H[12]00.*NVL", 835e12),
    (r"H100|H200|GH200", 989e12),
    (r"A100", 312e12),
    (r"L40S", 362e12),
    (r"L40\b", 181e12),
    (r"A10\b", 125e12),  # not the A10G
    (r"L4\b", 121e12),
    (r"RTX 4090", 165e12),
]

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # RoBERTa's ids 0..3


@dataclass(frozen=True)
class Size:
    encoder: dict = field(default_factory=dict)  # RobertaConfig arguments ({}: roberta-base)
    words: int = 20000  # vocabulary of the synthetic tokenizer
    batch_size: int = 256
    max_length: int = 128
    warmup_steps: int = 5
    steps: int = 30
    probe_examples: int = 8192
    probe_batch_size: int = 256
    checkpoints: int = 4


TINY = Size(encoder={"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 64, "max_position_embeddings": 40},
            words=200, batch_size=4, max_length=16, warmup_steps=1, steps=2, probe_examples=20, probe_batch_size=8,
            checkpoints=2)


def paper_settings() -> dict:
    """The paper config's sections the parts take their settings from (finetune, region, geometry)."""
    return yaml.safe_load(PAPER_CONFIG.read_text())


def env_number(name: str, default: str, kind=int, low: float = 1, high: float = math.inf):
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        bounds = f"from {low:g} to {high:g}" if math.isfinite(high) else f"of at least {low:g}"
        raise SystemExit(f"bench gpu: {name} is '{text}', expected {what} {bounds}")
    return value


def full_size(paper: dict) -> Size:
    # RoBERTa has 514 positions, two of them before the first token
    return Size(batch_size=paper["finetune"]["batch_size"],
                max_length=env_number("BENCH_GPU_LENGTH", "128", int, 8, 512),
                probe_batch_size=paper["region"]["probe"]["batch_size"])


def peak_bf16_flops(device_name: str) -> float | None:
    for pattern, peak in PEAK_BF16:
        if re.search(pattern, device_name):
            return peak
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# -- inputs ---------------------------------------------------------------------------------------

def synthetic_tokenizer(words: int):
    """A word-level tokenizer over the words w0, w1, ... with RoBERTa's special tokens and ids:
    a text of n words is n + 2 tokens (<s> ... </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)} | {f"w{i}": i + 4 for i in range(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>")


def synthetic_examples(n: int, words: int, length: int, seed: int = 0) -> pd.DataFrame:
    """A canonical split (text_a, text_b, label) of `n` texts of `length` tokens each, two balanced labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, words, size=(n, length - 2))
    texts = [" ".join(f"w{i}" for i in row) for row in ids]
    df = pd.DataFrame({"text_a": texts, "text_b": [None] * n, "label": np.arange(n) % 2})
    return df.astype({"text_a": "string", "text_b": "string"})


def roberta_classifier(size: Size):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(**size.encoder, num_labels=2))


def matmul_parameters(model) -> int:
    """Parameters outside the embedding tables (word, position, token type)."""
    return sum(p.numel() for name, p in model.named_parameters() if ".embeddings." not in f".{name}")


def training_flops_per_token(model, seq_len: int) -> float:
    config = model.config
    return 6 * matmul_parameters(model) + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def forward_flops_per_token(model, seq_len: int) -> float:
    config = model.config
    return 2 * matmul_parameters(model) + 4 * config.num_hidden_layers * config.hidden_size * seq_len


# -- the parts ------------------------------------------------------------------------------------

def finetune_cfg(paper: dict, size: Size, steps: int) -> dict:
    """train()'s settings: the paper's optimiser and schedule, `steps` steps, no validation."""
    ft = paper["finetune"]
    return {"lr": ft["lr"], "batch_size": size.batch_size, "eval_batch_size": ft["eval_batch_size"],
            "epochs": 10**6, "max_steps": steps, "warmup_ratio": ft["warmup_ratio"],
            "weight_decay": ft["weight_decay"], "adam_betas": ft["adam_betas"], "adam_eps": ft["adam_eps"],
            "max_grad_norm": ft.get("max_grad_norm", 1.0), "log_every": 10**6,
            "validate_every": None, "patience": None}


def finetune_part(model, tokenizer, size: Size, device: torch.device, paper: dict, peak: float | None) -> dict:
    """size.steps training steps of weightspace.finetuning.train after size.warmup_steps."""
    from weightspace.finetuning import encode, train

    # four batches of examples; train() reshuffles them every epoch
    features = encode(synthetic_examples(4 * size.batch_size, size.words, size.max_length), tokenizer,
                      size.max_length)
    reset_peak_memory(device)
    train(model, features, tokenizer, finetune_cfg(paper, size, size.warmup_steps), 0, device)
    sync(device)
    start = time.perf_counter()
    result = train(model, features, tokenizer, finetune_cfg(paper, size, size.steps), 1, device)
    sync(device)
    seconds = time.perf_counter() - start
    flops = result.train_tokens * training_flops_per_token(model, size.max_length)
    return {"steps": result.steps, "examples": result.train_examples, "tokens": result.train_tokens,
            "seconds": seconds, "step_seconds": seconds / result.steps,
            "examples_per_second": result.train_examples / seconds, "tokens_per_second": result.train_tokens / seconds,
            "flops_per_token": training_flops_per_token(model, size.max_length), "flops_per_second": flops / seconds,
            "mfu": flops / seconds / peak if peak else None, "peak_memory_mb": peak_memory_mb(device)}


def probe_part(model, tokenizer, size: Size, device: torch.device, peak: float | None) -> dict:
    """weightspace.probing.first_token_features over size.probe_examples examples, after one batch's warm-up."""
    from weightspace.finetuning import encode
    from weightspace.probing import first_token_features

    encoder = model.base_model
    df = synthetic_examples(size.probe_examples, size.words, size.max_length, seed=1)
    tokens = sum(len(f["input_ids"]) for f in encode(df, tokenizer, size.max_length))
    reset_peak_memory(device)
    first_token_features(encoder, tokenizer, df.iloc[: size.probe_batch_size], size.max_length,
                         size.probe_batch_size, device)
    sync(device)
    start = time.perf_counter()
    features = first_token_features(encoder, tokenizer, df, size.max_length, size.probe_batch_size, device)
    sync(device)
    seconds = time.perf_counter() - start
    flops = tokens * forward_flops_per_token(model, size.max_length)
    return {"examples": len(features), "tokens": tokens, "finite": bool(np.isfinite(features).all()),
            "hidden": features.shape[1], "seconds": seconds, "examples_per_second": len(features) / seconds,
            "tokens_per_second": tokens / seconds, "flops_per_second": flops / seconds,
            "mfu": flops / seconds / peak if peak else None, "peak_memory_mb": peak_memory_mb(device)}


def roberta_shapes(size: Size) -> dict[str, tuple[int, ...]]:
    """The floating tensors of a bare RoBERTa encoder of `size`, as AutoModel names them."""
    from transformers import RobertaConfig, RobertaModel

    with torch.device("meta"):
        encoder = RobertaModel(RobertaConfig(**size.encoder))
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items() if v.is_floating_point()}


def write_checkpoints(folder: Path, size: Size) -> tuple[Path, list[Path]]:
    """base.safetensors (random) and size.checkpoints models, each the base moved by a direction all
    models share plus its own noise of the same scale (their task vectors' cosines are about 0.5)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    base = {k: 0.05 * torch.randn(s, generator=g) for k, s in roberta_shapes(size).items()}
    base_path = folder / "base.safetensors"
    save_file(base, str(base_path))
    shared = {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    paths = []
    for i in range(size.checkpoints):
        paths.append(folder / f"model{i}.safetensors")
        save_file({k: v + shared[k] + 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()},
                  str(paths[-1]))
    return base_path, paths


def copy_seconds(numel: int, copies: int, source: torch.device, target: torch.device) -> float:
    """Seconds for `copies` copies of `numel` float32 from `source` to `target` (a host side is pageable)."""
    src = torch.ones(numel, device=source)
    dst = torch.empty(numel, device=target)
    dst.copy_(src)  # warm-up: the first copy pays for the pages and the driver's staging buffers
    sync(source if source.type == "cuda" else target)
    start = time.perf_counter()
    for _ in range(copies):
        dst.copy_(src)
    sync(source if source.type == "cuda" else target)
    return time.perf_counter() - start


def read_into_page_cache(paths) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def similarity_part(size: Size, device: torch.device, folder: Path, memory_mb: float) -> dict:
    """One timed stream_similarity pass (after a warm-up pass) against copies of the same bytes."""
    from weightspace.similarity import stream_similarity
    from weightspace.taskvectors import task_vector

    base, models = write_checkpoints(folder, size)
    vectors = [task_vector(m, base, name=m.stem) for m in models]
    numel = vectors[0].numel
    read_bytes = (len(models) + 1) * numel * 4  # each model and the shared base once
    read_into_page_cache([base, *models])
    reset_peak_memory(device)
    stream_similarity(vectors, memory_mb, device)
    sync(device)
    start = time.perf_counter()
    similarity = stream_similarity(vectors, memory_mb, device)
    sync(device)
    seconds = time.perf_counter() - start
    peak = peak_memory_mb(device)
    host = torch.device("cpu")
    h2d = copy_seconds(numel, len(models) + 1, host, device)
    d2h = copy_seconds(numel, len(models) + 1, device, host)
    return {"models": len(models), "parameters_per_model": numel, "bytes_read": read_bytes, "seconds": seconds,
            "gb_per_second": read_bytes / seconds / 1e9, "host_to_device_gb_per_second": read_bytes / h2d / 1e9,
            "device_to_host_gb_per_second": read_bytes / d2h / 1e9, "over_host_to_device": h2d / seconds,
            "over_device_to_host": d2h / seconds, "memory_mb": memory_mb, "cosine": similarity.cosine.tolist(),
            "names": similarity.names, "peak_memory_mb": peak}


# -- the report -----------------------------------------------------------------------------------

def chosen_device() -> torch.device | None:
    """The device to measure (None: CUDA was asked for and there is none)."""
    name = os.environ.get("BENCH_GPU_DEVICE", "cuda")
    if name not in ("cuda", "cpu"):
        raise SystemExit(f"bench gpu: BENCH_GPU_DEVICE is '{name}', expected cuda or cpu")
    if name == "cuda" and not torch.cuda.is_available():
        return None
    return torch.device(name)


def chosen_size(paper: dict) -> tuple[str, Size]:
    name = os.environ.get("BENCH_GPU_SIZE", "full")
    if name not in ("full", "tiny"):
        raise SystemExit(f"bench gpu: BENCH_GPU_SIZE is '{name}', expected full or tiny")
    return name, full_size(paper) if name == "full" else TINY


def device_description(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({torch.get_num_threads()} threads)"
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "peak_bf16_flops": peak_bf16_flops(name) if device.type == "cuda" else None}


def suggested_examples_per_second(finetune: dict) -> int:
    return max(1, math.floor(finetune["examples_per_second"] / SAFETY_FACTOR))


def _mb(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_table(parts: dict, peak: float | None) -> None:
    peak_text = f"peak bf16 {peak / 1e12:.0f} TFLOP/s" if peak else "peak bf16 unknown"
    print(f"{'part':<11} {'rate':>24} {'per step/pass':>14} {'baseline':>36} {'ratio':>7} {'peak MB':>8}")
    if "finetune" in parts:
        f = parts["finetune"]
        print(f"{'finetune':<11} {f['examples_per_second']:>9.1f} ex/s {f['tokens_per_second']:>7.0f} tok/s "
              f"{1000 * f['step_seconds']:>11.1f} ms {'MFU, ' + peak_text:>36} {_ratio(f['mfu']):>7} "
              f"{_mb(f['peak_memory_mb']):>8}")
    if "probe" in parts:
        p = parts["probe"]
        print(f"{'probe':<11} {p['examples_per_second']:>9.1f} ex/s {p['tokens_per_second']:>7.0f} tok/s "
              f"{'':>14} {'MFU, ' + peak_text:>36} {_ratio(p['mfu']):>7} {_mb(p['peak_memory_mb']):>8}")
        if "finetune" in parts:
            print(f"{'':<11} {'':>24} {'':>14} {'time/example over training (1/3)':>36} "
                  f"{parts['finetune']['examples_per_second'] / p['examples_per_second']:>7.2f}")
    if "similarity" in parts:
        s = parts["similarity"]
        print(f"{'similarity':<11} {s['gb_per_second']:>19.2f} GB/s {s['seconds']:>12.2f} s "
              f"{'host->device copy %.2f GB/s' % s['host_to_device_gb_per_second']:>36} "
              f"{s['over_host_to_device']:>7.2f} {_mb(s['peak_memory_mb']):>8}")
        print(f"{'':<11} {'':>24} {'':>14} {'device->host copy %.2f GB/s' % s['device_to_host_gb_per_second']:>36} "
              f"{s['over_device_to_host']:>7.2f}")


def main(out_dir) -> None:
    device = chosen_device()
    if device is None:
        print("gpu: skipped, no CUDA device")
        return
    paper = paper_settings()
    size_name, size = chosen_size(paper)
    limit = env_number("BENCH_GPU_SECONDS", "300", float, 0)
    info = device_description(device)
    peak = info["peak_bf16_flops"]
    print(f"{info['device']}, torch {info['torch']}, CUDA {info['cuda']}; size {size_name}: batch {size.batch_size} "
          f"x {size.max_length} tokens, {size.steps} steps after {size.warmup_steps}; probe {size.probe_examples} "
          f"examples in batches of {size.probe_batch_size}; similarity of {size.checkpoints} models")
    start = time.perf_counter()
    parts, skipped = {}, []
    tokenizer = synthetic_tokenizer(size.words)
    model = roberta_classifier(size)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"finetune": lambda: finetune_part(model, tokenizer, size, device, paper, peak),
                "probe": lambda: probe_part(model, tokenizer, size, device, peak),
                "similarity": lambda: similarity_part(size, device, Path(tmp), paper["geometry"]["memory_mb"])}
        for name, run in runs.items():
            if time.perf_counter() - start > limit:
                skipped.append(name)
                print(f"   {name}: skipped, past BENCH_GPU_SECONDS={limit:g}")
                continue
            parts[name] = run()
            if name == "probe":
                model.cpu()  # the similarity pass gets the device's memory to itself
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print_table(parts, peak)
    result = {**info, "size": size_name, "settings": asdict(size), "parts": parts, "skipped": skipped,
              "seconds": time.perf_counter() - start}
    if "finetune" in parts:
        current = (paper.get("cluster") or {}).get("examples_per_second", DEFAULT_EXAMPLES_PER_SECOND)
        suggested = suggested_examples_per_second(parts["finetune"])
        result |= {"suggested_examples_per_second": suggested, "safety_factor": SAFETY_FACTOR}
        print(f"suggested cluster.examples_per_second: {suggested} (now {current}): the finetune's "
              f"{parts['finetune']['examples_per_second']:.0f} examples/s at {size.max_length} tokens over a safety "
              f"factor of {SAFETY_FACTOR:g} (finetune.max_length {paper['finetune']['max_length']}, validation "
              "during training); cluster.margin applies on top")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
