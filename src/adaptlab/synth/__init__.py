"""Synthetic annotated data from a teacher LLM: prompts, generation, alignment, validation, review."""
