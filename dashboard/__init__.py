"""Streamlit study dashboard for study leads; reads the run database only."""
