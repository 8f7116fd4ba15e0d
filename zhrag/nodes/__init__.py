"""zhrag.nodes package."""
