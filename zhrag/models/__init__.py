"""zhrag.models package."""
