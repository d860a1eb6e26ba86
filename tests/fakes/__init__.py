"""Local stand-ins for external services, so tests never reach the network."""
