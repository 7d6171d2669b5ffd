"""§3, §5, §6, App. E-G: the region between similarly finetuned models, scored by the generalized loss."""
