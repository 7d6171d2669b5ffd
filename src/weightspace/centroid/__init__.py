"""§7, App. H: the centroid of other datasets' models as the start of BitFit / LoRA."""
