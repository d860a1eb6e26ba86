"""Backtrader engine that replays stored views through the portfolio code the bot uses."""
