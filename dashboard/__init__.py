"""The styledrop dashboard: a Streamlit app over the Prefect API and the output storage, with
the read-only file route that makes previews openable in a browser on the same server."""
