"""Tests for tff_byz.datasets."""
