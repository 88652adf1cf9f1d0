"""Tests of the storage layer: one contract for every backend, plus per-backend details."""
