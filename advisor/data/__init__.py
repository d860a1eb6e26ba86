"""Market data: bundle import, providers, the point-in-time store, weekly windows and labels."""
