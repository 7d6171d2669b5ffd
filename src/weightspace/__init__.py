"""weightspace: where finetuned language models live in weight space."""

__version__ = "0.1.0"
