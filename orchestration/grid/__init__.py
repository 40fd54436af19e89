"""Grids of experiments: TOML expansion (`spec`), cell status on disk (`cells`), the
parallel resumable runner (`runner`) and its worker process (`worker`)."""
