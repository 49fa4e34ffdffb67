"""Booktabs LaTeX tables that compile alone with plain pdflatex and that a paper can ``\\input``;
pure ASCII (σ as ``$\\sigma$``, − as ``$-$``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
    "{": r"\{", "}": r"\}", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
    # pdflatex's default OT1 text fonts print < > | as other glyphs (¡ ¿ —): set them in math
    "<": "$<$", ">": "$>$", "|": "$|$",
    "×": r"$\times$", "±": r"$\pm$", "−": "$-$", "–": "--", "—": "---", "…": r"\ldots{}", "·": r"$\cdot$",
    "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "→": r"$\rightarrow$", "°": r"$^\circ$",
    "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}", "¶": r"\P{}", "‘": "`", "’": "'", "“": "``", "”": "''",
    "²": "$^2$", "√": r"$\surd$", "∞": r"$\infty$", "Φ": r"$\Phi$", "Σ": r"$\Sigma$", "Δ": r"$\Delta$",
    "Λ": r"$\Lambda$", "Ω": r"$\Omega$", "Γ": r"$\Gamma$", "Θ": r"$\Theta$", "Π": r"$\Pi$", "Ψ": r"$\Psi$",
    **{chr(0x3B1 + i): rf"$\{name}$" for i, name in enumerate(
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi o pi rho varsigma sigma "
        "tau upsilon phi chi psi omega".split())},
    "ο": "o",  # omicron has no LaTeX command: it is the Latin o
}


def latex_escape(text: str) -> str:
    """``text`` as pure-ASCII LaTeX for pdflatex's defaults (no inputenc/fontenc needed): LaTeX's
    special characters escaped, the Unicode we write (σ, ε, ×, −, –, ±, †, ‡, §, ¶, …) spelled as
    LaTeX, other characters by their compatibility decomposition without accents (é → e, ™ → TM)
    and what has none as ``[U+XXXX]``, so that no table fails over a label or a device name."""
    import unicodedata

    out = []
    for ch in text:
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch.isascii():
            out.append(ch)
        else:
            plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(latex_escape(plain) if plain and plain != ch else f"[U+{ord(ch):04X}]")
    return "".join(out)


#: Lines before and after the tabular of every .tex table. Compiled alone (``pdflatex t.tex``),
#: the file is a ``standalone`` document cropped to the table. ``\input{t.tex}`` in the body of
#: a paper that loads booktabs (and nothing else of ours) reads only the tabular: in a document
#: body LaTeX has made ``\documentclass`` ``\@notprerr`` (it is a preamble-only command), so the
#: preamble is skipped, and ``\rstableend`` is undefined there (``\csname`` makes it ``\relax``).
#: A paper that loads the ``standalone`` package gets the whole file, as that package expects.
_LATEX_BEGIN = (
    r"\expandafter\ifx\csname @notprerr\endcsname\documentclass\else",
    r"\def\rstableend{\end{document}}",
    r"\documentclass[varwidth=\maxdimen]{standalone}",
    r"\usepackage{booktabs}",
    r"\begin{document}",
    r"\fi",
)


_LATEX_END = (r"\csname rstableend\endcsname",)


def latex_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str,
    align: str | None = None,
    bold: Iterable[tuple[int, int]] = (),
) -> str:
    """A booktabs table that compiles alone with pdflatex and whose tabular a paper can
    ``\\input`` (see ``_LATEX_BEGIN``); pure ASCII. Cells are escaped; ``bold`` lists
    (row, column) positions to set in bold. The caption is a comment above the tabular."""
    bold = set(bold)
    align = align or "l" * len(header)
    lines = [
        r"% " + latex_escape(caption),
        r"% Alone: pdflatex this file. In a paper (booktabs loaded): \input{this file} inside a table.",
        *_LATEX_BEGIN,
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(rows):
        cells = [latex_escape(str(c)) for c in row]
        cells = [rf"\textbf{{{c}}}" if (i, j) in bold else c for j, c in enumerate(cells)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *_LATEX_END, ""]
    return "\n".join(lines)


def best_in_columns(values: Sequence[Sequence[float]], columns: Iterable[int]) -> set[tuple[int, int]]:
    """Positions of the maximum of each listed column (all ties)."""
    marks = set()
    for j in columns:
        col = [row[j] for row in values]
        best = max(col)
        marks |= {(i, j) for i, v in enumerate(col) if v == best}
    return marks
