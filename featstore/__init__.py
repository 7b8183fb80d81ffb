"""featstore: a versioned, exactly-once feature cache for multimodal emotion LLMs."""
