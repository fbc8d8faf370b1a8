"""The video SR evaluation protocol (placeholder)."""
