"""Upscale video files (placeholder; filled in by the video I/O work)."""
