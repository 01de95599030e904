"""`dp show MODULE [FILE] [-o OUT]`: a module drawn as a box diagram, the way a lecture draws it.

The graph comes from diagram.py; grandalf lays it out in layers (Sugiyama) and matplotlib draws
it as SVG or PNG. A module that does not check is drawn up to the step where its types disagree,
that arrow red and dashed, and the error is then said as `dp check` says it (exit code 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
from dp.dsl import typed as T
from dp.dsl.errors import DpError, DpErrors, suggest
from dp.dsl.loader import load_programs
from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as CurvePath
from matplotlib.textpath import TextToPath

from .diagram import Diagram, Node, build, build_failed

# --- layout and drawing ------------------------------------------------------------------------
_FONT = {  # kind -> (size, weight, style, colour) of its first line and of the others
    "call": ((11, "bold", "normal", "#16324f"), (9.5, "normal", "normal", "#16324f")),
    "op": ((10.5, "bold", "normal", "#5c4400"), (8.5, "normal", "italic", "#5c4400")),
    "param": ((9.5, "normal", "normal", "#2d4d1e"), (8.5, "normal", "normal", "#2d4d1e")),
    "input": ((10.5, "bold", "normal", "#222222"), (9, "normal", "normal", "#222222")),
    "output": ((10.5, "bold", "normal", "#222222"), (9, "normal", "normal", "#222222")),
    "value": ((9.5, "normal", "italic", "#6a3d9a"), (9.5, "normal", "italic", "#6a3d9a")),
    "mismatch": ((10, "bold", "normal", "#b00020"), (9, "normal", "normal", "#b00020")),
    "title": ((13, "bold", "normal", "#111111"), (10, "normal", "italic", "#333333")),
    "footer": ((10.5, "bold", "normal", "#111111"), (8.5, "normal", "italic", "#555555")),
}
_BOX = {  # kind -> (fill, edge colour, line width, rounding); values have no box
    "call": ("#dce9f7", "#2f5d8a", 1.4, 7),
    "op": ("#fff2c7", "#b38f00", 1.0, 9),
    "param": ("#e3f1da", "#548235", 1.0, 4),
    "input": ("#ffffff", "#333333", 1.6, 12),
    "output": ("#ffffff", "#333333", 1.6, 12),
    "mismatch": ("#fdecea", "#b00020", 1.4, 4),
}
_PAD = {"call": (12, 8), "op": (9, 4), "param": (8, 5), "input": (12, 6), "output": (12, 6),
        "value": (3, 1), "title": (0, 4), "footer": (0, 4), "mismatch": (8, 4)}
_FRAME_FILL, _EDGE, _MARKED = "#f7f7f7", "#555555", "#b00020"
_LINE = 1.35  # line height, in font sizes


def _fonts(node: Node) -> list[tuple[FontProperties, str]]:
    """The font and colour of each line of a node."""
    first, rest = _FONT[node.kind]
    return [(FontProperties(size=size, weight=weight, style=style), colour)
            for size, weight, style, colour in [first] + [rest] * (len(node.lines) - 1)]


def _measure(node: Node) -> tuple[float, float]:
    """Width and height in points of a node's text and padding."""
    t2p = TextToPath()
    fonts = [prop for prop, _ in _fonts(node)]
    width = max(t2p.get_text_width_height_descent(line, prop, ismath=False)[0]
                for line, prop in zip(node.lines, fonts))
    padx, pady = _PAD[node.kind]
    return width + 2 * padx, sum(p.get_size_in_points() * _LINE for p in fonts) + 2 * pady


@dataclass
class _View:
    w: float
    h: float
    xy: tuple = (0.0, 0.0)


class _Sugiyama(SugiyamaLayout):
    def _rank_optimize(self):
        """Sources (inputs, parameters) move down to just above their first use, as grandalf
        moves any node; a node with inputs stays, or its input edges would grow instead."""
        for layer in reversed(self.layers):
            for v in list(layer):
                rank = self.grx[v].rank
                for x in v.N(-1):
                    if not x.e_in() and all(self.grx[y].rank >= rank for y in x.N(+1)):
                        self.layers[self.grx[x].rank].remove(x)
                        self.grx[x].rank = rank - 1
                        self.layers[rank - 1].append(x)


def layout(d: Diagram) -> tuple[list[tuple[float, float, float, float]], dict]:
    """Boxes (centre x, centre y, w, h; y grows down), and each edge's points (x, y, half the
    height of the layer it is in) through the layers; connected parts side by side."""
    vertices = [Vertex(i) for i in range(len(d.nodes))]
    for v, node in zip(vertices, d.nodes):
        v.view = _View(*_measure(node))
    graph = Graph(vertices, [Edge(vertices[a], vertices[b]) for a, b in d.edges])
    x0, paths = 0.0, {}
    for part in graph.C:
        sug = _Sugiyama(part)
        sug.xspace, sug.yspace = 22, 26
        sug.dw, sug.dh = 8, 12  # the places that long edges pass through
        sug.init_all(optimize=True)
        sug.draw(6)
        views = [v.view for layer in sug.layers for v in layer]
        shift = x0 - min(v.xy[0] - v.w / 2 for v in views)
        band = [max(v.view.h for v in layer) / 2 for layer in sug.layers]
        for v in (v for layer in sug.layers for v in layer):
            v.view.xy = (v.view.xy[0] + shift, v.view.xy[1])
        for e in part.sE:
            ctrl = sug.ctrls.get(e, {0: e.v[0], 1: e.v[1]})
            chain = [ctrl[r] for r in sorted(ctrl)]
            paths[(e.v[0].data, e.v[1].data)] = [(*v.view.xy, band[sug.grx[v].rank])
                                                 for v in chain]
        x0 = max(v.xy[0] + v.w / 2 for v in views) + 3 * sug.xspace
    return [(*v.view.xy, v.view.w, v.view.h) for v in vertices], paths


def _spread(d: Diagram, boxes, paths) -> dict:
    """Where each edge leaves and enters its boxes: several arrows at one box side by side,
    in the order of where they come from, so that they neither meet nor cross there."""
    ends: dict = {}
    for side, mine, other in (("out", 0, 1), ("in", 1, -2)):
        by_node: dict = {}
        for key, pts in paths.items():
            by_node.setdefault(key[mine], []).append((pts[other][0], key))
        for n, items in by_node.items():
            x, _, w, _ = boxes[n]
            if d.nodes[n].kind == "value" or len(items) == 1:
                for _, key in items:
                    ends[(side, key)] = x
                continue
            step = min(18.0, 0.7 * w / len(items))
            for i, (_, key) in enumerate(sorted(items)):
                ends[(side, key)] = x + (i - (len(items) - 1) / 2) * step
    return ends


def _edge_path(d: Diagram, key, pts, boxes, ends):
    """Straight through each layer, an S-curve across each gap between layers: the arrow runs
    only through the gaps and the places the layout kept free for it."""
    a, b = key
    _, ya, _, ha = boxes[a]
    _, yb, _, hb = boxes[b]
    start = (ends[("out", key)], ya if d.nodes[a].kind == "value" else ya + ha / 2)
    end = (ends[("in", key)], yb if d.nodes[b].kind == "value" else yb - hb / 2)
    xs = [start[0]] + [p[0] for p in pts[1:-1]] + [end[0]]
    verts, codes = [start], [CurvePath.MOVETO]
    for i, ((_, y0, band0), (_, y1, band1)) in enumerate(zip(pts, pts[1:])):
        low, high = y0 + band0, y1 - band1
        if i == len(pts) - 2:
            high = min(high, end[1] - 10)  # a straight last bit for the arrow head
        mid = (low + high) / 2
        verts += [(xs[i], low), (xs[i], mid), (xs[i + 1], mid), (xs[i + 1], high)]
        codes += [CurvePath.LINETO, CurvePath.CURVE4, CurvePath.CURVE4, CurvePath.CURVE4]
    verts.append(end)
    codes.append(CurvePath.LINETO)
    return CurvePath(verts, codes)


def draw(d: Diagram, out: str) -> None:
    """Write the diagram to `out` (.svg keeps its text as text; .png at 144 dpi)."""
    boxes, paths = layout(d)
    title = Node("title", (d.title,) + ((d.subtitle,) if d.subtitle else ()))
    footer = Node("footer", (d.footer, "types are for one example; dp adds the batch axis"))
    (tw, th), (fw, fh) = _measure(title), _measure(footer)
    bends = [x for pts in paths.values() for x, _, _ in pts]
    left = min([x - w / 2 for x, _, w, _ in boxes] + [x - 10 for x in bends])
    right = max([x + w / 2 for x, _, w, _ in boxes] + [x + 10 for x in bends])
    top = min(y - h / 2 for _, y, _, h in boxes)
    bottom = max(y + h / 2 for _, y, _, h in boxes)
    inner = max(right - left, tw, fw) + 40
    margin = 14
    dx = margin + (inner - (right - left)) / 2 - left
    dy = margin + th + 14 - top
    width, height = inner + 2 * margin, margin + th + 14 + (bottom - top) + 18 + fh + margin

    fig = Figure(figsize=(width / 72, height / 72))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((margin / 2, margin / 2), width - margin, height - margin,
                                boxstyle="round,pad=0,rounding_size=10", fc=_FRAME_FILL,
                                ec="#888888", lw=1.2))
    _text(ax, title, width / 2, margin / 2 + th / 2, _FRAME_FILL)
    _text(ax, footer, width / 2, height - margin / 2 - fh / 2, _FRAME_FILL)
    boxes = [(x + dx, y + dy, w, h) for x, y, w, h in boxes]
    paths = {k: [(x + dx, y + dy, band) for x, y, band in pts] for k, pts in paths.items()}
    ends = _spread(d, boxes, paths)
    for key, pts in paths.items():
        head = d.nodes[key[1]].kind != "value"
        marked = key in d.marked
        ax.add_patch(FancyArrowPatch(
            path=_edge_path(d, key, pts, boxes, ends), color=_MARKED if marked else _EDGE,
            lw=1.6 if marked else 1.1, linestyle="--" if marked else "-",
            arrowstyle="-|>,head_length=7,head_width=3.2" if head else "-", mutation_scale=1,
            zorder=1, gid="mismatch" if marked else None))
    for node, (x, y, w, h) in zip(d.nodes, boxes):
        if node.kind in _BOX:
            fill, edge, lw, r = _BOX[node.kind]
            ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, fc=fill, ec=edge, lw=lw,
                                        boxstyle=f"round,pad=0,rounding_size={r}", zorder=2))
        _text(ax, node, x, y, None if node.kind in _BOX else _FRAME_FILL)
    kind = Path(out).suffix.lower()[1:]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        fig.savefig(out, format=kind, dpi=144, metadata={"Date": None} if kind == "svg" else None)


def _text(ax, node: Node, x: float, y: float, background: str | None) -> None:
    """The node's lines centred at (x, y), each its own text (so the SVG can be searched)."""
    fonts = _fonts(node)
    cy = y - sum(prop.get_size_in_points() * _LINE for prop, _ in fonts) / 2
    box = dict(boxstyle="square,pad=0.15", fc=background, ec="none") if background else None
    for line, (prop, colour) in zip(node.lines, fonts):
        step = prop.get_size_in_points() * _LINE
        ax.text(x, cy + step / 2, line, fontproperties=prop, color=colour, ha="center",
                va="center", parse_math=False, bbox=box, zorder=3)
        cy += step


# --- the command --------------------------------------------------------------------------------
def find_module(tprog: T.TProgram, name: str, file: str | None) -> T.TDef:
    if name in tprog.defs:
        return tprog.defs[name]
    if name in tprog.abstracts:
        impls = sorted(n for n, dd in tprog.defs.items() if dd.implements == name)
        raise DpError("type", f"{name} is abstract ({name}: {tprog.abstracts[name]}): it has "
                      "no body to draw", None,
                      (f"draw a module that implements it: {', '.join(impls)}",) if impls else ())
    where = f"{file} or the standard library" if file else "the standard library"
    if name in tprog.signatures:
        raise DpError("name", f"{name} has a signature but no definition in {where}")
    hint = suggest(name, set(tprog.defs) | set(tprog.abstracts)) or (
        f"`dp check {file}` lists its modules" if file else
        "give the program that defines it: dp show MODULE FILE",)
    raise DpError("name", f"unknown module '{name}' in {where}", None, hint)


def show_cmd(args) -> int:
    out = args.output or f"{args.module}.svg"
    if Path(out).suffix.lower() not in (".svg", ".png"):
        raise DpError("usage", f"dp show writes .svg or .png files, not '{out}'", None,
                      ("e.g. -o diagram.svg or -o diagram.png",))
    try:
        tprog, _ = load_programs([args.file] if args.file else [])
    except DpError as err:
        partial = _partial(err, args.module)
        if partial is None:
            raise
        _write(build_failed(partial), out)
        print(f"wrote {out}: {args.module} up to where its types disagree (the red arrow)")
        raise  # said as `dp check` says it
    diagram = build(tprog, find_module(tprog, args.module, args.file))
    _write(diagram, out)
    total = (f"{diagram.total:,} parameters" if diagram.total is not None
             else "parameter counts need sizes")
    print(f"wrote {out}: {diagram.boxes} box{'es' if diagram.boxes != 1 else ''}, {total}")
    return 0


def _write(diagram: Diagram, out: str) -> None:
    try:
        draw(diagram, out)
    except OSError as err:
        raise DpError("file", f"cannot write {out}: {err.strerror or err}") from None


def _partial(err: DpError, module: str):
    """The checker's Partial of `module`, when a shape error stopped it at a known step."""
    for e in err.errors if isinstance(err, DpErrors) else [err]:
        partial = getattr(e, "partial", None)
        if partial is not None and partial.tdef.name == module:
            return partial
    return None

