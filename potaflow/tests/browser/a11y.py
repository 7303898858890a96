"""axe-core (vendored from npm under testing/vendor/axe-core, MPL-2.0) run in the page under test.

Injected through the DevTools protocol (``page.evaluate``), not a ``<script>`` tag: the page keeps
its strict Content-Security-Policy and nothing is added to it.
"""

from pathlib import Path

AXE = Path(__file__).resolve().parents[3] / "testing" / "vendor" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def serious_violations(page, selector: str = "main") -> list[str]:
    """The serious and critical WCAG 2 A/AA violations axe finds in ``selector``, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    found = page.evaluate(
        """async (selector) => {
            const result = await axe.run(selector, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                 nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }""",
        selector,
    )
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes']}" for v in found if v["impact"] in SERIOUS]
