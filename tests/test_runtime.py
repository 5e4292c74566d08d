"""The runtime every stage shares: the device it picks, and evaluation in chunks."""

import os

import torch

from sharpminima.runtime import chunks, pick_device


def test_cuda_is_picked_with_deterministic_kernels(monkeypatch):
    """Without them, reruns on a GPU differ (measured on an H200: docs/performance.md)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        assert pick_device("auto").type == "cuda"
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
    assert pick_device("cpu").type == "cpu"


def test_chunks_cover_everything_without_singletons():
    assert [(s.start, s.stop) for s in chunks(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert [(s.start, s.stop) for s in chunks(9, 4)] == [(0, 4), (4, 9)]
    assert [(s.start, s.stop) for s in chunks(3, 5)] == [(0, 3)]
