"""Model output shown in the chat: code as written, raw HTML and images inert.

Rendered with markdown-it in CommonMark mode, which lets raw HTML through as a browser-side
Markdown renderer does, so a tag that survived `safe_markdown` would show up here.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

from ui.render import safe_markdown

RENDER = MarkdownIt("commonmark").render
CODE = "if a < b && c:\n    print('<b>&amp;</b>')\n"


def test_fenced_code_is_left_as_written():
    text = f"Here:\n\n```python\n{CODE}```\n\nDone."
    shown = safe_markdown(text)
    assert f"```python\n{CODE}```" in shown
    html = RENDER(shown)
    assert "if a &lt; b &amp;&amp; c:" in html and "&amp;amp;" in html


def test_inline_and_indented_code_are_left_as_written():
    shown = safe_markdown("Use `x < y && z` or ``a`<b>`` then\n\n    <i>indented</i> & more\n")
    assert "`x < y && z`" in shown and "``a`<b>``" in shown
    assert "    <i>indented</i> & more" in shown


def test_raw_html_and_images_outside_code_are_inert():
    shown = safe_markdown('<img src="http://x.invalid/a.png" onerror="alert(1)">\n\n'
                          "<script>alert(1)</script> ![a](http://x.invalid/b.png) "
                          "&lt;b&gt; \\<i>x</i> `ok` <b>bold?</b>")
    html = RENDER(shown)
    for tag in ("<img", "<script", "<i>", "<b>"):
        assert tag not in html
    # A character reference the model wrote shows as written, not as the character.
    assert "&amp;lt;b&amp;gt;" in html


def test_unclosed_backticks_do_not_shield_html():
    html = RENDER(safe_markdown("a ` b <img src=x onerror=alert(1)> ``c`"))
    assert "<img" not in html


def test_an_erasure_empties_the_cache_of_rendered_text(tmp_path):
    import app
    from engine.local import LocalEngine
    from storage import Store
    from studio.turns import Studio
    from ui import render
    from ui.page import build_page

    settings = app.settings_from(["--db", str(tmp_path / "studio.db")], {})
    store = Store(settings.db_path)
    build_page(Studio(LocalEngine("tiny-random"), store), settings)  # wires the erasure
    render.safe_markdown("the words of someone who will ask to be forgotten")
    assert render.safe_markdown.cache_info().currsize > 0
    store.delete_user_data("someone")
    assert render.safe_markdown.cache_info().currsize == 0
