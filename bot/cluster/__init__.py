"""What several nodes share beyond the store: locks held across nodes (Redis)."""
