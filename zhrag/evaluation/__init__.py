"""zhrag.evaluation package."""
