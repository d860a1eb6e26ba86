"""Paper trading: one broker interface (local paper broker, Alpaca paper), the rebalance bot, safety."""
