r"""GRPO with TRL on an apigen-envs domain: rewards come from running the policy's step in the env.

Each prompt is a conversation cut from a task's gold trajectory (:func:`apigen_envs.rl.step_prompts`);
the model writes the next assistant turn (a JSON tool call or text) and
:class:`apigen_envs.rl.EnvStepReward` scores it by playing the episode on in a fresh env: gold actions
before it, the model's turn, the remaining gold actions and a closing message, with the scripted user.
The reward is the verifier's (binary) or its shaped breakdown.

Real model (needs the ``rl`` extra and the weights available locally or from the Hub)::

    python examples/grpo_trl.py --model Qwen/Qwen2.5-0.5B-Instruct --domain retail --split train \
        --steps 50 --generations 8 --max-completion-length 256 --reward shaped

Offline smoke run with a tiny randomly initialised model and a tokenizer built on the spot::

    python examples/grpo_trl.py --tiny --domain mock --steps 3

Install: ``pip install -e ".[rl]"`` (torch, transformers, trl; a CPU torch is enough for ``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from typing import Any

from apigen_envs import load_domain
from apigen_envs.rl import EnvStepReward, gold_turn, step_prompts, tokenize_sample

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>")

# A small Qwen-style template: tool calls are rendered as <tool_call>{json}</tool_call>, which the env's
# text tool-call parser reads back. It is prefix-stable, so apigen_envs.rl.tokenize_sample can split it.
TINY_CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: "
    "{{ tools | map(attribute='function') | map(attribute='name') | join(', ') }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] %}{{ m['content'] }}{% endif %}"
    "{% if m['tool_calls'] %}{% for tc in m['tool_calls'] %}"
    '<tool_call>{"name": "{{ tc["function"]["name"] }}", "arguments": {{ tc["function"]["arguments"] }}}</tool_call>'
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def conversation_texts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every string in the prompts (to train a tiny tokenizer on)."""
    out: list[str] = []
    for row in rows:
        for m in row["prompt"]:
            out.append(str(m.get("content") or ""))
            out.extend(json.dumps(tc["function"]) for tc in m.get("tool_calls") or ())
    return out


def build_tiny_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, with a chat template; nothing is downloaded.

    Args:
        texts: Training strings.
        vocab_size: Target vocabulary size (bytes + merges + special tokens).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.

    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def build_tiny_model(tokenizer: Any, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Any:
    """A randomly initialised tiny Qwen2 causal LM sized for ``tokenizer``.

    Args:
        tokenizer: The tokenizer (sets vocabulary size and special token ids).
        hidden: Hidden size.
        layers: Transformer layers.
        seed: Initialisation seed.

    Returns:
        A ``transformers.Qwen2ForCausalLM``.

    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def sft_warmup(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    domain: str,
    *,
    steps: int = 150,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Teach a (tiny) model the gold next turns by supervised steps, so GRPO starts with mixed rewards.

    A random model never writes a valid tool call, so every group would score all zeros (zero
    advantages, zero gradient). A few supervised steps on the gold turns make sampled completions
    sometimes right and sometimes wrong, which is what GRPO learns from. Sequences are tokenised with
    :func:`apigen_envs.rl.tokenize_sample`, and only the assistant turn's tokens are in the loss.

    Args:
        model: The model (trained in place).
        tokenizer: Its tokenizer (with a chat template).
        rows: Prompt rows from :func:`apigen_envs.rl.step_prompts`.
        domain: The domain name (for the gold turns).
        steps: Optimiser steps (full batch each).
        learning_rate: AdamW learning rate.
        seed: Torch seed.

    Returns:
        The loss at each step.

    """
    import torch

    dom = load_domain(domain)
    seqs = []
    for row in rows:
        target = gold_turn(dom.task(row["task_id"]), int(row["step"])).to_openai()
        tokens = tokenize_sample([*row["prompt"], target], tokenizer)
        labels = [t if m else -100 for t, m in zip(tokens.input_ids, tokens.assistant_mask, strict=True)]
        seqs.append((tokens.input_ids, labels))
    width = max(len(ids) for ids, _ in seqs)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in seqs])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in seqs])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in seqs])
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_trainer(
    *,
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    reward: EnvStepReward,
    steps: int,
    generations: int,
    max_completion_length: int,
    output_dir: str,
    learning_rate: float = 1e-4,
    temperature: float = 1.0,
    use_cpu: bool = False,
    seed: int = 0,
) -> Any:
    """A TRL ``GRPOTrainer`` whose only reward function is the env.

    Args:
        model: A model instance or a model name.
        tokenizer: The tokenizer (None: the model's own).
        rows: Prompt rows from :func:`apigen_envs.rl.step_prompts`.
        reward: The env reward function.
        steps: Optimiser steps.
        generations: Completions per prompt (the GRPO group size G).
        max_completion_length: Tokens per completion.
        output_dir: Where TRL writes (nothing is saved with the defaults here).
        learning_rate: Learning rate.
        temperature: Sampling temperature.
        use_cpu: Force CPU.
        seed: Trainer seed.

    Returns:
        The trainer (call ``.train()``).

    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=generations,
        num_generations=generations,
        max_completion_length=max_completion_length,
        learning_rate=learning_rate,
        temperature=temperature,
        beta=0.0,  # no reference model: half the compute, as in Dr. GRPO / DAPO
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=use_cpu,
        bf16=False,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Hugging Face model name or path (omit with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model and local tokenizer (offline)")
    parser.add_argument("--domain", default="mock", help="domain name: mock, retail, airline, or module:loader")
    parser.add_argument("--split", default=None, help="task split to train on (e.g. train)")
    parser.add_argument("--steps-per-task", choices=("last", "all"), default="all", help="prompts per task")
    parser.add_argument("--reward", choices=("binary", "shaped"), default="binary")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps")
    parser.add_argument("--generations", type=int, default=4, help="GRPO group size")
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--cpu", action="store_true", help="force CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --tiny)")
    parser.add_argument(
        "--warmup-sft", type=int, default=None, help="supervised warm-up steps (default: 150 with --tiny)"
    )
    args = parser.parse_args(argv)
    if not args.tiny and not args.model:
        parser.error("give --model NAME or --tiny")

    threads = args.threads if args.threads is not None else (1 if args.tiny else None)
    if threads:
        import torch

        # A tiny model gains nothing from intra-op threads; on a shared 2-core box they mostly contend.
        torch.set_num_threads(threads)
    rows = step_prompts(args.domain, split=args.split, steps=args.steps_per_task)
    if not rows:
        parser.error(f"no prompts for domain {args.domain!r} split {args.split!r}")
    reward = EnvStepReward(args.domain, reward_mode=args.reward)
    if args.tiny:
        tokenizer = build_tiny_tokenizer(conversation_texts(rows))
        model: Any = build_tiny_model(tokenizer)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model)
    warmup = args.warmup_sft if args.warmup_sft is not None else (150 if args.tiny else 0)
    if warmup:
        losses = sft_warmup(model, tokenizer, rows, args.domain, steps=warmup)
        print(f"warm-up: {warmup} supervised steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            model=model,
            tokenizer=tokenizer,
            rows=rows,
            reward=reward,
            steps=args.steps,
            generations=args.generations,
            max_completion_length=args.max_completion_length,
            output_dir=args.output_dir or tmp,
            learning_rate=args.lr,
            use_cpu=args.cpu or args.tiny,
        )
        trainer.train()
    logged = [h for h in trainer.state.log_history if any(k.startswith("rewards/") for k in h)]
    for h in logged:
        print(json.dumps({k: v for k, v in h.items() if k.startswith(("step", "reward", "loss"))}))
    print(
        f"steps: {trainer.state.global_step}, env rewards scored: {len(reward.rewards)}, "
        f"mean env reward: {sum(reward.rewards) / max(1, len(reward.rewards)):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
