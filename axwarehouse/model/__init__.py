"""Target-model runtime: loading (embedded GGUF, HF dir, hub id), chat renderings, layer-L capture."""
