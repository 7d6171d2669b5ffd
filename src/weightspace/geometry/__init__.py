"""§2.3, §4, App. B-D: task-vector similarity, spectral clustering and t-SNE of finetuned models."""
