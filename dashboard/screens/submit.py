"""Submit: upload a photo, pick styles (gallery thumbnails or your own), set the options, and
start a run of the stylize deployment; then go to that run's page."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import ui
from dashboard.signin import submitter
from dashboard.uploads import ALLOWED_MIME_TYPES, CheckedImage, UploadRejected, check_upload
from dashboard.views import STRENGTHS
from engine.params import StyleParams
from flows.gallery import Style, list_styles

GRID_COLUMNS = 4
# The form starts at the engine's defaults (StyleParams), not a copy of them.
DEFAULTS = StyleParams()

settings = ui.settings()


def checked(uploaded: Any, what: str, min_side: int = 1) -> CheckedImage | None:
    """Validate one st.file_uploader file; show why it is refused, return None then."""
    try:
        with st.spinner(f"Checking {uploaded.name}…"):
            return check_upload(
                uploaded.name,
                uploaded.getvalue(),
                max_mb=settings.max_upload_mb,
                max_pixels=settings.max_pixels,
                min_side=min_side,
                what=what,
            )
    except UploadRejected as exc:
        st.error(str(exc), icon=":material/block:")
        return None


def content_section() -> CheckedImage | None:
    st.subheader("1. Your photo")
    uploaded = st.file_uploader(
        f"PNG, JPEG or WebP, up to {settings.max_upload_mb} MB",
        type=ALLOWED_MIME_TYPES,
        max_upload_size=settings.max_upload_mb,
        key="content",
    )
    if uploaded is None:
        return None
    image = checked(uploaded, "The photo", min_side=settings.min_side)
    if image is not None:
        st.image(image.data, caption=f"{image.name} · {image.width}×{image.height}", width=240)
    return image


def gallery_section() -> list[str]:
    """Gallery styles ticked by the user, by name."""
    st.subheader("2. Styles")
    styles: list[Style] = (
        ui.guarded(lambda: list_styles(settings.styles_dir), "Could not read the style gallery")
        or []
    )
    if not styles:
        st.info(f"No gallery styles in {settings.styles_dir}; upload your own below.")
        return []
    chosen = []
    # A responsive grid: four across on a desktop, three on a phone (columns would stack into
    # one long list of full-width pictures there).
    grid = st.grid(GRID_COLUMNS, min_column_width=96, gap="xsmall")
    for style in styles:
        with grid.cell():
            st.image(str(style.thumbnail or style.path), width="stretch")
            # The picture says more than the description; a help icon would leave a phone's
            # narrow cell too little room for the name.
            if st.checkbox(style.name.replace("_", " "), key=f"style_{style.name}"):
                chosen.append(style.name)
    return chosen


def own_styles_section() -> list[CheckedImage]:
    uploaded = st.file_uploader(
        "Or upload your own style images",
        type=ALLOWED_MIME_TYPES,
        accept_multiple_files=True,
        max_upload_size=settings.max_upload_mb,
        key="own_styles",
    )
    images = [img for f in uploaded or [] if (img := checked(f, "The style image")) is not None]
    # Refused files keep their error on the page and are simply not used.
    return images


def blend_section(names: list[str]) -> list[float] | None:
    """One weight per style when there are several; None (equal) for one."""
    if len(names) < 2:
        return None
    st.markdown("**Blend** — how much each style counts")
    return [
        st.slider(name, 0.0, 1.0, 1.0, 0.05, key=f"blend_{i}_{name}")
        for i, name in enumerate(names)
    ]


def options_section() -> dict[str, Any]:
    st.subheader("3. Options")
    size = st.number_input(
        "Size of the result (long edge, pixels)",
        min_value=16,
        max_value=4096,
        value=DEFAULTS.size,  # None: empty, the device's default
        step=16,
        placeholder="the device's default",
        key="size",
    )
    strength = st.select_slider(
        "Style strength",
        options=list(STRENGTHS),
        value=next(name for name, w in STRENGTHS.items() if w == DEFAULTS.style_weight),
        key="strength",
    )
    preserve = st.checkbox(
        "Preserve the photo's colours", value=DEFAULTS.preserve_colors, key="preserve_colors"
    )
    options: dict[str, Any] = {
        "style_weight": STRENGTHS[strength],
        "preserve_colors": preserve,
    }
    if size is not None:
        options["size"] = int(size)
    with st.expander("Advanced"):
        iterations = st.number_input(
            "Iterations (0: the engine's default)",
            min_value=0,
            max_value=100_000,
            value=DEFAULTS.iterations or 0,
            key="iterations",
        )
        seed = st.number_input(
            "Random seed", min_value=0, max_value=2**31 - 1, value=DEFAULTS.seed, key="seed"
        )
    if iterations:
        options["iterations"] = int(iterations)
    if seed != DEFAULTS.seed:
        options["seed"] = int(seed)
    return options


def submit(content: CheckedImage, gallery: list[str], own: list[CheckedImage], options: dict):
    store, api = ui.store(), ui.api()
    content_url = ui.guarded(
        lambda: store.save_upload(content.data, content.name, content.ext),
        "Could not store the photo",
    )
    if content_url is None:
        return
    styles = list(gallery)
    for image in own:
        url = ui.guarded(
            lambda image=image: store.save_upload(image.data, image.name, image.ext),
            "Could not store the style image",
        )
        if url is None:
            return
        styles.append(url)
    run = ui.guarded(
        lambda: api.create_run(
            {"content": content_url, "styles": styles, "options": options},
            submitter=submitter(settings),
        ),
        "Could not start the run",
    )
    if run is not None:
        st.switch_page("screens/runs.py", query_params={"run": run.id})


st.title("Stylise a photo")
content = content_section()
gallery = gallery_section()
own = own_styles_section()
names = gallery + [img.name for img in own]
blend = blend_section(names)
options = options_section()
if blend is not None:
    options["style_blend"] = blend

problem = None
if content is None:
    problem = "Upload a photo first."
elif not names:
    problem = "Pick at least one style (or upload one)."
elif blend is not None and sum(blend) <= 0:
    problem = "At least one blend weight must be above zero."
if st.button(
    "Stylise", type="primary", icon=":material/palette:", disabled=problem is not None, key="submit"
):
    submit(content, gallery, own, options)
if problem:
    st.caption(problem)
