"""The styledrop dashboard: a Streamlit app over the Prefect API and the output storage, plus
the read-only file route that makes previews openable in a browser."""
