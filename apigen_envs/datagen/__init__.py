"""APIGen-MT data generation: phase 1 (blueprints) and phase 2 (trajectories)."""
