"""Benchmark: de-quantising an embedded GGUF with transformers (the first load of a model, before its copy exists) —
gguf tensor name maps built once per load against once per submodule.

Not a test: it prints figures. Both variants run inside ``loader.one_gguf_parse`` (one ``GGUFReader`` per file);
the baseline, measured in the same run, restores gguf's own ``get_tensor_name_map`` inside the block, which is
what the block did before it shared the maps (transformers builds one per submodule of the model while it maps
weight names). Each round loads the model once per variant, alternating; prints the best of ``--rounds``.

    python bench/gguf_load.py [--model embedded:smollm2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import gguf
import torch
import transformers

from axwarehouse.model.loader import one_gguf_parse, quiet_loading, resolve


def load_seconds(spec: str, share_name_maps: bool) -> tuple[float, int]:
    """Seconds to load ``spec``'s GGUF as a float32 model, and how many name maps were built."""
    own = gguf.get_tensor_name_map
    builds = [0]

    def counted(arch, n_blocks):
        builds[0] += 1
        return own(arch, n_blocks)

    src = resolve(spec)
    gguf.get_tensor_name_map = counted
    try:
        started = time.perf_counter()
        with quiet_loading(), one_gguf_parse():
            if not share_name_maps:
                gguf.get_tensor_name_map = counted  # undo the block's sharing: the baseline
            transformers.AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=torch.float32)
        return time.perf_counter() - started, builds[0]
    finally:
        gguf.get_tensor_name_map = own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    best = {False: (float("inf"), 0), True: (float("inf"), 0)}
    load_seconds(args.model, True)  # imports and page cache warm before timing
    for _ in range(args.rounds):
        for share in (False, True):
            seconds, builds = load_seconds(args.model, share)
            best[share] = min(best[share], (seconds, builds))
    (base, base_builds), (now, now_builds) = best[False], best[True]
    print(f"{args.model}: name map per submodule {base:.2f} s ({base_builds} maps built), "
          f"shared {now:.2f} s ({now_builds} built): {base / now:.2f}x")


if __name__ == "__main__":
    main()
