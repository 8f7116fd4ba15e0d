"""zhrag.tools package."""
