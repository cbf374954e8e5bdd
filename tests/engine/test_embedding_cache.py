"""The SAM image-embedding cache: content keys, batched hits and misses, safe concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import torch
from torch import nn

from vrpsam.engine.embedding_cache import EmbeddingCache, module_fingerprint, sam_identity


def identity(weights_seed: int = 0, preprocessing: str = "official", dtype=torch.float32) -> str:
    torch.manual_seed(weights_seed)
    return sam_identity(nn.Conv2d(3, 4, 3), preprocessing=preprocessing, sam_size=1024, compute_dtype=dtype)


def test_key_depends_on_image_weights_preprocessing_and_precision(tmp_path):
    image = torch.randn(3, 16, 16)
    key = EmbeddingCache(tmp_path, identity()).key(image)
    assert EmbeddingCache(tmp_path, identity()).key(image.clone()) == key
    other_image = image.clone()
    other_image[0, 0, 0] += 1e-3
    assert EmbeddingCache(tmp_path, identity()).key(other_image) != key
    assert EmbeddingCache(tmp_path, identity()).key(image.reshape(3, 8, 32)) != key  # same bytes, other shape
    assert EmbeddingCache(tmp_path, identity(weights_seed=1)).key(image) != key
    assert EmbeddingCache(tmp_path, identity(preprocessing="standard")).key(image) != key
    assert EmbeddingCache(tmp_path, identity(dtype=torch.bfloat16)).key(image) != key


def test_module_fingerprint_sees_every_value():
    module = nn.Linear(4, 4)
    before = module_fingerprint(module)
    with torch.no_grad():
        module.bias[3] += 1e-6
    assert module_fingerprint(module) != before


def test_embed_reads_hits_and_computes_only_misses(tmp_path):
    calls = []

    def compute(images):
        calls.append(len(images))
        return images.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1) * 3  # (B, 2, S, S), a function of the image

    images = torch.randn(3, 3, 8, 8)
    cache = EmbeddingCache(tmp_path, "id", memory_items=2)
    first = cache.embed(images[:2], compute, "cpu")
    assert calls == [2] and (cache.hits, cache.misses) == (0, 2)
    again = EmbeddingCache(tmp_path, "id").embed(images, compute, "cpu")  # a fresh process-like reader
    assert calls == [2, 1]
    assert torch.equal(again[:2], first)
    assert torch.equal(again, compute(images))
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3 and not list(tmp_path.rglob("*.tmp"))


WRITER = textwrap.dedent(
    """
    import sys, torch
    from vrpsam.engine.embedding_cache import EmbeddingCache
    cache = EmbeddingCache(sys.argv[1], "shared-identity")
    embedding = torch.arange(256 * 16 * 16, dtype=torch.float32).reshape(256, 16, 16)
    key = cache.key(torch.ones(3, 8, 8))
    for _ in range(int(sys.argv[2])):
        cache.put(key, embedding)
        read = EmbeddingCache(sys.argv[1], "shared-identity").get(key)
        assert read is not None and torch.equal(read, embedding), "read back a different embedding"
    print(key)
    """
)


def test_concurrent_writers_of_one_key_leave_a_complete_identical_file(tmp_path):
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "25"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    expected = torch.arange(256 * 16 * 16, dtype=torch.float32).reshape(256, 16, 16)
    reader = EmbeddingCache(tmp_path, "shared-identity")
    key = reader.key(torch.ones(3, 8, 8))
    while any(w.poll() is None for w in writers):
        found = EmbeddingCache(tmp_path, "shared-identity").get(key)  # never a partial file
        if found is not None:
            assert torch.equal(found, expected)
        time.sleep(0.002)  # leave the two cores to the writers
    outputs = [w.communicate() for w in writers]
    assert all(w.returncode == 0 for w in writers), [err[-2000:] for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {key}
    assert torch.equal(reader.get(key), expected)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.safetensors"]
