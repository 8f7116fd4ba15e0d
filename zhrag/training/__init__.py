"""zhrag.training package."""
