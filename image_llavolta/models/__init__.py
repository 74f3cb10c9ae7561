"""Model adapters of the image package: one module per model family (LLaVA)."""
