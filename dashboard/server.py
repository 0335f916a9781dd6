"""The dashboard's server: Streamlit's own (`st.App`), with the read-only file route added, so
the pages, previews and downloads share one port and one URL. The route serves signed links
only (`flows.links`), with the key the flow signs them with.

`styledrop dashboard` runs `streamlit run dashboard/server.py`; Streamlit finds `app` below and
serves it with its usual flags. `streamlit run dashboard/app.py` still works, without the file
route.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/server.py` imports this file as the module `server`, with
# dashboard/ (not the repository root) on sys.path.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from dashboard.files import files_route  # noqa: E402
from flows.links import link_key  # noqa: E402
from flows.settings import get_settings  # noqa: E402
from flows.storage import is_s3  # noqa: E402


def routes() -> list:
    """The file route for local storage; on S3 the URLs are presigned and nothing is served."""
    settings = get_settings()
    root = settings.storage_root
    if is_s3(root):
        return []
    Path(root).mkdir(parents=True, exist_ok=True)
    return [files_route(root, link_key(settings))]


app = st.App(Path(__file__).parent / "app.py", routes=routes())
