"""``llmkit report RUN``: rewrite a run's report.md and report.html from what its stages left."""

from __future__ import annotations

from pathlib import Path

ORDER = 72  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="regenerate a run's report.md and report.html (plots inline)",
        description="Rebuild RUN/report.md from every finished stage's own section (tables, plots, samples, "
        "evaluation) and RUN/report.html, the same page in one file with the plots embedded; --open shows it "
        "in a browser.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN", help="run directory (for example runs/cpu-tiny)")
    p.add_argument("--open", action="store_true", help="open report.html in the default browser")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.config import resolve
    from llmkit.errors import ConfigError
    from llmkit.pipeline import write_run_report
    from llmkit.report import load_yaml

    saved = args.run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{saved}: not found; RUN must be a run directory written by `llmkit speedrun`")
    data = load_yaml(saved)
    cfg = resolve(data.get("preset") or "cpu-tiny", base=data)
    path = write_run_report(cfg, args.run_dir)
    html = path.with_suffix(".html")
    print(path)
    print(html)
    if args.open:
        import webbrowser

        webbrowser.open(html.resolve().as_uri())
    return 0
