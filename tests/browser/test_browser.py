"""The browser checks can fail: a script error and a resource from the network are seen."""

from __future__ import annotations


def test_console_errors_and_network_are_seen(browser, tmp_path):
    page = tmp_path / 'bad.html'
    page.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                    '<img src="https://example.org/logo.png" alt="logo">'
                    '<script>undefined_function();</script></body></html>')
    view = browser.open(page, tmp_path / 'bad.png')
    assert any('undefined_function' in message for message in view.console_errors)
    assert any('example.org' in message for message in view.console_errors)  # cut off from the network
    assert 'https://example.org/logo.png' in view.resources
    assert view.chain_pictures == [] and view.screenshot.is_file()
