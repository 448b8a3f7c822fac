"""User simulators: deterministic scripted users (tests) and LLM-driven users."""
