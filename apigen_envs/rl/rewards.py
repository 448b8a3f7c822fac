"""Training rewards of episodes: the verifier's binary reward, or the shaped breakdown score.

``"binary"`` (default) is the verifier's 1.0/0.0. ``"shaped"`` is :attr:`apigen_envs.verify.RewardInfo.shaped`,
a dense score in [0, 1] (fraction of gold rows matched, penalising extra changed rows, averaged with the
fraction of required outputs found). Shaping is a training signal only: pass^k and success always use the
binary reward. An episode without a reward breakdown (an infrastructure failure, or an invalid action) has
reward 0 in both modes.
"""

from __future__ import annotations

from typing import Literal

from apigen_envs.episode import Episode

RewardMode = Literal["binary", "shaped"]
"""Which reward a trainer sees: the verifier's binary reward or the shaped breakdown score."""

REWARD_MODES: tuple[str, ...] = ("binary", "shaped")


def check_mode(reward_mode: str) -> None:
    """Raise ``ValueError`` unless ``reward_mode`` is one of :data:`REWARD_MODES`."""
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")


def episode_reward(episode: Episode, reward_mode: RewardMode = "binary") -> float:
    """The training reward of an episode.

    Args:
        episode: A finished episode.
        reward_mode: ``"binary"``: the verifier's reward. ``"shaped"``: ``RewardInfo.shaped``, a dense
            score in [0, 1] meant for shaping only.

    Returns:
        The reward; 0.0 for episodes that could not be scored (infrastructure failures).

    Raises:
        ValueError: On an unknown reward mode.

    """
    check_mode(reward_mode)
    if reward_mode == "binary" or episode.reward_info is None:
        return float(episode.reward)
    return float(episode.reward_info.shaped)
