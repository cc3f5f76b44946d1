"""Regenerate the README's performance section from ``benchmarks/results/*.json``.

    python benchmarks/readme_perf.py --print     # the section on stdout
    python benchmarks/readme_perf.py --write     # replace it in README.md, between the markers

``--write`` replaces what lies between ``<!-- perf:begin -->`` and ``<!-- perf:end -->`` in
README.md (the markers stay) and touches nothing else; without both markers, in that order, it
changes nothing and exits 1. Every table comes from a JSON written by ``sonoedge bench``:
``kernels`` (merged: one ratio column per results file, e.g. 1 and 2 threads), ``e2e`` (one row
per model), and the ``formats``, ``scaling`` and ``soak`` reports with their plots. Each table
says on which machine, with which versions, when and by which command it was measured.
Commentary (targets met or not, why) belongs outside the markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- perf:begin -->"
END = "<!-- perf:end -->"
ORDER = ("kernels", "e2e", "formats", "scaling", "soak")


def suite_of(doc: dict[str, Any]) -> str | None:
    """Which suite wrote a results JSON (older kernels / e2e tables carry no ``suite`` key)."""
    if doc.get("suite") in ORDER:
        return str(doc["suite"])
    title = str(doc.get("title", ""))
    if title.startswith("Kernels"):
        return "kernels"
    if title.startswith("End to end"):
        return "e2e"
    return None


def load_results(results: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """{suite: [(path, doc), ...]} of every readable results JSON, by file name."""
    out: dict[str, list[tuple[Path, dict[str, Any]]]] = {k: [] for k in ORDER}
    for path in sorted(results.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"readme_perf: skipping {path.name}: {e}", file=sys.stderr)
            continue
        suite = suite_of(doc) if isinstance(doc, dict) else None
        if suite is None:
            print(
                f"readme_perf: skipping {path.name}: not a sonoedge bench result", file=sys.stderr
            )
            continue
        out[suite].append((path, doc))
    return out


def machine_line(doc: dict[str, Any], path: Path, rel: str) -> str:
    m = doc.get("machine") or {}
    cmd = doc.get("command") or ""
    table = f"{rel}/{path.with_suffix('.md').name}"
    line = (
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('device', 'no GPU')}; "
        f"{m.get('versions', '')}; {m.get('date', '')}. Table: `{table}`."
    )
    return line + (f" Reproduce: `{cmd}`." if cmd else "")


def _label(stems: list[str]) -> list[str]:
    """Distinguishing part of each file stem (e.g. '1thread', '2threads'), or the stem."""
    if len(stems) == 1:
        return [stems[0]]
    n = 0  # length of the common character prefix
    while all(len(s) > n and s[n] == stems[0][n] for s in stems):
        n += 1
    return [s[n:].strip("-_") or s for s in stems]


def cpu_class_of(path: Path, doc: dict[str, Any]) -> str:
    """The CPU class a results file was measured on (``sdk.cpu.cpu_class``). Files written
    before benchmarks recorded it carry none: those are the 2-core Xeon's, an AVX-512 machine
    (``*-cpu-xeon-*``)."""
    m = doc.get("machine") or {}
    if m.get("cpu_class"):
        return str(m["cpu_class"])
    return "avx512" if "xeon" in path.stem else "unknown"


def by_cpu_class(
    items: list[tuple[Path, dict[str, Any]]],
) -> list[tuple[str, list[tuple[Path, dict[str, Any]]]]]:
    """Items grouped by CPU class, AVX-512 first (the older tables), in file order within."""
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for p, doc in items:
        groups.setdefault(cpu_class_of(p, doc), []).append((p, doc))
    return sorted(groups.items(), key=lambda kv: (not kv[0].startswith("avx512"), kv[0]))


def render_kernels(items: list[tuple[Path, dict[str, Any]]], rel: str) -> str:
    """One table per CPU class: the same kernels are not comparable across machines."""
    return "\n".join(render_kernels_one(cls, group, rel) for cls, group in by_cpu_class(items))


def render_kernels_one(cls: str, items: list[tuple[Path, dict[str, Any]]], rel: str) -> str:
    stems = [p.stem for p, _ in items]
    labels = _label(stems)
    keys: list[tuple[str, str, str | None]] = []
    by_file: list[dict[tuple[str, str, str | None], dict[str, Any]]] = []
    for _, doc in items:
        d = {}
        for r in doc.get("rows", []):
            k = (r["name"], r["candidate"], r.get("anchor"))
            d[k] = r
            if k not in keys:
                keys.append(k)
        by_file.append(d)
    head = f"| kernel | ours ({labels[0]}) | anchor | anchor µs | " + " | ".join(
        f"ratio {lb}" for lb in labels
    )
    cpu = (items[0][1].get("machine") or {}).get("cpu", "?")
    lines = [
        f"### Kernels: {cls} CPU ({cpu})",
        "",
        "Ours against the same work done by the usual tools, interleaved in the same run; ratio "
        "= ours / anchor (below 1: faster).",
        "",
        head + " |",
        "|---|---:|---|---:|" + "---:|" * len(labels),
    ]
    for k in keys:
        first = next((d[k] for d in by_file if k in d), None)
        if first is None:
            continue
        ours = f"{first['median_us']:.0f} µs ({k[1]})"
        amed = first.get("anchor_median_us")
        ratios = []
        for d in by_file:
            r = d.get(k)
            ratios.append(f"{r['ratio']:.2f}×" if r and r.get("ratio") is not None else "–")
        amed_s = f"{amed:.0f}" if amed is not None else "–"
        lines.append(f"| {k[0]} | {ours} | {k[2] or '–'} | {amed_s} | " + " | ".join(ratios) + " |")
    lines.append("")
    lines += [machine_line(doc, p, rel) + "  " for p, doc in items]
    return "\n".join(lines).rstrip() + "\n"


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text or "")
    return float(m.group(1)) if m else None


def render_e2e(items: list[tuple[Path, dict[str, Any]]], rel: str) -> str:
    lines = [
        "### End to end",
        "",
        "`Analyzer.run` on uint8 frames (preprocess, model, mask, lesions, pooling) interleaved "
        "with the bare ONNX Runtime session on the same model, same run, the session set up as "
        "the SDK's (`sdk.backends.onnxruntime.session_options`). Files from 2026-12-03 on have a "
        "row per `spin` setting: the default (ONNX Runtime's threads busy-wait within a model "
        "call, sleep between calls) and `spin=False` (never busy-wait; what every earlier row "
        "measured).",
        "",
        "Streaming: `Analyzer.stream` from a source that is always ahead; the default batches "
        "the frames waiting (max_batch 4), the second figure is one frame per model call "
        "(a results file from before batching has one).",
        "",
        "| CPU | model | row | p50 | p99 | streaming | bare ORT p50 | SDK / bare ORT |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    items = [it for _, group in by_cpu_class(items) for it in group]
    for path, doc in items:
        # One README row per end-to-end row of the file (since 2026-12-03 one per ``spin``
        # setting), with the streaming rows that follow it.
        groups: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for r in doc.get("rows", []):
            if r.get("anchor"):
                groups.append((r, []))
            elif "stream" in r.get("name", "") and groups:
                groups[-1][1].append(r)
        model = str(doc.get("title", "")).split(":", 1)[-1].strip()
        for e2e, streams in groups:
            p99 = _num(r"p99 ([\d.]+) ms", e2e.get("note", ""))
            fps = [_num(r"([\d.]+) frames/s", r.get("note", "")) for r in streams]
            amed, ratio = e2e.get("anchor_median_us"), e2e.get("ratio")
            cells = [
                cpu_class_of(path, doc),
                model,
                e2e["name"],
                f"{e2e['median_us'] / 1e3:.2f} ms",
                f"{p99:.2f} ms" if p99 is not None else "–",
                " / ".join(f"{f:.0f}" for f in fps if f is not None) + " frames/s" if fps else "–",
                f"{amed / 1e3:.2f} ms" if amed else "–",
                f"{ratio:.2f}×" if ratio else "–",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [machine_line(doc, p, rel) + "  " for p, doc in items]
    return "\n".join(lines).rstrip() + "\n"


def render_report(path: Path, doc: dict[str, Any], rel: str) -> str:
    """A formats / scaling / soak report: its sections, plots and machine line."""
    try:
        from sdk.bench.formats import section_markdown
    except ImportError:  # run from a checkout without an install: the source tree
        sys.path.insert(0, str(ROOT))
        from sdk.bench.formats import section_markdown

    lines = [f"### {doc.get('title', path.stem)}", ""]
    verdict = (doc.get("summary") or {}).get("verdict")
    if verdict:
        lines += [f"Verdict: **{verdict}**.", ""]
    for s in doc.get("sections", []):
        lines.append(section_markdown(s))
    for fig in doc.get("figures", []):
        lines += [f"![{fig}]({rel}/{fig})", ""]
    lines.append(machine_line(doc, path, rel))
    return "\n".join(lines).rstrip() + "\n"


def render(results: Path, readme_dir: Path) -> str:
    """The whole performance section (without the markers)."""
    try:
        rel = Path(os.path.relpath(results, readme_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        rel = results.as_posix()
    found = load_results(results)
    parts = [
        "<!-- generated by benchmarks/readme_perf.py from "
        f"{rel}/*.json: edit the results, not this section -->",
        "",
    ]
    if found["kernels"]:
        parts.append(render_kernels(found["kernels"], rel))
    if found["e2e"]:
        parts.append(render_e2e(found["e2e"], rel))
    for suite in ("formats", "scaling", "soak"):
        for path, doc in found[suite]:
            parts.append(render_report(path, doc, rel))
    if len(parts) == 2:
        parts.append(
            f"No benchmark results in {rel} yet: run `sonoedge bench SUITE --out {rel}`.\n"
        )
    return "\n".join(parts).rstrip() + "\n"


def replace_between_markers(text: str, section: str) -> str | None:
    """``text`` with what lies between the markers replaced; None without both, in order."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < 0 or j < i:
        return None
    return text[: i + len(BEGIN)] + "\n" + section.rstrip() + "\n" + text[j:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--print", action="store_true", help="print the section to stdout")
    mode.add_argument(
        "--write", action="store_true", help="replace it in the README between the markers"
    )
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    section = render(args.results, args.readme.resolve().parent)
    if args.print:
        sys.stdout.write(section)
        return 0
    try:
        text = args.readme.read_text()
    except OSError as e:
        print(f"readme_perf: cannot read {args.readme}: {e}", file=sys.stderr)
        return 1
    new = replace_between_markers(text, section)
    if new is None:
        print(
            f"readme_perf: {args.readme} has no '{BEGIN}' ... '{END}' markers (in that order); "
            "nothing written. Put them around the performance section first.",
            file=sys.stderr,
        )
        return 1
    if new != text:
        tmp = args.readme.with_name(args.readme.name + ".tmp")
        tmp.write_text(new)
        os.replace(tmp, args.readme)
        print(f"readme_perf: updated {args.readme}", file=sys.stderr)
    else:
        print(f"readme_perf: {args.readme} already up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
