"""The results page: one self-contained ``index.html`` (styles and script inline; pictures and plots as files beside
it), which opens from disk in any browser with no server and no network.

Every text that comes from a run, a dataset or a file name (captions, references, option values, paths) goes through
:func:`html.escape` before it reaches the page, and the script only ever sets text (``textContent``), never markup, so
a caption ``</table><script>`` or a file named ``<img src=x onerror=alert(1)>.png`` shows as what it is. The gallery
is a plain ``<table>``: the script sorts its rows by a score column (lowest first on the first click, for error
analysis), hides the rows whose captions and references lack the words typed in the filter, and, for an attention
model, darkens the picture where the model did not look when a word of its caption is clicked.
"""
import html
import json
import math

from captionkit.report.gallery import difference
from captionkit.report.scores import PICTURE_SCORES

__all__ = ["GENERATOR", "render_page"]

GENERATOR = "captionkit report"  # the page's <meta name="generator">, by which a folder is known as a report's

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; }
table.facts td { padding: 1px 12px 1px 0; vertical-align: top; } table.facts td:first-child { color: #666; }
.plots img { max-width: min(100%, 760px); border: 1px solid #ddd; margin: 6px 6px 0 0; }
#gallery th, #gallery td { border-bottom: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; }
#gallery th { position: sticky; top: 0; background: #f4f4f4; white-space: nowrap; }
#gallery td.score { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
#gallery th button { font: inherit; font-weight: bold; border: 0; background: none; cursor: pointer; padding: 0; }
#gallery th[aria-sort=ascending] button::after { content: " \\2191"; }
#gallery th[aria-sort=descending] button::after { content: " \\2193"; }
.frame { position: relative; width: 128px; }
.frame img, .frame canvas { width: 128px; display: block; image-rendering: pixelated; }
.frame canvas { position: absolute; left: 0; top: 0; }
.name { font-size: 12px; color: #555; max-width: 160px; overflow-wrap: anywhere; }
.note { font-size: 12px; color: #a33; max-width: 160px; overflow-wrap: anywhere; }
ol.refs { margin: 0; padding-left: 1.3em; color: #444; }
.word { cursor: pointer; border-radius: 3px; } .word:hover { background: #fde9a8; } .word.on { background: #f7c948; }
.controls { margin: 1em 0; } .controls input { font: inherit; padding: 2px 6px; }
"""

# The page's one script: sorting, the word filter and the attention overlays. It reads the rows' data-* attributes
# and writes only text and canvas pixels.
_SCRIPT = """
"use strict";
(function () {
  const table = document.getElementById("gallery");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const filter = document.getElementById("filter");
  const shown = document.getElementById("shown");
  let sorted = {column: -1, ascending: true};

  function value(row, column) {
    const text = row.cells[column].dataset.value;
    return text === undefined || text === "" ? null : Number(text);
  }
  function sortBy(column, header) {
    const ascending = sorted.column === column ? !sorted.ascending : true;
    sorted = {column: column, ascending: ascending};
    const order = rows.slice().sort(function (a, b) {
      const x = value(a, column), y = value(b, column);
      if (x === null || y === null) {
        return (x === null) - (y === null) || a.dataset.order - b.dataset.order;
      }
      return (ascending ? x - y : y - x) || a.dataset.order - b.dataset.order;
    });
    body.append.apply(body, order);
    table.querySelectorAll("th[aria-sort]").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  table.querySelectorAll("th button[data-column]").forEach(function (button) {
    button.addEventListener("click", function () { sortBy(Number(button.dataset.column), button.parentElement); });
  });

  function applyFilter() {
    const wanted = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let count = 0;
    rows.forEach(function (row) {
      const words = row.dataset.words.split(" ");
      const match = wanted.every(function (word) { return words.indexOf(word) >= 0; });
      row.hidden = !match;
      count += match;
    });
    shown.textContent = count + " of " + rows.length + " pictures";
  }
  filter.addEventListener("input", applyFilter);
  applyFilter();

  function showAttention(word) {
    const row = word.closest("tr");
    const canvas = row.querySelector("canvas");
    const picture = row.querySelector("img");
    const wasOn = word.classList.contains("on");
    row.querySelectorAll(".word.on").forEach(function (other) { other.classList.remove("on"); });
    if (wasOn || !canvas || !picture) {
      if (canvas) { canvas.hidden = true; }
      return;
    }
    word.classList.add("on");
    const map = JSON.parse(word.closest("td").dataset.attention);
    const weights = map.weights[Number(word.dataset.step)];
    const rowsOf = map.grid[0], columns = map.grid[1];
    const top = Math.max.apply(null, weights) || 1;
    const shade = document.createElement("canvas");
    shade.width = columns;
    shade.height = rowsOf;
    const cells = shade.getContext("2d").createImageData(columns, rowsOf);
    weights.forEach(function (weight, k) {
      cells.data[4 * k + 3] = Math.round(255 * 0.75 * (1 - weight / top));  // as captionkit.plotting's overlay
    });
    shade.getContext("2d").putImageData(cells, 0, 0);
    canvas.width = picture.naturalWidth;
    canvas.height = picture.naturalHeight;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.drawImage(picture, 0, 0, canvas.width, canvas.height);
    context.drawImage(shade, 0, 0, canvas.width, canvas.height);
    canvas.hidden = false;
    canvas.dataset.word = word.textContent;
  }
  body.addEventListener("click", function (event) {
    const word = event.target.closest(".word");
    if (word) { showAttention(word); }
  });
})();
"""


def _text(value):
    return html.escape(str(value), quote=True)


def _score_cell(value):
    if value is None or not math.isfinite(value):
        return '<td class="score" data-value="">-</td>'
    return f'<td class="score" data-value="{value!r}">{value:.3f}</td>'


def _attention_map(caption):
    """The data-attention attribute's JSON (grid and one row of weights per word), or None when the caption has no
    weights or its regions are not a square grid (they could not be placed on the picture)."""
    if caption.attention is None or not caption.words:
        return None
    regions = caption.attention.shape[1]
    side = math.isqrt(regions)
    if side * side != regions:
        return None
    return json.dumps({"grid": [side, side], "weights": [[round(float(w), 4) for w in row]
                                                         for row in caption.attention]})


def _caption_cell(caption):
    if caption.text is None:
        return f'<td class="caption"><span class="note">{_text(caption.error or "no caption")}</span></td>'
    attention = _attention_map(caption)
    if attention is None:
        return f'<td class="caption">{_text(caption.text) or "<i>(empty)</i>"}</td>'
    words = " ".join(f'<span class="word" data-step="{k}">{_text(word)}</span>' for k, word in enumerate(caption.words))
    return f'<td class="caption" data-attention="{_text(attention)}">{words}</td>'


def _picture_cell(picture):
    file = picture.file
    parts = []
    if file is not None and file.src is not None:
        parts.append(f'<div class="frame"><img src="{_text(file.src)}" alt="{_text(picture.name)}">'
                     '<canvas hidden></canvas></div>')
    name = _text(picture.name)
    if file is not None and file.link is not None:
        name = f'<a href="{_text(file.link)}">{name}</a>'
    parts.append(f'<div class="name">{name}</div>')
    if file is not None and file.note is not None:
        parts.append(f'<div class="note">{_text(file.note)}</div>')
    return f'<td class="picture">{"".join(parts)}</td>'


def _row(position, picture, scored, runs):
    cells = [_picture_cell(picture)]
    if scored:
        cells.append('<td><ol class="refs">' + "".join(f"<li>{_text(ref)}</li>" for ref in picture.references)
                     + "</ol></td>")
    for caption in picture.captions:
        cells.append(_caption_cell(caption))
        if scored:
            cells.extend(_score_cell(caption.scores.get(name)) for name in PICTURE_SCORES)
    if scored and runs > 1:
        cells.append(_score_cell(difference(picture)))
    return (f'<tr data-order="{position}" data-words="{_text(" ".join(picture.words()))}">' + "".join(cells)
            + "</tr>")


def _head(run_names, scored):
    """The gallery's header row: a sort button on each score column, whose index it carries."""
    cells, column = ["<th>picture</th>"], 1
    if scored:
        cells.append("<th>references</th>")
        column += 1
    for name in run_names:
        cells.append(f"<th>{_text(name)}</th>" if len(run_names) > 1 else "<th>generated caption</th>")
        column += 1
        if scored:
            for metric in PICTURE_SCORES:
                cells.append(f'<th><button type="button" data-column="{column}" title="sort by {metric}: lowest '
                             f'first, click again for highest first">{metric}</button></th>')
                column += 1
    if scored and len(run_names) > 1:
        label = "difference" if len(run_names) > 2 else "\u0394 CIDEr-D"
        tip = ("highest minus lowest run's CIDEr-D" if len(run_names) > 2 else
               f"CIDEr-D of {run_names[1]} minus that of {run_names[0]}")
        cells.append(f'<th><button type="button" data-column="{column}" title="{_text(tip)}">{label}</button></th>')
    return "<tr>" + "".join(cells) + "</tr>"


def _run_section(header):
    facts = "".join(f"<tr><td>{_text(label)}</td><td>{_text(value)}</td></tr>" for label, value in header.facts)
    plots = "".join(f'<img src="{_text(src)}" alt="{_text(alt)}" title="{_text(alt)}">' for src, alt in header.plots)
    return (f"<section><h2>{_text(header.name)}</h2><table class=\"facts\">{facts}</table>"
            + (f'<div class="plots">{plots}</div>' if plots else "") + "</section>")


def render_page(title, description, headers, pictures, run_names, scored, comparison=None):
    """The page's HTML text.

    ``title`` and ``description`` (one sentence on what the gallery shows) head it; ``headers`` are the runs'
    :class:`captionkit.report.header.RunHeader`; ``comparison`` an optional plot ``(src, what it shows)``;
    ``pictures`` the gallery's rows (:class:`captionkit.report.gallery.Picture`) in the order shown first;
    ``run_names`` one per caption of a row; ``scored``: the rows have references and scores.
    """
    runs = "".join(_run_section(header) for header in headers)
    if comparison is not None:
        runs += (f'<section><h2>The runs compared</h2><div class="plots"><img src="{_text(comparison[0])}" '
                 f'alt="{_text(comparison[1])}" title="{_text(comparison[1])}"></div></section>')
    rows = "\n".join(_row(position, picture, scored, len(run_names)) for position, picture in enumerate(pictures))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_text(title)}</h1>
{runs}
<section>
<h2>Pictures</h2>
<p>{_text(description)}</p>
<p class="controls"><label>Show only pictures whose captions or references have the words
<input id="filter" type="search" placeholder="e.g. circle" autocomplete="off"></label>
<span id="shown" aria-live="polite"></span></p>
<table id="gallery">
<thead>{_head(run_names, scored)}</thead>
<tbody>
{rows}
</tbody>
</table>
</section>
<script>{_SCRIPT}</script>
</body>
</html>
"""
