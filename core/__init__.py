"""Trading engine core: plain Python, no Streamlit import anywhere below this package."""
