"""Model adapters of the video package: one module per model family, and LanguageBind's video tower."""
