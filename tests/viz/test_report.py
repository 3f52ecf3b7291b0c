import pytest

from arrcoc_steer.eval import evaluate
from arrcoc_steer.viz.report import ConceptNeurons, ReportExtras, write_report
from tests.viz.browser import chromium_path, render_page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (small) sweep: the scripted expert under three conditions, with videos."""
    out = tmp_path_factory.mktemp("sweep")
    evaluate("expert", ["LiftRedBlock"], ["unsteered", {"kind": "prompt", "modifier": "quickly"},
             {"kind": "prompt", "modifier": "slowly"}], seeds=3, out_dir=out, backend="serial",
             frames="agentview", progress=False)  # fmt: skip
    return out


def test_report_holds_the_effects_plots_and_videos(run_dir, tmp_path):
    extras = ReportExtras(title="test run", concepts=[ConceptNeurons("fast", ["fast"], [(2, 924, ["fastest", "fast"])])])
    page = write_report(run_dir, tmp_path / "report.html", extras).read_text()
    for needle in ("<h2>Effects</h2>", "prompt_quickly", "Speed over time", "<video", "fastest, fast", "data:image/png",
                   "<h2>How episodes ended</h2>", "<th>success</th>"):
        assert needle in page, needle
    assert "src='episodes/" not in page  # self-contained: nothing refers to files next to it


@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_errors(run_dir, tmp_path):
    facts = render_page(write_report(run_dir, tmp_path / "report.html"))
    assert facts["errors"] == []
    assert facts["title"] == "arrcoc_steer run report"
    assert "Effects" in facts["headings"] and "Speed over time" in facts["headings"]
    assert facts["images"] >= 1 and facts["brokenImages"] == 0
    assert facts["videos"] >= 1 and facts["tables"] >= 1
