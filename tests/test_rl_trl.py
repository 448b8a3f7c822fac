"""A real GRPO run with TRL: a tiny random Qwen2 model trained for a few steps on rewards from our env.

Needs the ``rl`` extra (torch, transformers, trl, datasets); skipped without it. Nothing is downloaded:
the tokenizer is trained on the prompts and the model is built from a config.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")
pytest.importorskip("datasets")

from apigen_envs import load_domain  # noqa: E402
from apigen_envs.rl import EnvStepReward, gold_turn, step_prompts, tokenize_sample  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grpo_trl.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("apigen_example_grpo_trl", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def rows():
    return step_prompts("mock", steps="all")


@pytest.fixture(scope="module")
def tokenizer(example, rows):
    return example.build_tiny_tokenizer(example.conversation_texts(rows))


def test_tiny_tokenizer_incremental_masks_match_full_templating(tokenizer, rows):
    domain = load_domain("mock")
    for row in rows:
        target = gold_turn(domain.task(row["task_id"]), row["step"]).to_openai()
        messages = [*row["prompt"], target]
        out = tokenize_sample(messages, tokenizer)
        whole = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
        assert out.input_ids == whole
        masked = [t for t, m in zip(out.input_ids, out.assistant_mask, strict=True) if m]
        # The mask covers the target turn (and the gold calls already in the prompt), ending in <|im_end|>.
        last_start = out.spans[-1][0]
        tail = [t for t, m in zip(out.input_ids[last_start:], out.assistant_mask[last_start:], strict=True) if m]
        assert tail and tokenizer.decode(tail).endswith("<|im_end|>\n")
        assert tokenizer.decode(tail).startswith(target["content"] or "<tool_call>{")
        assert len(masked) >= len(tail)


@pytest.mark.slow
def test_grpo_trains_a_tiny_model_on_env_rewards(example, rows, tokenizer, tmp_path):
    import torch

    torch.set_num_threads(1)
    steps, group = 3, 4
    model = example.build_tiny_model(tokenizer)
    losses = example.sft_warmup(model, tokenizer, rows, "mock", steps=150)
    assert losses[-1] < losses[0] / 4  # the warm-up really fits the gold turns

    reward = EnvStepReward("mock", keep_episodes=True)
    calls: list[tuple[int, list[float]]] = []
    original = reward.__call__

    class Spy:
        __name__ = reward.__name__

        def __call__(self, prompts=None, completions=(), **kwargs):
            out = original(prompts, completions, **kwargs)
            calls.append((len(completions), list(out)))
            return out

    before = [p.detach().clone() for p in model.parameters()]
    trainer = example.build_trainer(
        model=model,
        tokenizer=tokenizer,
        rows=rows,
        reward=Spy(),
        steps=steps,
        generations=group,
        max_completion_length=64,
        output_dir=str(tmp_path),
        use_cpu=True,
    )
    trainer.train()

    assert trainer.state.global_step == steps
    assert [n for n, _ in calls] == [group] * steps
    # Every reward TRL saw is the verifier's value on an env episode we ran.
    assert len(reward.episodes) == steps * group
    assert [episode_reward for _, out in calls for episode_reward in out] == [ep.reward for ep in reward.episodes]
    assert set(reward.rewards) <= {0.0, 1.0}
    assert any(r == 1.0 for r in reward.rewards)  # the warmed-up model emits tool calls the env accepts
    logged = [h for h in trainer.state.log_history if f"rewards/{reward.__name__}/mean" in h]
    assert len(logged) == steps
    for entry, (_, out) in zip(logged, calls, strict=True):
        assert entry[f"rewards/{reward.__name__}/mean"] == pytest.approx(sum(out) / len(out))
    changed = any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    mixed = any(len(set(out)) > 1 for _, out in calls)
    assert changed or not mixed  # a group with mixed rewards produces a gradient step
