"""Baseline agents: oracle (replays gold actions), noop (never acts), and LLM agents."""
