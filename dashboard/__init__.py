"""Streamlit dashboard: thin pages over the advisor, rlhf and backtest packages."""
