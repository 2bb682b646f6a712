"""Teacher LLMs behind one async interface: OpenAI-compatible HTTP, local transformers, replay."""
