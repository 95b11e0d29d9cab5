"""Native OpenVLA loader and adapter, on a tiny random checkpoint folder with the real schema.

The folder is written by ``openvla_tiny`` (same config keys, weight names, shard index and
tokenizer files as ``openvla/openvla-7b``) and loaded through ``OpenVLAPolicy.from_pretrained``,
the path a real folder takes. A separate test builds the real 7B configuration on the meta device
and checks its checkpoint names and shapes against the published release.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from embodied_steer.adapters.openvla import OpenVLAPolicy
from embodied_steer.adapters.openvla_model import (
    OpenVLAConfig,
    build_network,
    checkpoint_problems,
    checkpoint_name,
    count_parameters,
    expected_checkpoint_shapes,
)
from embodied_steer.adapters.openvla_processing import (
    ActionBins,
    ImageTransform,
    action_stats,
    libero_gripper,
    unnormalize,
)
from embodied_steer.adapters.openvla_tiny import TINY_NORM_STATS, tiny_network_state, write_tiny_openvla_checkpoint
from embodied_steer.core.errors import CheckpointError, ConfigError, ObservationError
from embodied_steer.core.types import ActionBounds, Observation

ACTION_DIM = 7


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_tiny_openvla_checkpoint(tmp_path_factory.mktemp("openvla") / "tiny", seed=0, num_shards=3)


@pytest.fixture(scope="module")
def policy(folder) -> OpenVLAPolicy:
    return OpenVLAPolicy.from_pretrained(folder, dataset_key="tiny_lift")


def image(seed: int = 0, shape=(120, 160, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def obs() -> Observation:
    return Observation(images={"agentview": image()}, instruction="Lift the red cube")


# ----------------------------------------------------------------------------- the folder and its weights
def test_tiny_folder_has_the_release_layout(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json"} <= names
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert shards == {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}
    keys = set(index["weight_map"])
    for key in ("vision_backbone.featurizer.blocks.0.ls1.scale_factor", "vision_backbone.featurizer.reg_token",
                "vision_backbone.fused_featurizer.attn_pool.latent", "projector.fc3.weight",
                "language_model.model.layers.1.mlp.down_proj.weight", "language_model.lm_head.weight"):
        assert key in keys
    assert not any(k.endswith(".gamma") for k in keys)
    config = json.loads((folder / "config.json").read_text())
    assert config["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert config["text_config"]["vocab_size"] == 1088 and config["pad_to_multiple_of"] == 64


def test_weights_round_trip_exactly(folder, policy):
    from safetensors import safe_open

    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    loaded = {checkpoint_name(k): v for k, v in policy.network.state_dict().items()}
    assert set(loaded) == set(index)
    for name, shard in index.items():
        with safe_open(str(folder / shard), framework="pt") as handle:
            saved = handle.get_tensor(name)
        assert loaded[name].dtype == saved.dtype
        assert torch.equal(loaded[name], saved), name
    # and they are the builder's tensors, not a re-initialisation
    state = tiny_network_state(policy.config, seed=0)
    assert torch.equal(loaded["projector.fc1.weight"], state["projector.fc1.weight"])


def test_bfloat16_loading_casts_every_weight(folder, policy, obs):
    half = OpenVLAPolicy.from_pretrained(folder, dataset_key="tiny_lift", dtype="bfloat16")
    ours, full = half.network.state_dict(), policy.network.state_dict()
    assert all(v.dtype == torch.bfloat16 for v in ours.values())
    assert all(torch.equal(ours[k], full[k].to(torch.bfloat16)) for k in full)
    chunk = half.act(obs)
    assert chunk.actions.shape == (1, ACTION_DIM) and half.last_decode.token_ids.shape == (1, ACTION_DIM)
    with pytest.raises(ConfigError, match="unknown floating-point dtype 'int8'"):
        OpenVLAPolicy.from_pretrained(folder, dataset_key="tiny_lift", dtype="int8")


def _rewrite_single_file(src: Path, dst: Path, edit) -> Path:
    """Copy the folder with its shards merged into one edited ``model.safetensors``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    index = json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = {}
    for name, shard in index.items():
        with safe_open(str(dst / shard), framework="pt") as handle:
            tensors[name] = handle.get_tensor(name)
    for shard in set(index.values()):
        (dst / shard).unlink()
    (dst / "model.safetensors.index.json").unlink()
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_single_file_checkpoint_loads_too(folder, tmp_path, policy, obs):
    single = _rewrite_single_file(folder, tmp_path / "single", lambda t: None)
    other = OpenVLAPolicy.from_pretrained(single, dataset_key="tiny_lift")
    np.testing.assert_array_equal(other.act(obs).actions, policy.act(obs).actions)


def test_strict_loading_names_missing_and_unexpected_keys(folder, tmp_path):
    def rename(tensors):
        tensors["projector.fc4.bias"] = tensors.pop("projector.fc3.bias")
        tensors["vision_backbone.featurizer.blocks.0.ls1.gamma"] = tensors.pop(
            "vision_backbone.featurizer.blocks.0.ls1.scale_factor")

    bad = _rewrite_single_file(folder, tmp_path / "renamed", rename)
    with pytest.raises(CheckpointError) as err:
        OpenVLAPolicy.from_pretrained(bad, dataset_key="tiny_lift")
    text = str(err.value)
    assert "missing keys: projector.fc3.bias, vision_backbone.featurizer.blocks.0.ls1.scale_factor" in text
    assert "unexpected keys: projector.fc4.bias, vision_backbone.featurizer.blocks.0.ls1.gamma" in text


def test_strict_loading_names_wrong_shapes(folder, tmp_path):
    def shrink(tensors):
        tensors["projector.fc2.weight"] = tensors["projector.fc2.weight"][:, :-1].contiguous()

    bad = _rewrite_single_file(folder, tmp_path / "shape", shrink)
    with pytest.raises(CheckpointError, match=r"projector\.fc2\.weight: checkpoint \(64, 319\) vs network \(64, 320\)"):
        OpenVLAPolicy.from_pretrained(bad, dataset_key="tiny_lift")


def test_header_only_check_and_script(folder, tmp_path, capsys):
    import importlib.util

    assert checkpoint_problems(folder) == []

    def rename(tensors):
        tensors["projector.fc4.bias"] = tensors.pop("projector.fc3.bias")
        tensors["projector.fc2.weight"] = tensors["projector.fc2.weight"][:, :-1].contiguous()

    bad = _rewrite_single_file(folder, tmp_path / "bad", rename)
    assert checkpoint_problems(bad) == [
        "missing: projector.fc3.bias (64,)",
        "unexpected: projector.fc4.bias",
        "shape: projector.fc2.weight checkpoint (64, 319) vs network (64, 320)",
    ]
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_openvla_folder.py"
    spec = importlib.util.spec_from_file_location("check_openvla_folder", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(bad), "--names-only"]) == 1
    assert module.main([str(folder), "--dataset-key", "tiny_lift", "--instruction", "lift the cube"]) == 0
    out = capsys.readouterr().out
    assert "all tensors match" in out and "action [tiny_lift]" in out


def test_missing_files_are_named(folder, tmp_path):
    broken = shutil.copytree(folder, tmp_path / "noshard")
    (broken / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors"):
        OpenVLAPolicy.from_pretrained(broken, dataset_key="tiny_lift")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        OpenVLAPolicy.from_pretrained(broken, dataset_key="tiny_lift")
    with pytest.raises(CheckpointError):
        OpenVLAPolicy.from_pretrained(tmp_path / "nowhere", dataset_key="tiny_lift")
    # a hub id with the hub offline: a clear error, no hang
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        OpenVLAPolicy.from_pretrained("openvla/openvla-7b", dataset_key="bridge_orig")


# ----------------------------------------------------------------------------- decoding
def test_greedy_decode_gives_seven_action_tokens(policy, obs):
    strict = policy.with_options(action_tokens_only=True)
    chunk = strict.act(obs)
    assert chunk.actions.shape == (1, ACTION_DIM)
    record = strict.last_decode
    first, last = strict.bins.token_range
    assert (first, last) == (1024 - 256, 1023)
    assert record.token_ids.shape == (1, ACTION_DIM)
    assert ((record.token_ids >= first) & (record.token_ids <= last)).all() and record.valid.all()
    assert record.action_probs.shape == (1, ACTION_DIM, 256)
    np.testing.assert_allclose(record.action_probs.sum(-1), 1.0, atol=1e-5)
    # greedy = argmax of the action-token probabilities when restricted to them
    np.testing.assert_array_equal(record.token_ids[0], first + record.action_probs[0].argmax(-1))
    # OpenVLA's de-tokenisation, written out: bin = clip(V - id - 1, 0, 254), centre of linspace(-1, 1, 256)
    edges = np.linspace(-1, 1, 256)
    centers = (edges[:-1] + edges[1:]) / 2
    normalized = centers[np.clip(1024 - record.token_ids[0] - 1, 0, 254)]
    stats = TINY_NORM_STATS["tiny_lift"]["action"]
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    expected = 0.5 * (normalized + 1) * (q99 - q01) + q01
    expected[-1] = normalized[-1]  # mask is False for the gripper
    np.testing.assert_allclose(chunk.actions[0], expected, rtol=1e-6, atol=1e-7)


def test_unrestricted_decode_clips_like_openvla(policy, obs):
    policy.act(obs)
    record = policy.last_decode
    np.testing.assert_array_equal(record.valid, policy.bins.is_action_token(record.token_ids))
    bins = ActionBins(vocab_end=1024, n_bins=256)
    # ids above the action range (padding) → first centre; below it → last centre, as np.clip does
    np.testing.assert_allclose(bins.decode(np.array([1030, 1023, 1022, 770, 769, 768, 5])),
                               bins.centers[[0, 0, 1, 253, 254, 254, 254]])


def _reference_greedy(policy: OpenVLAPolicy, obs: Observation) -> list[int]:
    """Greedy decoding by re-running the whole sequence every step (no KV cache)."""
    pixels, ids = policy.preprocess(obs)
    lm = policy.network.language_model
    with torch.no_grad():
        patches = policy.network.image_tokens(pixels)
        tokens: list[int] = []
        for _ in range(ACTION_DIM):
            seq = torch.cat([ids, torch.tensor([tokens], dtype=torch.long)], dim=1)
            emb = lm.model.embed_tokens(seq)
            x = torch.cat([emb[:, :1], patches, emb[:, 1:]], dim=1)
            tokens.append(int(lm(inputs_embeds=x).logits[0, -1].argmax()))
    return tokens


def test_kv_cache_decoding_matches_full_recompute(policy, obs):
    policy.act(obs)
    assert policy.last_decode.token_ids[0].tolist() == _reference_greedy(policy, obs)


def test_greedy_decoding_matches_transformers_generate(policy, obs):
    """OpenVLA's predict_action is HF generate(max_new_tokens=7, greedy) on the multimodal prefix."""
    pixels, ids = policy.preprocess(obs)
    lm = policy.network.language_model
    with torch.no_grad():
        patches = policy.network.image_tokens(pixels)
        emb = lm.model.embed_tokens(ids)
        prefix = torch.cat([emb[:, :1], patches, emb[:, 1:]], dim=1)
        generated = lm.generate(inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long),
                                max_new_tokens=ACTION_DIM, do_sample=False, pad_token_id=policy.config.pad_token_id)
    policy.act(obs)
    assert generated[0, -ACTION_DIM:].tolist() == policy.last_decode.token_ids[0].tolist()


def test_featurizer_is_timms_second_to_last_block_without_prefix_tokens(policy):
    backbone = policy.network.vision_backbone
    pixels = torch.randn(1, 6, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = backbone(pixels)
        # timm's DINO-style API, as Prismatic called it (n = the second-to-last block, prefix dropped)
        reference = [tower.get_intermediate_layers(chunk, n=[len(tower.blocks) - 2])[0]
                     for tower, chunk in zip(backbone.towers(), pixels.split(3, dim=1))]
    assert backbone.featurizer.num_prefix_tokens == 5  # class + 4 registers
    assert ours.shape == (1, 256, 32 + 48)
    torch.testing.assert_close(ours, torch.cat(reference, dim=2), rtol=0, atol=0)


@pytest.mark.parametrize("strategy", ["resize-crop", "resize-naive"])
def test_preprocessing_matches_timms_eval_transform(policy, strategy):
    """Prismatic builds its processor from timm.data.create_transform (crop_pct 1.0); resize-naive
    replaces the resize size by (size, size)."""
    import timm.data
    from PIL import Image
    from torchvision.transforms import Resize

    img = image(3, shape=(90, 200, 3))
    ours = ImageTransform(policy.image_transform.towers, strategy)(img)
    for i, tower in enumerate(policy.image_transform.towers):
        transform = timm.data.create_transform(
            input_size=(3, tower.size, tower.size), interpolation=tower.interpolation, mean=tower.mean,
            std=tower.std, crop_pct=1.0, crop_mode="center", is_training=False)
        if strategy == "resize-naive":
            resize = transform.transforms[0]
            transform.transforms[0] = Resize((tower.size, tower.size), interpolation=resize.interpolation)
        torch.testing.assert_close(ours[3 * i: 3 * i + 3], transform(Image.fromarray(img)), rtol=0, atol=1e-6)


def test_prompt_is_openvlas(policy):
    tok = policy.prompt_tokenizer
    assert tok.prompt("Lift The Cube") == "In: What action should the robot take to lift the cube?\nOut:"
    ids = tok("Lift The Cube").tolist()
    assert ids[0] == 1 and ids[-1] == tok.tokenizer.token_to_id("\u2581")
    assert tok.tokenizer.decode(ids[1:-1]) == "In: What action should the robot take to lift the cube?\nOut:"
    assert 13 in ids  # "\n" through byte fallback (<0x0A>), as in Llama-2


def test_determinism_and_seeded_sampling(folder, policy, obs):
    first = policy.act(obs).actions
    assert np.array_equal(first, policy.act(obs).actions)
    reloaded = OpenVLAPolicy.from_pretrained(folder, dataset_key="tiny_lift")
    assert np.array_equal(first, reloaded.act(obs).actions)
    policy.reset(seed=3)
    a = policy.sample(obs, 6).actions
    tokens_a = policy.last_decode.token_ids.copy()
    policy.reset(seed=3)
    b = policy.sample(obs, 6).actions
    assert a.shape == (6, 1, ACTION_DIM) and np.array_equal(a, b)
    assert len({tuple(row) for row in tokens_a}) > 1, "temperature sampling should vary the tokens"
    assert policy.last_decode.temperature == 1.0
    policy.reset(seed=4)
    assert not np.array_equal(a, policy.sample(obs, 6).actions)


def test_samples_share_one_prefix_with_the_greedy_path(policy, obs):
    cold = policy.with_options(sample_temperature=1e-4)  # ~argmax
    samples = cold.sample(obs, 3).actions
    greedy = policy.act(obs).actions
    for row in samples:
        np.testing.assert_array_equal(row, greedy)


# ----------------------------------------------------------------------------- un-normalisation
def test_unnormalize_hand_computed():
    stats = {"q01": np.array([-0.5, 0.0, 2.0]), "q99": np.array([0.5, 1.0, 4.0]),
             "mask": np.array([True, True, False])}
    out = unnormalize(np.array([0.0, -1.0, 0.25]), stats)
    # dim 0: 0.5 * (0 + 1) * 1 - 0.5 = 0; dim 1: 0.5 * 0 * 1 + 0 = 0; dim 2: masked → unchanged 0.25
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25])
    out = unnormalize(np.array([1.0, 0.5, -0.75]), stats)
    np.testing.assert_allclose(out, [0.5, 0.75, -0.75])
    # the first bin centre, -1 + 1/255, on q01 = -0.5 / q99 = 0.5: 0.5 * (1/255) - 0.5
    bins = ActionBins(32000, 256)
    assert bins.token_range == (31744, 31999)
    np.testing.assert_allclose(unnormalize(bins.decode(np.array([31999])), {**stats, "q01": stats["q01"][:1],
                               "q99": stats["q99"][:1], "mask": stats["mask"][:1]}), [0.5 / 255 - 0.5])
    # encode is OpenVLA's digitize: -1 → bin 1 → id V - 1; +1 → bin 256 → id V - 256 (both ends clip)
    assert bins.encode(np.array([-1.0, 1.0])).tolist() == [31999, 31744]


def test_missing_mask_means_all_dimensions_are_normalised():
    key, stats = action_stats({"d": {"action": {"q01": [0.0, 0.0], "q99": [2.0, 4.0]}}}, None)
    assert key == "d" and stats["mask"].tolist() == [True, True]
    np.testing.assert_allclose(unnormalize(np.array([0.0, 0.0]), stats), [1.0, 2.0])


def test_dataset_key_errors_list_the_available_keys(folder, policy):
    with pytest.raises(ConfigError, match="unknown dataset_key 'bridge_orig'.*tiny_lift, tiny_other"):
        OpenVLAPolicy.from_pretrained(folder, dataset_key="bridge_orig")
    with pytest.raises(ConfigError, match="choose dataset_key from: tiny_lift, tiny_other"):
        policy.with_options(dataset_key=None)
    other = policy.with_options(dataset_key="tiny_other")
    assert other.info.extra["dataset_key"] == "tiny_other"


def test_fine_tune_statistics_file_adds_dataset_keys(folder, tmp_path, obs):
    copy = shutil.copytree(folder, tmp_path / "finetuned")
    stats = {"my_task": {"action": {"q01": [-1.0] * 7, "q99": [3.0] * 7, "mask": [True] * 7}}}
    (copy / "dataset_statistics.json").write_text(json.dumps(stats))
    tuned = OpenVLAPolicy.from_pretrained(copy, dataset_key="my_task")
    assert set(tuned.info.extra["available_dataset_keys"]) == {"my_task", "tiny_lift", "tiny_other"}
    actions = tuned.act(obs).actions[0]
    np.testing.assert_allclose(actions, 0.5 * (tuned.last_decode.normalized[0] + 1) * 4.0 - 1.0, rtol=1e-6)


def test_libero_gripper_post_processing():
    actions = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.9], [0.0] * 6 + [0.2]])
    out = libero_gripper(actions)
    assert out[:, -1].tolist() == [-1.0, 1.0]  # 0.9 (open) → -1 (robosuite open); 0.2 → +1 (close)
    np.testing.assert_array_equal(out[:, :-1], actions[:, :-1])


# ----------------------------------------------------------------------------- preprocessing
def test_image_preprocessing_normalises_per_tower(policy):
    pixels = policy.image_transform(np.full((50, 70, 3), 128, np.uint8))
    assert pixels.shape == (6, 224, 224)
    v = 128 / 255
    dino = [(v - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    siglip = [(v - 0.5) / 0.5] * 3
    np.testing.assert_allclose(pixels.mean(dim=(1, 2)).numpy(), dino + siglip, atol=1e-5)


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
def test_resize_strategies_give_square_towers(policy, strategy):
    transform = ImageTransform(policy.image_transform.towers, strategy)
    pixels = transform(image(shape=(90, 200, 3)))
    assert pixels.shape == (6, 224, 224)
    if strategy == "letterbox":  # padded rows carry the mean colour → normalise to ~0
        assert float(pixels[:, :5].abs().max()) < 0.02


def test_flip_and_camera_selection(policy):
    two = Observation(images={"agentview": image(1), "wrist": image(2)}, instruction="lift")
    with pytest.raises(ObservationError, match="set camera="):
        policy.act(two)
    with pytest.raises(ObservationError, match="camera 'front' is not in the observation; it has: agentview, wrist"):
        policy.with_options(camera="front").act(two)
    flipped = policy.with_options(camera="wrist", flip_images="horizontal")
    np.testing.assert_array_equal(flipped.select_image(two), two.images["wrist"][:, ::-1])


def test_bad_observations_raise_clear_errors(policy):
    with pytest.raises(ObservationError, match="instruction is empty"):
        policy.act(Observation(images={"agentview": image()}, instruction="  "))
    with pytest.raises(ObservationError, match=r"shape \(H, W, 3\)"):
        policy.act(Observation(images={"agentview": np.zeros((32, 32, 4), np.uint8)}, instruction="lift"))
    with pytest.raises(ObservationError, match="has none"):
        policy.act(Observation(instruction="lift"))
    with pytest.raises(ObservationError, match="uint8"):
        policy.image_transform(np.zeros((32, 32, 3), np.float32))


def test_bad_options_raise(policy):
    with pytest.raises(ConfigError, match="action_bounds have 2 dims"):
        policy.with_options(action_bounds=ActionBounds.symmetric(2))
    with pytest.raises(ConfigError, match="flip_images"):
        policy.with_options(flip_images="sideways")
    with pytest.raises(ConfigError, match="sample_temperature"):
        policy.with_options(sample_temperature=float("nan"))


# ----------------------------------------------------------------------------- activations
def test_module_hooks_fire_on_the_documented_schedule(policy, obs):
    modules, schedule = policy.modules(), policy.module_schedule()
    assert set(modules) == set(schedule)
    for name in ("vision", "vision.dino.blocks.0", "vision.siglip.blocks.2.mlp", "projector", "llm.embed_tokens",
                 "llm.layers.1", "llm.layers.0.mlp", "llm.layers.0.mlp.down_proj", "llm.norm", "llm.lm_head"):
        assert name in modules, name
    assert schedule["vision.dino.blocks.2"] == "never" and schedule["vision.dino.blocks.1"] == "chunk"
    calls: dict[str, list[tuple[int, ...]]] = {name: [] for name in modules}
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: calls[name].append(
        tuple((out[0] if isinstance(out, tuple) else out).shape))) for name, m in modules.items()]
    try:
        policy.sample(obs, 3)
    finally:
        for h in handles:
            h.remove()
    expected = {"chunk": 1, "token": ACTION_DIM, "never": 0}
    wrong = {n: (len(c), schedule[n]) for n, c in calls.items() if len(c) != expected[schedule[n]]}
    assert not wrong, wrong
    # chunk modules and the prompt pass see one sample; decoding passes see n = 3 with length 1
    assert calls["projector"][0][0] == 1
    prompt_len = calls["llm.layers.0.mlp"][0][1]
    text_len = policy.prompt_tokenizer("Lift the red cube").numel() - 1
    assert calls["llm.layers.0.mlp"][0][0] == 1 and prompt_len == 1 + 256 + text_len
    layout = policy.prefix_layout
    assert (layout.length, layout.image, layout.text) == (prompt_len, (1, 257), (257, prompt_len))
    assert all(shape[:2] == (3, 1) for shape in calls["llm.layers.0.mlp"][1:])
    assert calls["llm.lm_head"][0] == (1, 1, 1088)
    assert not any(m._forward_hooks for m in modules.values())


def test_a_hook_on_the_unembedding_steers_the_actions(policy, obs):
    target = policy.bins.token_range[1]  # token V - 1 → the lowest bin centre in every dimension
    handle = policy.modules()["llm.lm_head"].register_forward_hook(
        lambda mod, args, out: out.index_add(-1, torch.tensor([target]), torch.full(out.shape[:-1] + (1,), 1e4)))
    try:
        actions = policy.act(obs).actions
    finally:
        handle.remove()
    assert (policy.last_decode.token_ids == target).all()
    np.testing.assert_allclose(actions[0], policy.decode_tokens(np.full(ACTION_DIM, target)))


def test_down_proj_input_is_the_neuron_layer(policy):
    down = policy.modules()["llm.layers.0.mlp.down_proj"]
    assert down.in_features == policy.config.text_config["intermediate_size"] == 128


# ----------------------------------------------------------------------------- configs
def test_policy_yaml_instantiates_with_a_local_folder(folder, obs, policy):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "policies" / "openvla.yaml")
    assert cfg._target_ == "embodied_steer.adapters.openvla.OpenVLAPolicy.from_pretrained"
    cfg.path_or_hub_id = str(folder)
    cfg.dataset_key = "tiny_lift"
    cfg.center_crop_scale = None
    cfg.flip_images = "none"
    cfg.gripper = "none"
    loaded = instantiate(cfg)
    assert isinstance(loaded, OpenVLAPolicy) and loaded.info.action_bounds.dim == ACTION_DIM
    assert loaded.camera == "agentview"
    np.testing.assert_array_equal(loaded.act(obs).actions, policy.act(obs).actions)


def test_config_validation_names_the_field():
    from embodied_steer.adapters.openvla_tiny import tiny_openvla_config

    good = tiny_openvla_config()
    with pytest.raises(ConfigError, match="llm_backbone_id 'phi-2-3b'"):
        OpenVLAConfig.from_dict({**good, "llm_backbone_id": "phi-2-3b"})
    with pytest.raises(ConfigError, match="arch_specifier"):
        OpenVLAConfig.from_dict({**good, "arch_specifier": "no-align+linear"})
    with pytest.raises(ConfigError, match="missing 'vision_backbone_id'"):
        OpenVLAConfig.from_dict({k: v for k, v in good.items() if k != "vision_backbone_id"})
    with pytest.raises(ConfigError, match="'timm_model_ids' has 1 entries, expected 2"):
        OpenVLAConfig.from_dict({**good, "timm_model_ids": good["timm_model_ids"][:1]})


# ----------------------------------------------------------------------------- the real 7B layout
REAL_7B_CONFIG = {  # the architecture keys of openvla/openvla-7b's config.json (norm_stats left out)
    "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
    "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
    "image_resize_strategy": "resize-naive", "image_sizes": [224, 224],
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None], "pad_token_id": 32000, "pad_to_multiple_of": 64,
    "n_action_bins": 256, "torch_dtype": "bfloat16",
    "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "norm_stats": {"bridge_orig": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}},
}
# model.safetensors.index.json of openvla/openvla-7b (revision 47a0ec7): "total_size": 15082474368 bytes of bf16.
REAL_7B_TOTAL_BYTES_BF16 = 15082474368


def test_real_7b_configuration_builds_the_release_names_and_shapes(policy):
    config = OpenVLAConfig.from_dict(REAL_7B_CONFIG)
    network = build_network(config, "meta")  # no memory for the weights
    shapes = expected_checkpoint_shapes(network)
    assert count_parameters(shapes) * 2 == REAL_7B_TOTAL_BYTES_BF16
    assert config.action_vocab_end == 32000 and config.text_config["rms_norm_eps"] == 1e-6
    expected = {
        "vision_backbone.featurizer.cls_token": (1, 1, 1024),
        "vision_backbone.featurizer.reg_token": (1, 4, 1024),
        "vision_backbone.featurizer.pos_embed": (1, 256, 1024),
        "vision_backbone.featurizer.patch_embed.proj.weight": (1024, 3, 14, 14),
        "vision_backbone.featurizer.blocks.23.ls2.scale_factor": (1024,),
        "vision_backbone.fused_featurizer.pos_embed": (1, 256, 1152),
        "vision_backbone.fused_featurizer.blocks.26.mlp.fc1.weight": (4304, 1152),
        "vision_backbone.fused_featurizer.attn_pool.latent": (1, 1, 1152),
        "projector.fc1.weight": (8704, 2176),
        "projector.fc2.weight": (4096, 8704),
        "projector.fc3.weight": (4096, 4096),
        "language_model.model.embed_tokens.weight": (32064, 4096),
        "language_model.model.layers.31.mlp.down_proj.weight": (4096, 11008),
        "language_model.model.layers.0.self_attn.q_proj.weight": (4096, 4096),
        "language_model.model.norm.weight": (4096,),
        "language_model.lm_head.weight": (32064, 4096),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert sum(k.startswith("vision_backbone.featurizer.") for k in shapes) == 343
    assert sum(k.startswith("vision_backbone.fused_featurizer.") for k in shapes) == 342
    assert sum(k.startswith("language_model.") for k in shapes) == 3 + 32 * 9
    # the module map the adapter would expose on the real network
    real = OpenVLAPolicy(network, config, policy.prompt_tokenizer, policy.image_transform, dataset_key="bridge_orig")
    schedule = real.module_schedule()
    assert schedule["vision.dino.blocks.22"] == "chunk" and schedule["vision.dino.blocks.23"] == "never"
    assert schedule["vision.siglip.blocks.25"] == "chunk" and schedule["vision.siglip.blocks.26"] == "never"
    assert real.modules()["llm.layers.31.mlp.down_proj"].in_features == 11008
    assert real.bins.token_range == (31744, 31999)


@pytest.mark.slow
def test_cli_eval_runs_the_openvla_config_on_a_local_folder(folder, tmp_path):
    from embodied_steer.cli import main

    rc = main(["eval", "env=lift_cameras", "policy=openvla", f"policy.path_or_hub_id={folder}",
               "policy.dataset_key=tiny_lift", "policy.center_crop_scale=null", "policy.gripper=none",
               "policy.flip_images=none", "episodes=1", "env.horizon=4", f"output_dir={tmp_path}",
               "torch_threads=1", "fast_render=true"])
    assert rc == 0
    episode = json.loads((tmp_path / "episodes.jsonl").read_text().splitlines()[0])
    assert episode["status"] == "ok" and episode["steps"] == 4


def test_steering_api_on_openvla_clamps_discovered_neurons(policy, obs):
    """The steering API addresses the native OpenVLA adapter by its module names: neurons found by
    vocabulary projection to promote one action token raise that token's logit when clamped, far
    more than random neurons of the same count, and leave no hook behind."""
    from embodied_steer.steering import clamp, steer
    from embodied_steer.steering.discovery import random_neurons, search_neurons

    target = policy.bins.token_range[1]
    modules = policy.modules()
    hooks_before = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in modules.items()}

    def target_margin() -> float:
        seen: list[torch.Tensor] = []
        h = modules["llm.lm_head"].register_forward_hook(lambda mod, args, out: seen.append(out[0, -1].detach()))
        try:
            policy.act(obs)
        finally:
            h.remove()
        logits = seen[0]  # first decoding pass: the logits of the first action token
        return float(logits[target] - logits.mean())

    hits = search_neurons(policy, [target], "llm.layers.*.mlp", k=8)
    assert len(hits) == 8 and all(h.module.startswith("llm.layers.") for h in hits)
    cluster: dict[str, list[int]] = {}
    for h in hits:
        cluster.setdefault(h.module, []).append(h.neuron)
    base = target_margin()
    with steer(policy, [clamp(m, n, 20.0) for m, n in cluster.items()]):
        steered = target_margin()
    gains_random = []
    for seed in range(3):
        control = random_neurons(policy, cluster, seed=seed)
        with steer(policy, [clamp(m, n, 20.0) for m, n in control.items()]):
            gains_random.append(target_margin() - base)
    assert steered - base > 0.5, (base, steered)
    assert steered - base > 2 * max(gains_random), (steered - base, gains_random)
    assert {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in modules.items()} == hooks_before
