"""zhrag.graph package."""
