"""Snakemake's HTML report of the finished tiny run: every table and figure, embedded, with its caption."""

import base64
import html
import json
import re

import jinja2
import pytest

from helpers import ROOT, run_snakemake

pytestmark = pytest.mark.slow

# Every table and figure the tiny run writes, by its path under results/, and its caption file.
CAPTIONS = {
    "tables/finetune.md": "finetune",
    "tables/clustering.md": "clustering",
    "plots/tsne_tiny.png": "tsne",
    "plots/similarity_tiny.png": "similarity",
    "tables/pb.md": "pb",
    "plots/interpolation.png": "interpolation",
    "plots/extrapolation.png": "extrapolation",
    "plots/loss_distributions.png": "loss_distributions",
    "plots/leave_centroid.png": "leave_centroid",
    "tables/centroid.md": "centroid",
    "plots/centroid_gain.png": "centroid_gain",
    "tables/claims.md": "claims",
}


@pytest.fixture(scope="module")
def report_page(tiny_run, tmp_path_factory) -> str:
    workdir, config = tiny_run
    page = tmp_path_factory.mktemp("report") / "report.html"
    run_snakemake(workdir, config, "--report", str(page))
    return page.read_text()


def script_value(page: str, name: str):
    """The JSON value the report's <script id="name"> assigns to its variable."""
    match = re.search(rf'<script id="{name}">\s*var \w+ = ', page)
    assert match, f"no <script id={name!r}> in the report"
    return json.JSONDecoder().raw_decode(page, match.end())[0]


def plain_text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def caption_text(caption: str, experiment: str) -> str:
    """The text of workflow/report/{caption}.rst as the report shows it: Jinja rendered, no markup."""
    source = (ROOT / "workflow/report" / f"{caption}.rst").read_text()
    rendered = jinja2.Environment().from_string(source).render(snakemake={"wildcards": {"experiment": experiment}})
    return " ".join(rendered.replace("**", "").split())


def test_the_report_embeds_every_table_and_figure_with_its_caption(tiny_run, report_page):
    workdir, config = tiny_run
    written = {str(p.relative_to(workdir / "results")) for p in (workdir / "results").glob("tables/*.md")}
    written |= {str(p.relative_to(workdir / "results")) for p in (workdir / "results").glob("plots/*.png")}
    assert written == set(CAPTIONS)
    (experiment,) = config["geometry"]["experiments"]
    results = script_value(report_page, "results")
    assert set(results) == {f"results/{path}" for path in CAPTIONS}
    for path, caption in CAPTIONS.items():
        entry = results[f"results/{path}"]
        assert entry["name"] == path.split("/")[1]
        assert entry["mime_type"] == ("image/png" if path.endswith(".png") else "text/markdown")
        embedded = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
        assert embedded == (workdir / "results" / path).read_bytes(), path
        assert plain_text(entry["caption"]) == caption_text(caption, experiment), path
    assert "of experiment tiny," in plain_text(results["results/plots/similarity_tiny.png"]["caption"])
    categories = script_value(report_page, "categories")
    assert set(categories) == {"Finetuning", "Geometry", "Region", "Centroid", "Claims"}
    assert sorted(p for sub in categories.values() for paths in sub.values() for p in paths) == sorted(results)


def test_the_reports_front_page_names_the_runs_base_model_and_datasets(tiny_run, report_page):
    _, config = tiny_run
    front = plain_text(script_value(report_page, "workflow-desc"))
    assert f"base model {config['base_model']}, finetuned on {len(config['datasets'])} datasets." in front
    assert "{{" not in front and "Gueta et al., 2023" in front
