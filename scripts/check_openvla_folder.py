"""Check a real OpenVLA checkpoint folder against the native loader, then decode one action.

Step 1 reads only the safetensors headers and compares every tensor name and shape with the
network that the folder's ``config.json`` builds (no weights are loaded). Step 2 (unless
``--names-only``) loads the folder through ``OpenVLAPolicy.from_pretrained`` and decodes one action
for an image (``--image`` PNG/JPEG, or a random one) and an instruction, printing the prompt ids,
the action tokens and the un-normalised action.

    HF_HUB_OFFLINE=1 python scripts/check_openvla_folder.py /models/openvla-7b --dataset-key bridge_orig \\
        --device cuda --dtype bfloat16 --image frame.png --instruction "put the carrot on the plate"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.adapters.openvla_model import OpenVLAConfig, checkpoint_problems  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dataset-key", default=None, help="norm_stats key (default: the only one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--image", type=Path, default=None, help="RGB image file (default: random 224x224)")
    parser.add_argument("--instruction", default="pick up the object")
    parser.add_argument("--names-only", action="store_true", help="stop after the name/shape check")
    args = parser.parse_args(argv)

    config = OpenVLAConfig.from_folder(args.folder)
    print(f"config: {config.vision_backbone_id} + {config.llm_backbone_id}, towers {list(config.timm_model_ids)}, "
          f"vocab {config.text_config['vocab_size']}, datasets {sorted(config.norm_stats)[:8]}"
          f"{' …' if len(config.norm_stats) > 8 else ''}")
    problems = checkpoint_problems(args.folder, config)
    if problems:
        print(f"{len(problems)} name/shape problem(s):")
        print("\n".join("  " + p for p in problems[:40]))
        return 1
    print("names and shapes: all tensors match the native network")
    if args.names_only:
        return 0

    import torch

    from embodied_steer.adapters.openvla import OpenVLAPolicy
    from embodied_steer.core.types import Observation

    start = time.perf_counter()
    policy = OpenVLAPolicy.from_pretrained(args.folder, dataset_key=args.dataset_key, device=args.device,
                                           dtype=args.dtype)
    print(f"loaded in {time.perf_counter() - start:.1f} s on {args.device} ({next(policy.network.parameters()).dtype})")
    if args.image is not None:
        from PIL import Image

        image = np.asarray(Image.open(args.image).convert("RGB"))
    else:
        image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    obs = Observation(images={"image": image}, instruction=args.instruction)
    print("prompt ids:", policy.prompt_tokenizer(args.instruction).tolist())
    with torch.inference_mode():
        start = time.perf_counter()
        chunk = policy.act(obs)
        elapsed = time.perf_counter() - start
    record = policy.last_decode
    print(f"action tokens: {record.token_ids[0].tolist()} (all action tokens: {bool(record.valid.all())})")
    print(f"action [{policy.dataset_key}]: {np.array2string(chunk.actions[0], precision=4)}  ({elapsed * 1e3:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
