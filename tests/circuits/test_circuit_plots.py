"""Circuit drawings: the .dot file, the SVG (Graphviz or built-in), and the HTML view in a real headless browser."""

from __future__ import annotations

import shutil

import pytest

from saescope.circuits.graph import METRIC, Circuit, Edge, Node
from saescope.circuits.plot import INSTALL_DOT, layered_svg, to_dot, write_plots

A, B = "blocks.6.hook_resid_post", "blocks.12.hook_resid_post"


@pytest.fixture
def circuit() -> Circuit:
    nodes = [Node(A, 5, None, 0.8), Node(A, -1, None, -0.3), Node(B, 3870, None, 1.5)]
    edges = [Edge(nodes[0].key, nodes[2].key, 0.7), Edge(nodes[1].key, nodes[2].key, -0.2), Edge(nodes[2].key, METRIC, 1.5)]
    return Circuit([A, B], nodes, edges, {"method": "ig", "aggregation": "sum"}, data={"pairs": "test", "n_pairs": 3})


LABELS = {f"{B}/3870": {"label": "L12 #3870\nhave", "title": "blocks.12 feature 3870", "promoted": [" have", " are"],
                        "examples": ["The [friends] have"], "explanation": "plural subjects of a verb"}}


def test_dot_has_every_node_and_edge(circuit):
    dot = to_dot(circuit, LABELS)
    assert dot.startswith("digraph circuit {") and dot.rstrip().endswith("}")
    for node in circuit.nodes:
        assert f'"{node.key}"' in dot
    assert dot.count("->") == len(circuit.edges)
    assert "shape=box" in dot  # the error node


def test_without_graphviz_a_builtin_svg_and_a_note(circuit, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    files, note = write_plots(circuit, tmp_path, LABELS)
    assert note.startswith(INSTALL_DOT)
    assert {f.name for f in files} == {"circuit.dot", "circuit.svg", "circuit.html"}
    svg = (tmp_path / "circuit.svg").read_text()
    assert svg.count('class="node"') == len(circuit.nodes) + 1  # + the metric


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_with_graphviz_svg_and_png(circuit, tmp_path):
    files, note = write_plots(circuit, tmp_path, LABELS)
    assert note == ""
    assert (tmp_path / "circuit.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "circuit.svg").read_text()


def test_clicking_a_node_shows_its_feature_in_a_real_browser(circuit, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    write_plots(circuit, tmp_path, LABELS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((tmp_path / "circuit.html").as_uri())
        assert page.locator("#detail").inner_text().startswith("Click a node")
        page.locator(f'g.node[data-key="{B}/3870"]').click()
        assert page.locator("#detail-title").inner_text() == "blocks.12 feature 3870"
        assert "The [friends] have" in page.locator("#detail").inner_text()
        assert page.locator("#detail-explanation").inner_text() == "Explanation: plural subjects of a verb"
        page.locator(f'a.pick[data-key="{A}/err"]').click()
        assert "error term" in page.locator("#detail-title").inner_text()
        browser.close()


def test_layered_svg_scales_edges_by_effect(circuit):
    svg = layered_svg(circuit, {})
    widths = [float(part.split('"')[0]) for part in svg.split('stroke-width="')[1:]]
    assert max(widths) == pytest.approx(5.0) and min(widths) > 0.5


def test_an_explanation_cannot_break_out_of_the_page_script(circuit, tmp_path):
    """Explanations are any LLM's text: ``</script>`` in one must stay text (stored XSS), in the file and in Chromium."""
    evil = "</script><script>window.PWNED = 1</script><img src=x onerror='window.PWNED = 2'>"
    labels = {key: {**value, "explanation": evil, "label": evil} for key, value in LABELS.items()}
    write_plots(circuit, tmp_path, labels)
    page_text = (tmp_path / "circuit.html").read_text()
    assert "</script><script>window.PWNED" not in page_text and "<img src=x" not in page_text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((tmp_path / "circuit.html").as_uri())
        page.locator(f'g.node[data-key="{B}/3870"]').click()
        assert page.locator("#detail-explanation").inner_text() == f"Explanation: {evil}"  # shown as text
        assert page.evaluate("window.PWNED") is None
        browser.close()
