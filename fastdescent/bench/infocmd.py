"""``fastdescent info``: what is available here and why (``fastdescent.info()``, pretty or JSON)."""

from __future__ import annotations

import json

__all__ = ["run_info", "render_text"]


def _details(entry):
    skip = {"available", "reason"}
    parts = []
    for k, v in entry.items():
        if k in skip or v is None:
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v))
        parts.append(f"{k}: {v}")
    return parts


def render_text(info, versions):
    """Plain-text rendering (used when rich is not installed)."""
    lines = [f"fastdescent {info['version']}",
             f"default backend: {info['default']} (auto -> {info['auto']})", "backends:"]
    for name, e in info["backends"].items():
        if e["available"]:
            lines.append(f"  {name:6s} available")
            lines += [f"         {d}" for d in _details(e)]
        else:
            lines.append(f"  {name:6s} NOT available: {e['reason']}")
    cpu = info.get("cpu", {})
    lines += [f"cpu: {cpu.get('model')} ({cpu.get('machine')}), {info.get('cores')} logical cores",
              f"cpu features: {', '.join(cpu.get('features') or []) or '-'}",
              f"python {info.get('python')}, numpy {info.get('numpy')}",
              "other packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items())]
    return "\n".join(lines)


def run_info(args):
    import fastdescent as fd

    from .machine import versions

    info = fd.info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    vers = {k: v for k, v in versions().items() if k != "numpy"}
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(render_text(info, vers))
        return 0
    con = Console()
    con.print(f"[bold]fastdescent {info['version']}[/]   default backend: [cyan]{info['default']}[/]"
              f" (auto → [cyan]{info['auto']}[/])", highlight=False)
    if info.get("default_error"):
        con.print(f"[red]FASTDESCENT_BACKEND is invalid:[/] {info['default_error']}", highlight=False)
    tab = Table(title="backends", title_justify="left", show_lines=True)
    tab.add_column("name", style="bold")
    tab.add_column("available")
    tab.add_column("details / why not")
    for name, e in info["backends"].items():
        if e["available"]:
            tab.add_row(name, "[green]yes[/]", "\n".join(_details(e)) or "-")
        else:
            tab.add_row(name, "[red]no[/]", e["reason"] or "?")
    con.print(tab)
    cpu = info.get("cpu", {})
    con.print(f"cpu: {cpu.get('model')} ({cpu.get('machine')}), {info.get('cores')} logical cores; "
              f"features: {', '.join(cpu.get('features') or []) or '-'}", highlight=False)
    con.print(f"python {info.get('python')}, numpy {info.get('numpy')}; "
              + ", ".join(f"{k} {v or 'not installed'}" for k, v in vers.items()), highlight=False)
    return 0
