"""zhrag.prompts package."""
