"""A printable report (PDF) for one image or a batch: what a reader files or hands on.

Each scored image gets a page: the scan and its Grad-CAM overlay, the probability, the call at the
operating point (name and threshold), the out-of-domain flag, the warnings (the DICOM's intended-use
guards first), the model's name, version and weights sha256, and the disclaimer. A film that is not a chest
X-ray gets no probability and no call ("not assessed"). A batch starts with a summary page in triage order
(:mod:`triage`: in-domain films most probable first, then out of domain, not assessed, failed). Built from the small results a
session keeps (:class:`xraycore.inference.display.DisplayResult`): no file metadata, so no patient identifier can reach the paper.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
from fpdf import FPDF
from PIL import Image

from xraycore.explain import cam as explain
from xraycore.explain.lung_attention import OUTSIDE_SENTENCE
from xraycore.clinical import triage
from xraycore.inference.display import DisplayResult
from xraycore.inference.provenance import ModelProvenance

DISCLAIMER = ("Not for diagnostic use. This report was produced by research software, a decision aid that is not a "
              "medical device. The probability is the model's, not a diagnosis; the radiologist decides.")
TITLE = "Chest X-ray: pneumonia probability"
PAGE_WIDTH_MM = 210  # A4 portrait
PAGE_HEIGHT_MM = 297
_FONT = "report"
_CORE_FONT = "Helvetica"


def _font_file(name: str) -> Path | None:
    """DejaVu Sans (Unicode: dashes, arrows, accents in names) from Matplotlib or Debian, if either has it."""
    spec = importlib.util.find_spec("matplotlib")
    candidates = [Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / name] if spec and spec.origin else []
    candidates.append(Path("/usr/share/fonts/truetype/dejavu") / name)
    return next((path for path in candidates if path.is_file()), None)


class _Report(FPDF):
    """A4 pages with the disclaimer in every footer."""

    def __init__(self) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        regular, bold = _font_file("DejaVuSans.ttf"), _font_file("DejaVuSans-Bold.ttf")
        self.unicode = regular is not None and bold is not None
        if self.unicode:
            self.add_font(_FONT, "", str(regular))
            self.add_font(_FONT, "B", str(bold))
        self.family = _FONT if self.unicode else _CORE_FONT
        self.set_auto_page_break(True, margin=18)
        self.set_title(TITLE)
        self.set_creator("xray workbench")

    def text_of(self, text: str) -> str:
        """Core fonts know Latin-1 only: spell the rest plainly rather than fail."""
        if self.unicode:
            return text
        plain = text.replace("–", "-").replace("—", "-").replace("…", "...").replace("≥", ">=").replace("≤", "<=")
        return plain.encode("latin-1", "replace").decode("latin-1")

    def write_line(self, text: str, size: float = 10, style: str = "", height: float = 5.5,
                   colour: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.set_font(self.family, style, size)
        self.set_text_color(*colour)
        self.multi_cell(0, height, self.text_of(text), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font(self.family, "", 7)
        self.set_text_color(90, 90, 90)
        self.multi_cell(0, 3.5, self.text_of(f"{DISCLAIMER}  Page {self.page_no()}/{{nb}}"), align="C")
        self.set_text_color(0, 0, 0)


def build(results: Sequence[DisplayResult], *, threshold: float | None, operating_point: str | None,
          model: ModelProvenance, alpha: float = 0.4, when: _dt.datetime | None = None) -> bytes:
    """The PDF: one page per scored image, after a summary page when there are several results."""
    pdf = _Report()
    created = (when or _dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
    ordered = sorted(results, key=triage.triage_key)
    if len(ordered) != 1:
        _summary_page(pdf, ordered, threshold, operating_point, model, created)
    for result in ordered:
        if result.ok or len(ordered) == 1:
            _image_page(pdf, result, threshold, operating_point, model, alpha, created)
    return bytes(pdf.output())


def _header(pdf: _Report, created: str) -> None:
    pdf.add_page()
    pdf.write_line(TITLE, size=16, style="B", height=8)
    pdf.write_line(f"NOT FOR DIAGNOSTIC USE · created {created}", size=9, style="B", colour=(170, 0, 0))
    pdf.ln(2)


def _model_lines(pdf: _Report, model: ModelProvenance, threshold: float | None, operating_point: str | None) -> None:
    point = operating_point or "most probable class"
    at = f", threshold {threshold:.3f}" if threshold is not None else ""
    pdf.write_line(f"Operating point: {point}{at}", size=9)
    for line in model.lines():
        pdf.write_line(line, size=9)


def _summary_page(pdf: _Report, results: Sequence[DisplayResult], threshold: float | None,
                  operating_point: str | None, model: ModelProvenance, created: str) -> None:
    _header(pdf, created)
    scored = sum(result.ok for result in results)
    pdf.write_line(f"{len(results)} image(s): {scored} scored, {len(results) - scored} failed. Most probable first; "
                   "then out of the model's domain (probability not reliable), not assessed (not a chest X-ray) "
                   "and failed files.", size=10)
    _model_lines(pdf, model, threshold, operating_point)
    pdf.ln(3)
    pdf.set_font(pdf.family, "", 8)
    with pdf.table(col_widths=(70, 22, 28, 22, 48), text_align=("LEFT", "RIGHT", "LEFT", "LEFT", "LEFT"),
                   first_row_as_headings=True) as table:
        table.row(["file", "probability", "call", "flag", "note"])
        for result in results:
            score = triage.triage_score(result)
            note = result.error or "; ".join([*result.guards, *result.warnings])
            probability = "" if score is None else f"{score:.1%}" + (" (unreliable)" if result.out_of_domain else "")
            table.row([pdf.text_of(result.name), probability, pdf.text_of(triage.call_text(result, threshold)),
                       triage.flag(result),
                       pdf.text_of(note[:160] + ("…" if len(note) > 160 and pdf.unicode else ""))])


def _image_page(pdf: _Report, result: DisplayResult, threshold: float | None, operating_point: str | None,
                model: ModelProvenance, alpha: float, created: str) -> None:
    _header(pdf, created)
    pdf.write_line(result.name, size=12, style="B", height=6)
    if not result.ok:
        pdf.write_line(f"Not scored: {result.error}", size=10, colour=(170, 0, 0))
        _model_lines(pdf, model, threshold, operating_point)
        return
    for guard in result.guards:  # outside the model's intended population: before the answer
        pdf.write_line(f"Warning: {guard}", size=10, style="B", colour=(170, 90, 0))
    if result.not_assessed:  # not a chest X-ray: no probability, no call
        pdf.write_line(f"Call: {triage.not_assessed_text(result.not_assessed)}", size=12, style="B", height=7)
        for warning in result.warnings:
            pdf.write_line(f"Warning: {warning}", size=9, colour=(170, 90, 0))
        _model_lines(pdf, model, threshold, operating_point)
        return
    call = result.call(threshold)
    if result.positive_class is not None and result.positive_probability is not None:
        pdf.write_line(f"P({result.positive_class}) = {result.positive_probability:.1%}", size=14, style="B", height=7)
    else:
        pdf.write_line("  ".join(f"P({name}) = {p:.1%}" for name, p in result.probabilities.items()), size=12,
                       style="B", height=7)
    pdf.write_line(f"Call: {call}", size=12, style="B", height=7,
                   colour=(170, 0, 0) if call == result.positive_class else (0, 110, 0))
    ood = {True: "yes: unlike the images the model was trained on, treat the answer with caution",
           False: "no", None: "not assessed (the model has no out-of-domain detector)"}[result.out_of_domain]
    pdf.write_line(f"Out of the model's domain: {ood}", size=10)
    _model_lines(pdf, model, threshold, operating_point)
    pdf.ln(2)
    _pictures(pdf, result, alpha)
    attention = result.lung_attention  # the heat map's share on the lungs, as Diagnose says it
    for sentence in attention.sentences if attention else []:
        outside = sentence == OUTSIDE_SENTENCE
        pdf.write_line(sentence, size=9, style="B" if outside else "", colour=(170, 90, 0) if outside else (0, 0, 0))
    for warning in result.warnings:
        pdf.write_line(f"Warning: {warning}", size=9, colour=(170, 90, 0))


def _pictures(pdf: _Report, result: DisplayResult, alpha: float) -> None:
    """The scan and its overlay side by side, scaled to fit half the page width each."""
    if result.image is None:
        return
    pictures = [("scan", Image.fromarray(result.image))]
    if result.heatmap is not None:
        blended = explain.overlay(result.image / 255.0, result.heatmap.astype(np.float32), alpha=alpha)
        pictures.append(("Grad-CAM overlay (where the model looked)", Image.fromarray(blended)))
    width = (PAGE_WIDTH_MM - pdf.l_margin - pdf.r_margin - 6) / 2
    height_of = [width * picture.height / picture.width for _, picture in pictures]
    height = min(max(height_of), 110.0)
    if pdf.get_y() + height + 8 > PAGE_HEIGHT_MM - 20:
        pdf.add_page()
    top = pdf.get_y()
    for index, (caption, picture) in enumerate(pictures):
        scale = min(width / picture.width, height / picture.height)
        x = pdf.l_margin + index * (width + 6)
        pdf.image(picture, x=x, y=top, w=picture.width * scale, h=picture.height * scale)
        pdf.set_xy(x, top + height + 1)
        pdf.set_font(pdf.family, "", 8)
        pdf.cell(width, 4, pdf.text_of(caption))
    pdf.set_xy(pdf.l_margin, top + height + 7)
