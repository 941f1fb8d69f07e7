"""The Streamlit review dashboard: `streamlit run dashboard/app.py` from the project root."""
