"""Configuration: settings from the environment, the routing table, the phone lines."""
