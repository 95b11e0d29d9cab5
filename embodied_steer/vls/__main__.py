"""Write a reward program for a task: ``python -m embodied_steer.vls --task Lift --out-dir outputs/vls``.

Builds the robosuite task, resets it with ``--seed``, saves the numbered-keypoint image the VLM sees
(``keypoints.png``) and the keypoints (``keypoints.json``), then writes ``program.py``: the VLM's
program when ``EMBODIED_STEER_VLM_BASE_URL`` / ``_MODEL`` are set (see ``embodied_steer.vls.vlm``),
else — or when the VLM gives no valid program — the shipped default. The file can be passed back as
``guide.program=<path>``; it is compiled through the sandbox again when loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("embodied_steer.vls")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embodied_steer.vls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="Lift", help="robosuite task (Lift, PickPlaceCan)")
    parser.add_argument("--instruction", default=None, help="task instruction (default: the task's own)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed (object placement)")
    parser.add_argument("--camera", default="agentview")
    parser.add_argument("--size", type=int, default=512, help="keypoint image height and width in pixels")
    parser.add_argument("--extra-body", action="append", default=[], help="append a MuJoCo body as a keypoint")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/vls"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from PIL import Image

    from embodied_steer.sim.robosuite_env import RobosuiteEnv
    from embodied_steer.vls.errors import NoProgramInResponse, VLMError
    from embodied_steer.vls.keypoints import keypoint_image, keypoint_legend, task_name
    from embodied_steer.vls.writer import ProgramWriter

    env = RobosuiteEnv(task=args.task)
    try:
        env.reset(seed=args.seed)
        image, _, points = keypoint_image(env, camera=args.camera, height=args.size, width=args.size,
                                              extra_bodies=args.extra_body)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(args.out_dir / "keypoints.png")
        legend = keypoint_legend(task_name(env), args.extra_body)
        (args.out_dir / "keypoints.json").write_text(json.dumps(
            {"task": task_name(env), "seed": args.seed, "camera": args.camera, "units": "metres, world frame",
             "keypoints": [{"index": i, "name": k.name, "description": k.description, "position": p}
                           for i, (k, p) in enumerate(zip(legend, points.tolist()))]}, indent=1))
        writer = ProgramWriter.for_task(task_name(env))
        source = "default"
        if writer.client is not None:
            instruction = args.instruction or env.instruction
            try:
                writer.write(instruction, legend, image, camera=args.camera)
                source = f"VLM {writer.client.config.model}"
            except (NoProgramInResponse, VLMError) as exc:
                log.warning("keeping the shipped default program: %s", exc)
        else:
            log.info("no VLM configured (EMBODIED_STEER_VLM_BASE_URL unset): writing the shipped default program")
        assert writer.program is not None
        (args.out_dir / "program.py").write_text(writer.program.source, encoding="utf-8")
        log.info("wrote %s (%s, %d stage(s)), keypoints.png and keypoints.json", args.out_dir / "program.py",
                 source, writer.program.num_stages())
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
