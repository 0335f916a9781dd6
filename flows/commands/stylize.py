"""`styledrop stylize`: stylise one image on this machine, no server involved.

Imports only the engine, the settings and the gallery (never Prefect), so it starts fast and
works anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A user mistake reported as one line, without a traceback."""


def register(parser: argparse.ArgumentParser) -> None:
    import typing

    from engine.advice import WEIGHTS_FILENAME
    from engine.params import BACKBONES, DEVICES, StyleParams
    from flows.settings import get_settings

    s = get_settings()
    # Defaults and choices come from StyleParams, so each exists once (the engine's).
    d = StyleParams()
    optimizers = typing.get_args(typing.get_type_hints(StyleParams)["optimizer"])
    parser.add_argument("content", help="the photo to stylise (any format Pillow reads)")
    parser.add_argument(
        "--style",
        action="append",
        required=True,
        metavar="STYLE",
        help="style image path or gallery name (styles/<name>.*); repeat to blend several",
    )
    parser.add_argument(
        "--style-weights",
        metavar="W1,W2,...",
        help="blend weights, one per --style (normalised), e.g. 0.7,0.3",
    )
    parser.add_argument(
        "--out", metavar="OUT", help="output .png/.jpg/.webp (default: CONTENT_styled.png here)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="long edge of the result in pixels (256 on a CPU, 512 on a GPU)",
    )
    parser.add_argument("--iterations", type=int, help="steps at the final scale (engine default)")
    for flag, field, what in (
        ("--style-strength", "style_weight", "style weight"),
        ("--content-strength", "content_weight", "content weight"),
        ("--tv-strength", "tv_weight", "smoothness weight"),
        ("--style-scale", "style_scale", "style image size relative to the output"),
    ):
        default = getattr(d, field)
        parser.add_argument(flag, type=float, default=default, help=f"{what} ({default})")
    parser.add_argument("--preserve-colors", action="store_true", help="keep the content's colours")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    parser.add_argument("--optimizer", choices=optimizers, default=d.optimizer)
    parser.add_argument(
        "--device", choices=DEVICES, default=s.device, help=f"({s.device})"
    )
    parser.add_argument(
        "--backbone",
        choices=BACKBONES,
        default=s.backbone,
        help="vgg19 needs ImageNet weights; vgg16-hed is the trained offline fallback; random "
        f"is for smoke runs ({s.backbone})",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=s.weights,
        help=f"path to {WEIGHTS_FILENAME} (hub cache)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (there is one only when stderr is a terminal)",
    )


def _resolve_style(value: str, styles_dir: Path) -> Path:
    from engine.images import EXTENSIONS
    from flows.gallery import UnknownStyleError, resolve_style

    try:
        return resolve_style(value, styles_dir)
    except UnknownStyleError as exc:
        if "/" in value or Path(value).suffix.lower() in EXTENSIONS:
            raise CliError(f"style {value}: no such file") from exc
        known = f"; gallery styles in {styles_dir}: {', '.join(exc.available)}"
        raise CliError(
            f"style {value!r} is neither a file nor a gallery style"
            + (known if exc.available else "")
        ) from exc


def _blend(text: str | None, n_styles: int) -> list[float] | None:
    if text is None:
        return None
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CliError(
            f"--style-weights must be numbers separated by commas, got {text!r}"
        ) from exc
    if len(weights) != n_styles:
        raise CliError(f"--style-weights has {len(weights)} values for {n_styles} --style")
    return weights


def _stylize(args: argparse.Namespace) -> Path:
    from engine import StyleParams, load_image, save_image, stylize
    from flows.settings import get_settings

    settings = get_settings()
    content_path = Path(args.content)
    style_paths = [_resolve_style(v, settings.styles_dir) for v in args.style]
    out = Path(args.out) if args.out else Path(f"{content_path.stem}_styled.png")

    content = load_image(content_path, max_pixels=settings.max_pixels)
    if min(content.size) < settings.min_side:
        raise CliError(
            f"{content_path}: {content.width}x{content.height} is too small; the short side "
            f"must be at least {settings.min_side} px"
        )
    styles = [load_image(p, max_pixels=settings.max_pixels) for p in style_paths]
    params = StyleParams(
        size=args.size,
        iterations=args.iterations,
        content_weight=args.content_strength,
        style_weight=args.style_strength,
        tv_weight=args.tv_strength,
        style_scale=args.style_scale,
        style_blend=_blend(args.style_weights, len(styles)),
        preserve_colors=args.preserve_colors,
        seed=args.seed,
        optimizer=args.optimizer,
    )
    params.validate(len(styles))
    from engine.images import format_for

    format_for(out)  # a bad extension should fail before minutes of work, not after

    bar = None
    # A bar only where a person watches it: in a log or a pipe its redraws are hundreds of
    # lines. Elsewhere the summary line below is all there is.
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=1, unit="step", file=sys.stderr, dynamic_ncols=True)

    def progress(p: Any) -> None:
        if bar is None:
            return
        bar.total = p.total_steps
        bar.set_postfix(scale=f"{p.scale + 1}/{p.n_scales}", loss=f"{p.loss:.4g}", refresh=False)
        bar.update(p.step - bar.n)

    try:
        result = stylize(
            content,
            styles,
            params,
            device=args.device,
            backbone=args.backbone,
            weights=args.weights,
            callback=progress,
            cpu_bf16=settings.cpu_bf16,
        )
    finally:
        if bar is not None:
            bar.close()
    metadata = {
        **result.summary(),
        "content": str(content_path),
        "styles": [str(p) for p in style_paths],
        "seed": params.seed,
    }
    save_image(result.image, out, metadata)
    print(
        f"{out}  ({result.image.width}x{result.image.height}, {result.steps} steps in "
        f"{result.seconds:.1f} s, backbone {result.backbone}, {result.device})"
    )
    return out


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One readable line (e.g. the random-backbone fallback), not Python's file:line dump.
    print(f"styledrop: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import logging
    import warnings

    from engine import BackboneError, ImageError, ParamError

    warnings.showwarning = _show_warning
    # The engine both warns and logs its warnings (for the flow's logs); here the warning line
    # is enough, and without a handler Python would print the log record a second time.
    logging.getLogger("engine").addHandler(logging.NullHandler())
    try:
        _stylize(args)
    except (CliError, ImageError, ParamError, BackboneError) as exc:
        print(f"styledrop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("styledrop: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"styledrop: error: {exc}", file=sys.stderr)
        return 1
    return 0
