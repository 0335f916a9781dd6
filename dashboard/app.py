"""Entry point of the dashboard: `streamlit run dashboard/app.py` (or `styledrop dashboard`).

Three pages: Runs (also a run's own page with `?run=<id>`), Submit and Results, behind the
sign-in when it is configured (dashboard/signin.py). The banner about the random backbone sits
above every page because it changes how to read every picture.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repository root; an
# installed styledrop does not need this, a checkout does.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402
from dashboard.signin import require_sign_in, signed_in_bar  # noqa: E402
from dashboard.ui import backbone_banner  # noqa: E402

# Not "pages/": Streamlit treats a pages/ folder beside the entry script as the old
# multipage layout, and a direct visit to /results would then run that file without this one.
SCREENS = Path(__file__).parent / "screens"

# "wide": the runs table and a run's photo, style and result side by side need the room; on
# a phone the columns stack anyway.
st.set_page_config(page_title="styledrop", page_icon=":material/palette:", layout="wide")
# With sign-in configured nothing below runs for a visitor who may not see it.
user = require_sign_in(ui.settings())

page = st.navigation(
    [
        st.Page(SCREENS / "runs.py", title="Runs", icon=":material/list:", default=True),
        st.Page(SCREENS / "submit.py", title="Submit", icon=":material/upload:", url_path="submit"),
        st.Page(
            SCREENS / "results.py",
            title="Results",
            icon=":material/photo_library:",
            url_path="results",
        ),
    ],
    position="top",
)
if user:
    signed_in_bar(user)
backbone_banner()
page.run()
